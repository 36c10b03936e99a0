"""Output paths: a file in the way, an existing output without --force, stale temporaries of killed runs."""

from __future__ import annotations

import os
import subprocess

import pytest

from acar_deploy.artifacts import atomic_dir, atomic_file, remove_stale_temporaries
from acar_deploy.errors import InputError

from .conftest import SIZE_HW, assert_one_line_error, leftovers, parity_args, run_cli, tree_digest

SIZE = f"{SIZE_HW[0]}x{SIZE_HW[1]}"


def _command(name: str, world, out):
    """Arguments of a valid run of `name` writing to `out` (everything but the output is fine)."""
    return {
        "synth": ["synth", out, "--videos", "2"],
        "train": ["train", "--config", world.config, "--data", world.data, "--out", out, "--epochs", "1", "--no-val"],
        "detect": ["detect", "--checkpoint", world.checkpoint, "--video", world.video, "--boxes", world.boxes,
                   "--out", out],
        "export": ["export", "--checkpoint", world.checkpoint, "--out", out, "--size", SIZE, "--no-validate"],
        "build": ["build", world.export, "--out", out],
        "bench": ["bench", world.engine, "--checkpoint", world.checkpoint, "--size", SIZE, "--iters", "1",
                  "--warmup", "0", "--actors", "1", "--no-flops", "--out", out],
        "parity": parity_args(world.engine, "--data", world.data, "--checkpoint", world.checkpoint, "--out", out),
        "triton": ["triton", world.export, "--out", out, "--kind", "cpu"],
        "demo": ["demo", "--quick", "--out", out],
    }[name]


COMMANDS = ("synth", "train", "detect", "export", "build", "bench", "parity", "triton", "demo")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_file_in_the_way_of_out_is_one_line_naming_it(command, world, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("keep me\n")
    out = blocker / "sub" / ("pred.csv" if command == "detect" else "out")
    result = run_cli(*_command(command, world, out))
    assert_one_line_error(result, 2, str(blocker), "is a file")
    assert blocker.read_text() == "keep me\n"


@pytest.mark.parametrize("command", ("synth", "train", "detect", "export", "build", "triton", "bench"))
def test_an_existing_output_is_untouched_without_force(command, world, tmp_path):
    out = tmp_path / ("pred.csv" if command == "detect" else "out")
    if command == "detect":
        out.write_text("synth003,1,0.1,0.1,0.2,0.2,1,0.5\n")
    else:
        out.mkdir()
        (out / "ckpt_1.pt" if command == "train" else out / "keep.txt").write_bytes(b"old")
    before = tree_digest(out)
    result = run_cli(*_command(command, world, out))
    assert_one_line_error(result, 2, str(out), "--force")
    assert tree_digest(out) == before


def test_detect_out_existing_folder_with_force_is_one_line(world, tmp_path):
    out = tmp_path / "pred_dir"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    result = run_cli(*_command("detect", world, out), "--force")
    assert_one_line_error(result, 2, str(out), "is a folder")
    assert tree_digest(out) == {"keep.txt": tree_digest(out / "keep.txt")["."]}


def test_detect_render_mp4_over_a_folder_is_refused_before_running(world, tmp_path):
    render = tmp_path / "r.mp4"
    render.mkdir()
    result = run_cli(*_command("detect", world, tmp_path / "p.csv"), "--render", render)
    assert_one_line_error(result, 2, str(render))
    assert not (tmp_path / "p.csv").exists()


# --- stale temporaries ----------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    out = tmp_path / "art"
    dead = _dead_pid()
    (tmp_path / f".art.tmp-{dead}-abc").mkdir()
    (tmp_path / f".art.tmp-{dead}-abc" / "half.onnx").write_bytes(b"x")
    (tmp_path / f".art.tmp-{dead}-f").write_bytes(b"x")  # a half-written file from atomic_file
    live = tmp_path / f".art.tmp-{os.getppid()}-xyz"  # our parent is alive: a concurrent writer
    live.mkdir()
    other = tmp_path / f".other.tmp-{dead}-abc"  # another output's leftovers: not ours to judge
    other.mkdir()
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["art", live.name, other.name])


def test_an_old_output_left_between_the_two_renames_is_restored(tmp_path):
    out = tmp_path / "art"
    old = tmp_path / f".art.old-{_dead_pid()}"
    old.mkdir()
    (old / "model.onnx").write_bytes(b"old")
    remove_stale_temporaries(out)
    assert (out / "model.onnx").read_bytes() == b"old"
    assert leftovers(out) == []


def test_atomic_file_refuses_a_folder_and_a_file_parent(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        with atomic_file(tmp_path / "d", force=True):
            pass
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        with atomic_file(tmp_path / "f" / "x.json"):
            pass


def test_temporary_names_carry_the_writer_pid(tmp_path):
    out = tmp_path / "art"
    with atomic_dir(out) as tmp:
        assert tmp.name.startswith(f".art.tmp-{os.getpid()}-")


def test_a_refused_rerun_still_cleans_a_killed_runs_leftovers(world, tmp_path):
    engine = world.copy("engine", tmp_path / "eng")
    stale = tmp_path / f".eng.tmp-{_dead_pid()}-zz"
    stale.mkdir()
    (stale / "backbone.onnx").write_bytes(b"half")
    before = tree_digest(engine)
    result = run_cli("build", world.export, "--out", engine)  # refused: exists, no --force
    assert_one_line_error(result, 2, str(engine))
    assert tree_digest(engine) == before
    assert leftovers(engine) == []
