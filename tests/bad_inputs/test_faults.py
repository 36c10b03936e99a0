"""--force replaces only after success; SIGKILL / SIGINT mid-run leave the old or the complete new
artifact at the final path; the next run on that output removes what a killed run left."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from acar_deploy.artifacts import sha256_file

from .conftest import CLI, SIZE_HW, assert_one_line_error, leftovers, run_cli, subprocess_env, tree_digest

SIZE = f"{SIZE_HW[0]}x{SIZE_HW[1]}"


@pytest.fixture(scope="module")
def old_run(world, tmp_path_factory):
    """A finished 1-epoch run folder (ckpt_1.pt, history.json) to protect."""
    run = tmp_path_factory.mktemp("runs") / "run"
    result = run_cli("train", "--config", world.config, "--data", world.data, "--out", run, "--epochs", "1",
                     "--no-val", "--workers", "0")
    assert result.exit_code == 0, result.stderr
    return run


def _run_copy(old_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(old_run, run)
    return run


# --- train --force: replace after success --------------------------------------------------------------


@pytest.mark.parametrize("bad", ["text", "missing", "truncated"])
def test_train_force_with_a_bad_init_keeps_the_old_checkpoints(world, old_run, tmp_path, bad):
    run = _run_copy(old_run, tmp_path)
    before = tree_digest(run)
    init = tmp_path / "init.pt"
    if bad == "text":
        init.write_text("not weights\n")
    elif bad == "truncated":
        data = (run / "ckpt_1.pt").read_bytes()
        init.write_bytes(data[: len(data) // 2])
    result = run_cli("train", "--config", world.config, "--data", world.data, "--out", run, "--force",
                     "--init", init, "--epochs", "1", "--no-val")
    assert_one_line_error(result, 2, str(init))
    assert tree_digest(run) == before


def test_train_force_with_bad_data_keeps_the_old_checkpoints(world, old_run, tmp_path):
    run = _run_copy(old_run, tmp_path)
    before = tree_digest(run)
    result = run_cli("train", "--config", world.config, "--data", tmp_path / "nowhere", "--out", run, "--force")
    assert_one_line_error(result, 2, str(tmp_path / "nowhere"))
    assert tree_digest(run) == before


def test_train_force_replaces_the_whole_run_once_it_finished(world, old_run, tmp_path):
    run = _run_copy(old_run, tmp_path)
    (run / "ckpt_7.pt").write_bytes((run / "ckpt_1.pt").read_bytes())  # from a longer old run
    old_ckpt = sha256_file(run / "ckpt_1.pt")
    result = run_cli("train", "--config", world.config, "--data", world.data, "--out", run, "--force",
                     "--epochs", "1", "--no-val", "--seed", "5", "--workers", "0", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in run.iterdir()) == ["ckpt_1.pt", "history.json"]
    assert sha256_file(run / "ckpt_1.pt") != old_ckpt
    assert json.loads(result.stdout[result.stdout.index("{\n"):])["final_checkpoint"] == str(run / "ckpt_1.pt")
    assert leftovers(run) == []


# --- Ctrl-C inside a library that re-raises it as its own error --------------------------------------


def test_ctrl_c_inside_the_onnx_exporter_is_exit_130(world, tmp_path, monkeypatch):
    import torch

    def interrupted_export(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:  # what torch's exporter does with it, depending on timing
            raise RuntimeError("dynamo tracing failed") from exc

    monkeypatch.setattr(torch.onnx, "export", interrupted_export)
    out = tmp_path / "export"
    result = run_cli("export", "--checkpoint", world.checkpoint, "--out", out, "--size", SIZE, "--no-validate")
    assert result.exit_code == 130, result.stderr
    assert "interrupted" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and leftovers(out) == []


# --- signals at several moments of a real run ---------------------------------------------------------


def _temp_of(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.tmp-*"))


def _signal_when(args, sig, ready, delay: float = 0.0, cwd: Path | None = None, limit: float = 600.0):
    """Run the CLI, send `sig` once `ready()` holds (+ delay); (returncode, stderr). Not a timing test:
    whichever moment the signal lands, the final-path assertions must hold."""
    # SIGINT back to default in the child: a suite started in the background has it ignored, and the
    # CLI would inherit that (the Ctrl-C cases would then test nothing)
    proc = subprocess.Popen([*CLI, *map(str, args)], env=subprocess_env(), cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + limit
    try:
        while proc.poll() is None and not ready():
            if time.monotonic() > deadline:
                pytest.fail(f"{args[0]} never reached the moment to signal")
            time.sleep(0.01)
        if delay and proc.poll() is None:
            time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=limit)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def _complete_folder(path: Path, record: str) -> bool:
    """Every graph the record lists is present with the recorded sha256."""
    data = json.loads((path / record).read_text())
    return all(sha256_file(path / p["file"]) == p["sha256"] for p in data["parts"].values())


def _check_outcome(sig, rc, err, final, before, record):
    if sig == signal.SIGINT:
        # 130 from our handler; once (a full-suite run, not reproduced in 3 reruns) the interpreter ended by SIGINT
        # (-2) right after our handler had printed "interrupted" and cleaned up: both are a Ctrl-C exit
        assert rc in (0, 130, -signal.SIGINT), err[-2000:]
        if rc != 0:
            assert "interrupted" in err and "Traceback" not in err, err[-2000:]
        assert leftovers(final) == []  # an interrupted run cleans up after itself
    else:
        assert rc in (0, -signal.SIGKILL), err[-2000:]
    after = tree_digest(final)
    assert after == before or _complete_folder(final, record), "final path holds a partial artifact"


@pytest.mark.parametrize(("sig", "delay"), [(signal.SIGKILL, 0.0), (signal.SIGKILL, 2.0), (signal.SIGINT, 1.0)],
                         ids=["kill-at-start", "kill-mid-export", "ctrl-c-mid-export"])
def test_export_killed_leaves_old_or_complete_new(world, tmp_path, sig, delay):
    final = world.copy("export", tmp_path / "tiny")
    before = tree_digest(final)
    rc, err = _signal_when(["export", "--checkpoint", world.checkpoint, "--out", final, "--size", SIZE,
                            "--no-validate", "--seed", "1", "--force"], sig, lambda: bool(_temp_of(final)), delay)
    _check_outcome(sig, rc, err, final, before, "manifest.json")
    # the next run on that output (here one refused for lack of --force) removes the killed run's temp folder
    assert_one_line_error(run_cli("export", "--config", "acar_tiny", "--out", final), 2, str(final))
    assert leftovers(final) == []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill", "ctrl-c"])
def test_build_killed_leaves_old_or_complete_new(world, tmp_path, sig):
    final = world.copy("engine", tmp_path / "engine")
    (final / "engine.json").write_text((final / "engine.json").read_text())  # same content, own copy
    before = tree_digest(final)
    rc, err = _signal_when(["build", world.export, "--out", final, "--force"], sig, lambda: bool(_temp_of(final)))
    _check_outcome(sig, rc, err, final, before, "engine.json")
    result = run_cli("build", world.export, "--out", final, "--force")  # the rerun completes and cleans up
    assert result.exit_code == 0, result.stderr
    assert _complete_folder(final, "engine.json") and leftovers(final) == []


def _staged_checkpoint(final: Path) -> bool:
    return any((tmp / "ckpt_1.pt").exists() for tmp in _temp_of(final))


@pytest.mark.parametrize(("sig", "moment"), [(signal.SIGKILL, "first-epoch-written"), (signal.SIGINT, "staging")],
                         ids=["kill-after-epoch-1", "ctrl-c-while-training"])
def test_train_force_killed_keeps_the_old_run(world, old_run, tmp_path, sig, moment):
    final = _run_copy(old_run, tmp_path)
    before = tree_digest(final)
    ready = (lambda: _staged_checkpoint(final)) if moment == "first-epoch-written" else (lambda: bool(_temp_of(final)))
    rc, err = _signal_when(["train", "--config", world.config, "--data", world.data, "--out", final, "--force",
                            "--epochs", "3", "--no-val", "--workers", "0", "--seed", "2"], sig, ready)
    if sig == signal.SIGINT:
        assert rc in (0, 130), err[-2000:]
        assert leftovers(final) == []
    else:
        assert rc in (0, -signal.SIGKILL), err[-2000:]
    after = tree_digest(final)
    finished = sorted(after) == ["ckpt_1.pt", "ckpt_2.pt", "ckpt_3.pt", "history.json"]
    assert after == before or finished, sorted(after)
    result = run_cli("train", "--config", world.config, "--data", world.data, "--out", final)  # refused rerun
    assert_one_line_error(result, 2, str(final))
    assert leftovers(final) == []


def test_fresh_train_killed_keeps_complete_checkpoints_and_resumes(world, tmp_path):
    from acar_deploy.model.checkpoint import read_checkpoint

    run = tmp_path / "fresh"
    rc, err = _signal_when(["train", "--config", world.config, "--data", world.data, "--out", run, "--epochs", "3",
                            "--no-val", "--workers", "0"], signal.SIGKILL, lambda: (run / "ckpt_1.pt").exists())
    assert rc in (0, -signal.SIGKILL), err[-2000:]
    written = sorted(run.glob("ckpt_*.pt"))
    assert written and all(int(read_checkpoint(p)["epoch"]) >= 1 for p in written)  # each one complete
    result = run_cli("train", "--config", world.config, "--data", world.data, "--out", run, "--epochs", "3",
                     "--no-val", "--workers", "0", "--resume")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in run.iterdir()) == ["ckpt_1.pt", "ckpt_2.pt", "ckpt_3.pt", "history.json"]


def test_a_real_process_prints_one_line_and_exits_2(world, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = subprocess.run([*CLI, "build", str(world.export), "--out", str(blocker / "engine")], env=subprocess_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: ")
    assert str(blocker) in proc.stderr and blocker.read_text() == "x"
