"""Numeric option ranges (exit 2, range in the message, nothing written) and detect's inputs."""

from __future__ import annotations

import pytest

from acar_deploy.errors import InputError
from acar_deploy.train.loop import TrainSettings
from acar_deploy.verify.parity import ParitySettings

from .conftest import assert_one_line_error, parity_args, run_cli


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("--epochs", "-1", "--epochs must be >= 1"), ("--epochs", "0", "--epochs must be >= 1"),
     ("--batch-size", "0", "--batch-size must be >= 1"), ("--workers", "-2", "--workers must be >= 0"),
     ("--threads", "0", "--threads must be >= 1")],
)
def test_train_out_of_range_is_exit_2_and_creates_no_folder(world, tmp_path, option, value, message):
    out = tmp_path / "run"
    result = run_cli("train", "--config", world.config, "--data", world.data, "--out", out, option, value)
    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr
    # the library's message, or typer's own range message once the CLI states it (h12cli)
    option_name, _, bound = message.partition(" must be >= ")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr or (
        f"'{option_name}'" in result.stderr and f"greater than or equal to {bound}" in result.stderr)
    assert not out.exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [("--max-map-drop", "-1"), ("max-keyframes", "-1"), ("max-keyframes", "0"), ("--atol", "-0.5")],
)
def test_parity_out_of_range_is_exit_2_before_any_work(world, tmp_path, option, value):
    option = "--max-keyframes" if option == "max-keyframes" else option
    out = tmp_path / "parity"
    result = run_cli(*parity_args(world.engine, "--data", world.data, "--checkpoint", world.checkpoint,
                                  "--out", out, option, value))
    assert result.exit_code == 2, (result.stderr, result.stdout[-500:])
    assert "Traceback" not in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"max_keyframes": -1}, "--max-keyframes must be >= 1"), ({"max_map_drop": -1.0}, "--max-map-drop must be >= 0"),
     ({"rtol": -1.0}, "--rtol must be >= 0"), ({"min_score": 1.5}, "--min-score must be <= 1")],
)
def test_parity_settings_refuse_out_of_range_values_in_the_python_api(kwargs, message):
    with pytest.raises(InputError, match=message):
        ParitySettings(engine="e", data="d", **kwargs)


@pytest.mark.parametrize(("kwargs", "message"), [({"epochs": -1}, "--epochs"), ({"batch_size": 0}, "--batch-size")])
def test_train_settings_refuse_out_of_range_values_in_the_python_api(tmp_path, kwargs, message):
    with pytest.raises(InputError, match=f"{message} must be >= 1"):
        TrainSettings(config="acar_tiny", data=tmp_path, out=tmp_path / "run", **kwargs)


@pytest.mark.parametrize(("command", "option"), [("train", "--epochs"), ("train", "--batch-size")])
def test_help_states_the_range(command, option):
    result = run_cli(command, "--help")
    line = next(line for line in result.stdout.splitlines() if option in line)
    assert "x>=1" in line or ">=1" in line.replace(" ", "")


def test_flags_show_no_bool_metavar():
    result = run_cli("build", "--help")
    assert "<bool>" not in result.stdout


# --- detect -------------------------------------------------------------------------------------------


def test_detect_box_timestamp_outside_the_video_names_csv_line_and_video(world, tmp_path):
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("synth003,0001,0.1,0.1,0.5,0.9,0.95\nsynth003,0030,0.1,0.1,0.5,0.9,0.95\n")
    out = tmp_path / "pred.csv"
    result = run_cli("detect", "--checkpoint", world.checkpoint, "--video", world.video, "--boxes", boxes,
                     "--out", out)
    assert_one_line_error(result, 2, f"{boxes}:2", str(world.video))
    assert not out.exists()


def test_detect_failed_render_leaves_no_csv(world, tmp_path):
    out = tmp_path / "pred.csv"
    render = tmp_path / "render.mp4"
    boxes = tmp_path / "inputs" / "boxes.csv"
    boxes.parent.mkdir()
    boxes.write_text("synth003,0001,0.1,0.1,0.5,0.9,0.5\n")  # below the threshold
    # no proposal reaches the threshold: nothing to render, the MP4 fails -> the CSV must not stay
    result = run_cli("detect", "--checkpoint", world.checkpoint, "--video", world.video, "--boxes", boxes,
                     "--out", out, "--render", render, "--score-threshold", "0.9")
    assert_one_line_error(result, 2, str(render))
    assert not out.exists() and not render.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]


def test_detect_boxes_with_a_bom_are_read(world, tmp_path):
    boxes = tmp_path / "boxes.csv"
    boxes.write_bytes(b"\xef\xbb\xbf" + world.boxes.read_bytes())
    out = tmp_path / "pred.csv"
    result = run_cli("detect", "--checkpoint", world.checkpoint, "--video", world.video, "--boxes", boxes,
                     "--out", out)
    assert result.exit_code == 0, result.stderr
    first = out.read_text().splitlines()[0]
    assert first.startswith("synth003,")
