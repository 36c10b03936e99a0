"""`acar-deploy info`: facts read from the file, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from acar_deploy.cli.main import app
from acar_deploy.model import build_model, save_checkpoint

BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("info") / "acar_tiny.pt"
    return save_checkpoint(build_model("acar_tiny"), path)


def _parameter_counts_from_file(path: Path) -> dict[str, int]:
    """Count parameters straight from the saved tensors (everything except BN buffers)."""
    state = torch.load(path, weights_only=True)["state_dict"]
    counts = {"backbone": 0, "head": 0}
    for key, value in state.items():
        if not key.endswith(BUFFER_SUFFIXES):
            counts[key.split(".", 1)[0]] += value.numel()
    counts["total"] = counts["backbone"] + counts["head"]
    return counts


def test_info_json(tiny_file: Path):
    result = CliRunner().invoke(app, ["info", str(tiny_file), "--format", "json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["format"] == "acar-deploy" and info["config"] == "acar_tiny"
    assert info["parameters"] == _parameter_counts_from_file(tiny_file)
    assert info["num_classes"] == 60
    assert info["input"]["clips"] == ["B", 3, 32, "H", "W"]
    assert info["input"]["normalization"] == {"norm_value": 255.0, "mean": [0.45] * 3, "std": [0.225] * 3}
    assert info["architecture"]["head"] == "acar" and info["architecture"]["hr2o_depth"] == 2


def test_info_text_with_official_layout_and_config(tmp_path: Path):
    model = build_model("linear_tiny")
    path = tmp_path / "zoo.pth.tar"
    torch.save({f"module.{k.split('.', 1)[0]}.module.{k.split('.', 1)[1]}": v for k, v in model.state_dict().items()},
               path, _use_new_zipfile_serialization=False)
    result = CliRunner().invoke(app, ["info", str(path), "--config", "linear_tiny"])
    assert result.exit_code == 0, result.output
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert lines["format"] == "official-zoo"
    backbone = sum(p.numel() for p in model.backbone.parameters())
    assert lines["parameters"] == f"backbone {backbone:,}  head {320 * 60:,}  total {backbone + 320 * 60:,}"


def test_truncated_file_exits_2_with_one_line(tiny_file: Path, tmp_path: Path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(tiny_file.read_bytes()[:5000])
    result = CliRunner().invoke(app, ["info", str(broken)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {broken}: not a readable PyTorch checkpoint")


def test_wrong_config_and_bad_yaml_exit_2(tiny_file: Path, tmp_path: Path):
    result = CliRunner().invoke(app, ["info", str(tiny_file), "--config", "linear_tiny"])
    assert result.exit_code == 2
    assert "does not fit config 'linear_tiny'" in result.stderr and "missing" in result.stderr
    bad = tmp_path / "cfg.yaml"
    bad.write_text("model:\n  head: {type: acar\n")
    result = CliRunner().invoke(app, ["info", str(tiny_file), "--config", str(bad)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {bad}:") and "invalid YAML" in result.stderr
