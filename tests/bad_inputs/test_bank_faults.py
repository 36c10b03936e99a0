"""SIGKILL / Ctrl-C sent to a real `bank extract`, early and after its first video is committed: the final
path holds no bank or the complete previous one; `--resume` then finishes an extraction equal (per-video
sha256) to an uninterrupted one; Ctrl-C exits 130 with one line."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from acar_deploy.bank.extract import staging_dir

from .conftest import assert_one_line_error, bank_digest, leftovers, run_cli, tree_digest
from .test_faults import _signal_when


def _staged(final: Path) -> bool:
    return (staging_dir(final) / "bank.json").exists()


def _committed(final: Path) -> bool:
    return any(staging_dir(final).glob("videos/*/video.json"))


@pytest.fixture(scope="module")
def previous_bank(world, tmp_path_factory):
    """A complete fp32 bank (differs from the fp16 reference) to be replaced with --force."""
    out = tmp_path_factory.mktemp("previous") / "bank"
    result = run_cli("bank", "extract", "--checkpoint", world.checkpoint, "--data", world.data, "--out", out,
                     "--precision", "fp32")
    assert result.exit_code == 0, result.stderr
    return out


@pytest.mark.parametrize(("sig", "moment", "over_previous"), [
    (signal.SIGKILL, "early", False),
    (signal.SIGKILL, "first-video-committed", True),
    (signal.SIGINT, "early", True),
    (signal.SIGINT, "first-video-committed", False),
], ids=["kill-early", "kill-after-first-video-force", "ctrl-c-early-force", "ctrl-c-after-first-video"])
def test_bank_extract_interrupted_then_resumed_equals_an_uninterrupted_one(world, bank_world, previous_bank, tmp_path,
                                                                           sig, moment, over_previous):
    import shutil

    final = tmp_path / "bank"
    if over_previous:
        shutil.copytree(previous_bank, final)
    before = tree_digest(final)
    force = ["--force"] if over_previous else []
    ready = (lambda: _committed(final)) if moment == "first-video-committed" else (lambda: _staged(final))
    args = ["bank", "extract", "--checkpoint", world.checkpoint, "--data", world.data, "--out", final, *force]
    rc, err = _signal_when(args, sig, ready)
    if sig == signal.SIGINT:
        assert rc in (0, 130), err[-2000:]
        if rc == 130:
            assert [line for line in err.splitlines() if line.strip()] == ["interrupted"], err[-2000:]
    else:
        assert rc in (0, -signal.SIGKILL), err[-2000:]
    finished = rc == 0
    if not finished:
        assert tree_digest(final) == before, "the final path changed although the extraction did not finish"
        assert staging_dir(final).is_dir()  # kept for --resume
        if not over_previous:  # a plain rerun is refused and names both ways on (--force would start over)
            assert_one_line_error(run_cli(*args), 2, str(staging_dir(final)), "--resume", "--force")
            assert tree_digest(final) == before
        result = run_cli(*args, "--resume", "--format", "json")
        assert result.exit_code == 0, result.stderr
        summary = json.loads(result.stdout[result.stdout.index("{"):])
        if moment == "first-video-committed":
            assert summary["resumed_videos"] >= 1  # what the killed run committed was kept, not recomputed
        assert summary["resumed_videos"] + summary["extracted_videos"] == summary["videos"] == 3
    assert bank_digest(final) == bank_digest(bank_world.bank)
    assert not staging_dir(final).exists() and leftovers(final) == []
