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


def test_bank_part_profiles_follow_the_entry_range():
    """acfb exports: bank_kv and bank_head get M from --bank-profile, R and B as the other parts."""
    from acar_deploy.export.specs import make_spec
    from acar_deploy.formats.manifest import BankGeometry, ExportGeometry

    geometry = ExportGeometry(input_size=(64, 64), context_size=(4, 4), context_channels=24, num_classes=9,
                              bank=BankGeometry(channels=16, size=(1, 2), depth=2))
    clips, rois, entries = ShapeRange(1, 1, 2), ShapeRange(1, 8, 32), ShapeRange(1, 64, 256)
    kv = profile_shapes(tuple(t.to_dict() for t in make_spec("bank_kv", geometry).inputs), clips, rois, "bank_kv.onnx",
                        entries=entries)
    assert kv == {"bank_entries": ((1, 16, 1, 2), (64, 16, 1, 2), (256, 16, 1, 2))}
    head = profile_shapes(tuple(t.to_dict() for t in make_spec("bank_head", geometry).inputs), clips, rois, "bank.onnx",
                          entries=entries)
    assert head["bank_keys"] == head["bank_values"] == ((2, 1, 16, 1, 2), (2, 64, 16, 1, 2), (2, 256, 16, 1, 2))
    assert head["bank_window"] == ((1, 1), (8, 64), (32, 256))
    assert head["rois"] == ((1, 5), (8, 5), (32, 5)) and head["context"][2] == (2, 24, 4, 4)
    with pytest.raises(InputError, match="dynamic dim 'M'"):  # without an entry range (callers always pass one)
        profile_shapes(tuple(t.to_dict() for t in make_spec("bank_kv", geometry).inputs), clips, rois, "bank_kv.onnx")


def test_bank_profile_option_reaches_the_build_settings(monkeypatch, tmp_path):
    """`build --bank-profile 2:16:48` -> TrtPolicy.bank_entries (the build itself is stopped before any work)."""
    from typer.testing import CliRunner

    import acar_deploy.engines as engines
    from acar_deploy.cli.main import app

    seen = {}

    def fake_build(settings, progress=True):
        seen["settings"] = settings
        raise InputError("stopped by the test")

    monkeypatch.setattr(engines, "build_engine", fake_build)
    result = CliRunner().invoke(app, ["build", str(tmp_path), "--runtime", "trt", "--bank-profile", "2:16:48"])
    assert result.exit_code == 2 and "stopped by the test" in result.output
    assert seen["settings"].trt.bank_entries == ShapeRange(2, 16, 48)
    result = CliRunner().invoke(app, ["build", str(tmp_path), "--runtime", "trt", "--bank-profile", "0:16"])
    assert result.exit_code == 2 and "--bank-profile '0:16'" in result.output
