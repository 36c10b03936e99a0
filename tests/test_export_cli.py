"""`acar-deploy export` / `acar-deploy validate` end to end: tables, exit codes, broken graphs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from typer.testing import CliRunner

from acar_deploy.artifacts import sha256_file
from acar_deploy.cli.main import app
from acar_deploy.model import load_model, save_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A fused, fixed-size export of a seeded acar_tiny made through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    model = load_model(None, "acar_tiny", seed=5)
    with torch.no_grad():
        model.head.fc2.weight.mul_(4.0)
    checkpoint = save_checkpoint(model, root / "tiny.pt")
    out = root / "export" / "tiny"
    result = runner.invoke(
        app,
        ["export", "--checkpoint", str(checkpoint), "--out", str(out), "--parts", "fused", "--size", "64x80",
         "--format", "json"],
    )
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout[: result.stdout.rindex("}") + 1])


def _copy(folder, tmp_path):
    target = tmp_path / folder.name
    shutil.copytree(folder, target)
    return target


def test_export_prints_the_validation_table_as_json(exported):
    out, printed = exported
    assert printed["ok"] is True
    assert printed["files"] == {"fused": str(out / "acar.onnx")}
    rows = printed["validation"]
    assert {(r["R"], r["B"]) for r in rows} == {(r, b) for r in (1, 3, 17) for b in (1, 2)}
    assert all(r["max_abs"] <= 1e-4 for r in rows)
    assert json.loads((out / "manifest.json").read_text())["validation"] == rows


def test_export_refuses_an_existing_folder_without_force(exported):
    out, _ = exported
    result = runner.invoke(app, ["export", "--config", "acar_tiny", "--out", str(out)])
    assert result.exit_code == 2
    assert "--force" in result.output and "Traceback" not in result.output


def test_validate_passes_and_prints_a_table(exported):
    out, _ = exported
    result = runner.invoke(app, ["validate", str(out)])
    assert result.exit_code == 0, result.output
    assert "fused" in result.output and "logits" in result.output and "scores" in result.output
    assert "FAIL" not in result.output


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_validate_rejects_a_broken_graph_with_one_line_and_exit_2(exported, tmp_path, damage):
    folder = _copy(exported[0], tmp_path)
    graph = folder / "acar.onnx"
    data = graph.read_bytes()
    graph.write_bytes(data[: len(data) // 3] if damage == "truncate" else b"\x08\x07not an onnx graph" * 50)
    result = runner.invoke(app, ["validate", str(folder)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "acar.onnx" in lines[0]
    assert "Traceback" not in result.output


def test_validate_fails_the_gate_with_exit_1_when_ort_differs_from_eager(exported, tmp_path):
    folder = _copy(exported[0], tmp_path)
    graph_path = folder / "acar.onnx"
    graph = onnx.load(str(graph_path))
    # perturb the last classifier weight (fc2): ORT now disagrees with the eager checkpoint
    (target,) = [t for t in graph.graph.initializer if "fc2" in t.name]
    weights = numpy_helper.to_array(target).copy()
    weights += 0.05
    target.CopyFrom(numpy_helper.from_array(weights.astype(np.float32), target.name))
    onnx.save(graph, str(graph_path))
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["parts"]["fused"]["sha256"] = sha256_file(graph_path)
    manifest_path.write_text(json.dumps(manifest))
    result = runner.invoke(app, ["validate", str(folder), "--format", "json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert report["ok"] is False
    assert any(r["max_abs"] > r["atol"] for r in report["validation"])
    assert "differs from eager beyond tolerance" in result.output


def test_validate_names_a_modified_graph(exported, tmp_path):
    folder = _copy(exported[0], tmp_path)
    graph_path = folder / "acar.onnx"
    graph = onnx.load(str(graph_path))
    graph.doc_string = "edited"
    onnx.save(graph, str(graph_path))
    result = runner.invoke(app, ["validate", str(folder)])
    assert result.exit_code == 2
    assert "sha256 differs" in result.output and "acar.onnx" in result.output


def test_validate_a_folder_without_manifest_exits_2(tmp_path):
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 2
    assert "manifest.json" in result.output
