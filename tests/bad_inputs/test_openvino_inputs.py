"""`build --runtime openvino`: refused precisions, damaged exports, existing outputs, and a SIGKILL mid-build."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
from pathlib import Path

import pytest

from .conftest import assert_one_line_error, leftovers, run_cli, tree_digest
from .test_faults import _complete_folder, _signal_when, _temp_of

pytest.importorskip("openvino", reason="the openvino extra is not installed")


def _build(export, out, *rest):
    return run_cli("build", export, "--runtime", "openvino", "--out", out, *rest)


@pytest.fixture(scope="module")
def ov_engine(world, tmp_path_factory):
    """One real OpenVINO fp32 engine folder of the world's export (to protect, and as the complete reference)."""
    out = tmp_path_factory.mktemp("ov") / "tiny-openvino-fp32"
    result = _build(world.export, out)
    assert result.exit_code == 0, result.stderr
    return out


def _rewrite_recorded_sha256(export: Path, file: str) -> None:
    """Make manifest.json agree with a damaged graph, so only reading the graph can catch it."""
    path = export / "manifest.json"
    data = json.loads(path.read_text())
    digest = hashlib.sha256((export / file).read_bytes()).hexdigest()
    for part in data["parts"].values():
        if part["file"] == file:
            part["sha256"] = digest
    path.write_text(json.dumps(data, indent=2))


def test_openvino_fp16_is_refused_naming_the_options(world, tmp_path):
    out = tmp_path / "engine"
    assert_one_line_error(_build(world.export, out, "--precision", "fp16"), 2, "--runtime openvino", "--precision")
    assert not out.exists() and leftovers(out) == []


def test_openvino_on_a_tampered_export_names_the_graph(world, tmp_path):
    export = world.copy("export", tmp_path / "export")
    with open(export / "head.onnx", "ab") as fh:
        fh.write(b"\0")
    out = tmp_path / "engine"
    assert_one_line_error(_build(export, out), 2, str(export / "head.onnx"), "sha256")
    assert not out.exists() and leftovers(out) == []


@pytest.mark.parametrize("file", ["head.onnx", "backbone.onnx"])
def test_openvino_on_a_truncated_graph_with_matching_record_names_it(world, tmp_path, file):
    export = world.copy("export", tmp_path / "export")
    graph = export / file
    graph.write_bytes(graph.read_bytes()[:5000])
    _rewrite_recorded_sha256(export, file)
    out = tmp_path / "engine"
    assert_one_line_error(_build(export, out), 2, str(graph), "ONNX")
    assert not out.exists() and leftovers(out) == []


def test_openvino_existing_engine_is_untouched_without_force(world, ov_engine):
    before = tree_digest(ov_engine)
    assert_one_line_error(_build(world.export, ov_engine), 2, str(ov_engine), "--force")
    assert tree_digest(ov_engine) == before


def test_openvino_force_from_a_damaged_export_keeps_the_old_engine(world, ov_engine, tmp_path):
    engine = shutil.copytree(ov_engine, tmp_path / "engine")
    before = tree_digest(engine)
    export = world.copy("export", tmp_path / "export")
    (export / "backbone.onnx").write_bytes(b"")
    assert_one_line_error(_build(export, engine, "--force"), 2, str(export / "backbone.onnx"))
    assert tree_digest(engine) == before and leftovers(engine) == []


def test_openvino_build_killed_leaves_no_partial_engine(world, tmp_path):
    final = tmp_path / "engine"
    rc, err = _signal_when(["build", world.export, "--runtime", "openvino", "--out", final], signal.SIGKILL,
                           lambda: bool(_temp_of(final)))
    assert rc in (0, -signal.SIGKILL), err[-2000:]
    assert not final.exists() or _complete_folder(final, "engine.json"), "a partial engine folder at the final path"
    result = _build(world.export, final, *(["--force"] if final.exists() else []))  # the rerun cleans up
    assert result.exit_code == 0, result.stderr
    assert _complete_folder(final, "engine.json") and leftovers(final) == []
