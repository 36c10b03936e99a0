"""TensorRT INT8 builds of plugin exports are refused in one line, before calibration (docs/engines.md).

INT8 quantization inlines the plugin nodes' local functions, so the engine would silently not use
ROIAlign_TRT / acar::ACAR_HR2O; the build says so instead. Runs on CPU: the refusal comes before
TensorRT is imported.
"""

from __future__ import annotations

import importlib.util

import onnx
import pytest
from typer.testing import CliRunner

from acar_deploy.cli.main import app
from acar_deploy.export.plugin_nodes import CUSTOM_DOMAIN


def _build(export_dir, out, precision):
    return CliRunner().invoke(app, ["build", str(export_dir), "--runtime", "trt", "--precision", precision,
                                    "--out", str(out)])


def test_trt_int8_of_a_plugin_export_is_refused_naming_the_plugin_nodes(tmp_path, tiny_export_factory):
    export_dir = tiny_export_factory(plugin_nodes=True, parts="split").export_dir  # shared with test_engines_fp16
    first = sorted(export_dir.glob("*.onnx"))
    ops = set()
    for path in first:  # independent read of the graphs: which custom ops they hold
        ops |= {n.op_type for n in onnx.load(str(path)).graph.node if n.domain == CUSTOM_DOMAIN}
    assert ops, "the plugin export has no custom nodes"
    result = _build(export_dir, tmp_path / "e", "int8")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "TensorRT INT8 builds of plugin exports are not supported" in lines[0]
    assert any(op in lines[0] for op in ops)
    assert "--hr2o onnx" in lines[0]
    assert not (tmp_path / "e").exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_trt_int8_of_a_standard_export_is_not_refused(tmp_path, tiny_export):
    result = _build(tiny_export.export_dir, tmp_path / "e", "int8")
    assert result.exit_code == 2
    assert "plugin exports" not in result.stderr and "acar-deploy[gpu]" in result.stderr  # reached the TensorRT import
