"""The CLI's shared options: every --help has examples and no `<bool>`, --size is HxW everywhere, old names are gone."""

from __future__ import annotations

import re

import pytest
from PIL import Image
from typer.testing import CliRunner

from acar_deploy.cli.main import app
from acar_deploy.data.frame_size import FrameSize, parse_frame_size
from acar_deploy.errors import InputError

runner = CliRunner()
COMMANDS = [c.name for c in app.registered_commands]


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_help_renders_with_examples_and_no_bool_metavar(command):
    args = ["--help"] if command is None else [command, "--help"]
    result = runner.invoke(app, args, env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    text = _plain(result.output)
    assert "Examples:" in text
    assert "acar-deploy " in text.split("Examples:", 1)[1]  # a real command line follows the heading
    assert "<bool>" not in text


def test_the_pipeline_commands_are_all_registered():
    assert set(COMMANDS) >= {"demo", "info", "synth", "train", "detect", "evaluate", "export", "validate", "build",
                             "bench", "parity", "triton", "triton-client"}


@pytest.mark.parametrize(("text", "expected"), [("256x341", (256, 341)), ("64X96", (64, 96)), (" 32 x 48 ", (32, 48))])
def test_parse_frame_size_is_height_then_width(text, expected):
    size = parse_frame_size(text)
    assert size == FrameSize(*expected) and (size.height, size.width) == expected
    assert str(size) == f"{expected[0]}x{expected[1]}"


@pytest.mark.parametrize("text", ["big", "64", "64x", "x64", "64x96x3", "0x64", "-1x64"])
def test_parse_frame_size_rejects_malformed_text(text):
    with pytest.raises(InputError, match="HEIGHTxWIDTH"):
        parse_frame_size(text)


def test_synth_size_is_height_by_width_in_the_written_frames(tmp_path):
    out = tmp_path / "s"
    result = runner.invoke(app, ["synth", str(out), "--videos", "2", "--video-seconds", "3", "--size", "64x96",
                                 "--frame-folders", "--format", "json"])
    assert result.exit_code == 0, result.output
    frames = sorted(out.rglob("*.jpg"))
    assert frames
    with Image.open(frames[0]) as image:
        assert image.size == (96, 64)  # PIL gives (width, height): 64 high, 96 wide


def test_synth_default_size_is_96_high_128_wide():
    from acar_deploy.data.synth import SynthSettings

    defaults = SynthSettings(out_dir="unused")
    assert (defaults.height, defaults.width) == (96, 128)
    assert "96x128" in _plain(runner.invoke(app, ["synth", "--help"], env={"COLUMNS": "200"}).output)


def test_export_and_bench_parse_size_as_synth_does(monkeypatch, tmp_path):
    """The same --size text reaches export's and bench's settings as (height, width)."""
    seen = {}

    def fake_export(out, checkpoint, config, settings, force=False, progress=False):
        seen["export"] = settings.input_size
        raise InputError("stop here")

    def fake_bench(settings, progress=True):
        seen["bench"] = settings.size
        raise InputError("stop here")

    monkeypatch.setattr("acar_deploy.export.exporter.export_model", fake_export)
    monkeypatch.setattr("acar_deploy.bench.latency.run_benchmark", fake_bench)
    runner.invoke(app, ["export", "--config", "acar_tiny", "--out", str(tmp_path / "e"), "--size", "64x96"])
    runner.invoke(app, ["bench", "engine", "--size", "64x96", "--out", str(tmp_path / "b")])
    assert tuple(seen["export"]) == (64, 96)
    assert tuple(seen["bench"]) == (64, 96)


@pytest.mark.parametrize(
    "args",
    [
        ["synth", "OUT", "--seconds", "3"],
        ["synth", "OUT", "--no-force"],
        ["synth", "OUT", "--frames"],
        ["bench", "ENGINE", "--clips", "2"],
        ["bench", "ENGINE", "--seconds", "5"],
        ["parity", "--engine", "ENGINE", "--data", "DATA"],
        ["parity", "ENGINE", "--data", "DATA", "--clips", "3"],
        ["build", "EXPORT", "--clips", "1:1:4"],
        ["build", "EXPORT", "--rois", "1:8:32"],
        ["build", "EXPORT", "--fp32-stem"],
        ["export", "--out", "OUT", "--no-force"],
        ["info", "CKPT", "-c", "acar_tiny"],
    ],
)
def test_old_option_names_are_rejected(args):
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "No such option" in _plain(result.output)


@pytest.mark.parametrize(
    "args",
    [
        ["parity", "ENGINE", "--data", "DATA", "--max-keyframes", "0"],
        ["parity", "ENGINE", "--data", "DATA", "--max-map-drop", "-0.1"],
        ["parity", "ENGINE", "--data", "DATA", "--atol", "-1"],
        ["train", "--config", "acar_tiny", "--data", "D", "--out", "O", "--epochs", "0"],
        ["train", "--config", "acar_tiny", "--data", "D", "--out", "O", "--batch-size", "0"],
        ["bench", "ENGINE", "--batch", "0"],
        ["bench", "ENGINE", "--iters", "0"],
        ["bench", "ENGINE", "--threads", "0"],
        ["synth", "OUT", "--videos", "1"],
        ["export", "--out", "OUT", "--opset", "17"],
        ["export", "--out", "OUT", "--size", "64by96"],
        ["synth", "OUT", "--size", "96"],
    ],
)
def test_out_of_range_values_exit_2_before_any_work(args, tmp_path):
    result = runner.invoke(app, [str(tmp_path / a) if a in ("OUT", "O") else a for a in args],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert "Invalid value" in _plain(result.output)
    assert not (tmp_path / "OUT").exists() and not (tmp_path / "O").exists()
