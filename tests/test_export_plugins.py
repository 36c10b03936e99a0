"""The custom plugin nodes: their ONNX function definitions (CPU), the TensorRT rewrite, and
(GPU only) TensorRT engines that resolve them to ROIAlign_TRT and the acar::ACAR_HR2O plugin."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from acar_deploy.errors import MissingExtraError
from acar_deploy.export import plugin_nodes as pn
from acar_deploy.export.tensorrt_plugins import import_tensorrt, ptx_entry_parameter_count


def _value(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def _custom_graph(node, inputs, outputs, opset=18):
    graph = helper.make_graph([node], "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    pn.attach_local_functions(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def _hr2o_model(channels):
    node = helper.make_node(pn.HR2O_OP, ["q", "k", "v", "clip"], ["u"], domain=pn.CUSTOM_DOMAIN,
                            scale=0.5, **pn.plugin_attributes())
    spatial = ["R", channels, "h", "w"]
    inputs = [_value(n, TensorProto.FLOAT, spatial) for n in "qkv"] + [_value("clip", TensorProto.INT32, ["R"])]
    return _custom_graph(node, inputs, [_value("u", TensorProto.FLOAT, spatial)])


def test_hr2o_function_is_attention_within_each_clip():
    rng = np.random.default_rng(0)
    count, channels, height, width = 6, 5, 2, 3
    q, k, v = (rng.standard_normal((count, channels, height, width)).astype(np.float32) for _ in range(3))
    clip = np.array([0, 0, 0, 4, 4, 7], np.int32)  # any labels: equal label = same clip
    (u,) = ort.InferenceSession(_hr2o_model(channels).SerializeToString()).run(None, {"q": q, "k": k, "v": v, "clip": clip})
    want = np.zeros_like(u)
    for i in range(count):
        mates = [j for j in range(count) if clip[j] == clip[i]]
        for y in range(height):
            for x in range(width):
                logits = np.array([0.5 * q[i, :, y, x] @ k[j, :, y, x] for j in mates])
                weights = np.exp(logits - logits.max())
                weights /= weights.sum()
                want[i, :, y, x] = sum(w * v[j, :, y, x] for w, j in zip(weights, mates, strict=True))
    assert np.abs(u - want).max() < 1e-5
    assert np.abs(u[5] - v[5]).max() < 1e-6  # an actor alone in its clip attends only to itself


def test_roi_align_function_equals_the_model_roi_align():
    from acar_deploy.model.roi_align import roi_align

    node = helper.make_node(
        pn.ROI_ALIGN_OP, ["X", "rois", "batch_indices"], ["Y"], domain=pn.CUSTOM_DOMAIN,
        coordinate_transformation_mode="output_half_pixel", mode="avg", output_height=7, output_width=7,
        sampling_ratio=0, spatial_scale=1.0, **pn.plugin_attributes(),
    )
    inputs = [_value("X", TensorProto.FLOAT, ["B", 4, "H", "W"]), _value("rois", TensorProto.FLOAT, ["R", 4]),
              _value("batch_indices", TensorProto.INT32, ["R"])]
    model = _custom_graph(node, inputs, [_value("Y", TensorProto.FLOAT, ["R", 4, 7, 7])])
    rng = np.random.default_rng(1)
    features = rng.standard_normal((2, 4, 10, 13)).astype(np.float32)
    rois = np.array([[0, 0.5, 1.0, 9.0, 8.5], [1, 2.0, 2.0, 2.3, 2.2], [1, 0.0, 0.0, 13.0, 10.0],
                     [0, 3.1, 4.7, 11.9, 9.9]], np.float32)  # includes a box smaller than one cell
    (got,) = ort.InferenceSession(model.SerializeToString()).run(
        None, {"X": features, "rois": rois[:, 1:], "batch_indices": rois[:, 0].astype(np.int32)}
    )
    want = roi_align(torch.from_numpy(features), torch.from_numpy(rois), 7, 1.0, -1, False).numpy()
    assert np.abs(got - want).max() < 1e-5


def test_prepare_for_tensorrt_strips_functions_and_targets_plugins():
    model = _hr2o_model(4)
    roi = helper.make_node(pn.ROI_ALIGN_OP, ["X", "r", "b"], ["Y"], domain=pn.CUSTOM_DOMAIN,
                           coordinate_transformation_mode="output_half_pixel", mode="avg", output_height=7,
                           output_width=5, sampling_ratio=0, spatial_scale=0.25, **pn.plugin_attributes())
    model.graph.node.append(roi)
    pn.attach_local_functions(model)
    prepared = pn.prepare_for_tensorrt(model)
    assert len(model.functions) == 2 and len(prepared.functions) == 0  # the original keeps its functions
    assert pn.strip_local_functions(model).functions == prepared.functions
    hr2o, roi_trt = prepared.graph.node
    assert (hr2o.op_type, roi_trt.op_type) == ("ACAR_HR2O", "ROIAlign_TRT")
    attrs = {a.name: helper.get_attribute_value(a) for a in roi_trt.attribute}
    assert attrs == {"plugin_version": b"2", "plugin_namespace": b"", "coordinate_transformation_mode": 0,
                     "mode": 1, "output_height": 7, "output_width": 5, "sampling_ratio": 0,
                     "spatial_scale": pytest.approx(0.25)}
    attrs = {a.name: helper.get_attribute_value(a) for a in hr2o.attribute}
    assert attrs == {"plugin_version": b"1", "plugin_namespace": b"acar", "scale": 0.5, "aot": 1}


def test_ptx_parameter_count_reads_the_entry_signature():
    ptx = (".version 8.4\n.target sm_90\n.visible .entry hr2o_attention_kernel(\n"
           "\t.param .u64 .ptr .global .align 1 p0,\n\t.param .u32 p1,\n\t.param .u64 p2\n)\n{\n\tret;\n}\n")
    assert ptx_entry_parameter_count(ptx) == 3


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_missing_tensorrt_is_a_missing_extra_error():
    with pytest.raises(MissingExtraError, match=r"acar-deploy\[gpu\]"):
        import_tensorrt()


# ---- GPU: TensorRT resolves the plugin nodes ------------------------------------------------------


@pytest.fixture(scope="module")
def plugin_split_export(tmp_path_factory):
    from acar_deploy.export import ExportSettings, NodeChoice, Parts, export_model

    out = tmp_path_factory.mktemp("trt") / "tiny-plugin"
    settings = ExportSettings(parts=Parts.split, roi_align=NodeChoice.plugin, hr2o=NodeChoice.plugin,
                              input_size=(96, 96), validate=False)
    return export_model(out, None, "acar_tiny", settings)


@pytest.mark.gpu
@pytest.mark.trt
def test_tensorrt_engine_with_plugins_matches_onnxruntime(plugin_split_export):
    trt = pytest.importorskip("tensorrt")
    pytest.importorskip("triton")
    from acar_deploy.export.specs import random_context, random_rois
    from acar_deploy.export.tensorrt_plugins import parse_onnx_for_tensorrt

    graph = plugin_split_export.files["head"]
    context_shape = plugin_split_export.manifest["parts"]["head"]["inputs"][0]["shape"]
    channels, height, width = context_shape[1:]
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = parse_onnx_for_tensorrt(graph, builder, logger)
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("context", (1, channels, height, width), (2, channels, height, width), (2, channels, height, width))
    profile.set_shape("rois", (1, 5), (8, 5), (40, 5))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    layers = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
    assert "ACAR_HR2O" in layers and "ROIAlign" in layers

    rng = np.random.default_rng(0)
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    for count in (1, 3, 17, 40):
        feeds = {"context": random_context(rng, 2, channels, (height, width)), "rois": random_rois(rng, count, 2)}
        (want,) = session.run(["logits"], feeds)
        execution = engine.create_execution_context()
        tensors = {k: torch.from_numpy(v).cuda() for k, v in feeds.items()}
        tensors["logits"] = torch.empty((count, want.shape[1]), device="cuda")
        for name, tensor in tensors.items():
            if name != "logits":
                execution.set_input_shape(name, tuple(tensor.shape))
            execution.set_tensor_address(name, tensor.data_ptr())
        stream = torch.cuda.current_stream()
        assert execution.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        assert np.abs(tensors["logits"].cpu().numpy() - want).max() < 1e-3


def test_clip_labels_from_the_mask_give_the_model_attention():
    """The twin feeds ACAR_HR2O argmax(mask row) as clip label; that must reproduce the masked attention."""
    from acar_deploy.export.part_modules import reference_hr2o_attention
    from acar_deploy.model.heads import ClipMaskedAttention, same_clip_mask

    torch.manual_seed(0)
    q, k, v = (torch.randn(7, 8, 3, 2) for _ in range(3))
    rois = torch.tensor([[b, 0.1, 0.1, 0.5, 0.5] for b in (0, 0, 1, 1, 1, 2, 4)], dtype=torch.float32)
    mask = same_clip_mask(rois)
    labels = mask.float().argmax(dim=1)
    assert labels.tolist() == [0, 0, 2, 2, 2, 5, 6]
    want = ClipMaskedAttention(8)(q, k, v, mask)
    got = reference_hr2o_attention(q, k, v, labels, 1 / np.sqrt(8))
    assert torch.allclose(got, want, atol=1e-6)
