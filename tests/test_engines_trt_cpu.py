"""The TensorRT build logic that needs no GPU: optimization profiles and the fp16 graph per version."""

from __future__ import annotations

import types

import onnx
import pytest

from acar_deploy.engines import BuildSettings, ShapeRange
from acar_deploy.engines.builds import trt_builder
from acar_deploy.engines.runners.trt import profile_shapes
from acar_deploy.errors import InputError


def test_profiles_follow_clip_and_roi_ranges():
    inputs = (
        {"name": "context", "shape": ["B", 320, 4, 6]},
        {"name": "rois", "shape": ["R", 5]},
    )
    shapes = profile_shapes(inputs, ShapeRange(1, 2, 4), ShapeRange(1, 8, 32), "head.onnx")
    assert shapes == {
        "context": ((1, 320, 4, 6), (2, 320, 4, 6), (4, 320, 4, 6)),
        "rois": ((1, 5), (8, 5), (32, 5)),
    }
    with pytest.raises(InputError, match="dynamic dim 'H'"):
        profile_shapes(({"name": "clips", "shape": ["B", 3, 32, "H", "W"]},), ShapeRange(1, 1, 1),
                       ShapeRange(1, 1, 1), "backbone.onnx")


def fake_tensorrt(version: str, has_fp16_flag: bool):
    flags = types.SimpleNamespace(**({"FP16": 1, "INT8": 2} if has_fp16_flag else {}))
    return types.SimpleNamespace(__version__=version, BuilderFlag=flags)


@pytest.mark.parametrize(("version", "has_flag"), [("10.13.0", True), ("11.0.0", False)])
def test_fp16_graph_for_tensorrt_by_version(monkeypatch, version, has_flag, tiny_export):
    export = tiny_export
    monkeypatch.setattr(trt_builder, "import_tensorrt", lambda what: fake_tensorrt(version, has_flag))
    head = onnx.load(str(export.export_dir / "head.onnx"))
    graph, record = trt_builder.fp16_graph_for_tensorrt(BuildSettings(export.export_dir, precision="fp16"), head)
    softmax = [n.name for n in graph.graph.node if n.op_type == "Softmax"]
    assert softmax and set(softmax) <= set(record["fp32_nodes"])
    fp16_initializers = [t for t in graph.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    if has_flag:  # TensorRT 10: fp32 graph; BuilderFlag.FP16 + layer constraints on the listed nodes
        assert not fp16_initializers and "BuilderFlag.FP16" in record["tensorrt_fp16"]
    else:  # TensorRT 11: strongly typed, the graph itself carries the precision
        assert fp16_initializers and "strongly typed" in record["tensorrt_fp16"]
