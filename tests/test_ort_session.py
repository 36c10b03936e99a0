"""ONNX Runtime session settings that the benchmark relies on."""

from __future__ import annotations

from acar_deploy.bench.latency import contention_note
from acar_deploy.engines import RunnerOptions
from acar_deploy.engines.runners.ort import session_options


def test_spinning_is_on_by_default_and_off_when_asked():
    import pytest

    default = session_options(RunnerOptions(threads=2))
    with pytest.raises(RuntimeError, match="allow_spinning"):  # not set: ORT's default (spinning) applies
        default.get_session_config_entry("session.intra_op.allow_spinning")
    quiet = session_options(RunnerOptions(threads=2, allow_spinning=False))
    assert quiet.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert quiet.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert quiet.intra_op_num_threads == 2


def test_contention_note_names_load_and_threads():
    note = contention_note(3.5, 2)
    assert "load average 3.5" in note and "2 threads" in note and "--threads 1" in note
