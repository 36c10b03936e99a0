"""ONNX Runtime FP16 engines: accuracy against eager, and the fp32 islands really being fp32."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from engine_support import sample_feeds

from acar_deploy.engines import BuildSettings, EagerRunner, RunnerOptions, build_engine, open_runner

FP16_EPS = 2.0**-11  # unit roundoff of float16 (10 stored mantissa bits)


def fp16_tolerances(reference_logits: np.ndarray) -> dict[str, float]:
    """Per-output absolute tolerance for the fp16 engine.

    Every fp16 op rounds with relative error <= 2^-11 (weights once, activations once per op). The
    acar_tiny path from clip to logit is ~20 rounding stages deep (stem, 4 bottleneck stages, lateral
    convs, conv_reduce, RoIAlign (fp32), conv1/conv2, 2 HR2O layers with fp32 logits/softmax/norm,
    fc1, fc2); worst-case relative errors add up, so |d logits| <= 20 * 2^-11 * max|logits|
    (~1e-2 relative), plus a tiny floor for logits near zero. The scores are softmax (Jacobian row
    sums <= 1/2) and sigmoid (slope <= 1/4) of the logits, so half the logit bound covers them.
    """
    logits_atol = 20 * FP16_EPS * float(np.abs(reference_logits).max()) + 1e-5
    return {"logits": logits_atol, "scores": 0.5 * logits_atol}


def float_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor, inferred afresh by ONNX (not read from the converter's records)."""
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]
    graph = onnx.shape_inference.infer_shapes(bare, strict_mode=True).graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.output, *graph.value_info)}
    types.update({t.name: t.data_type for t in graph.initializer})
    return types


def attention_matmuls(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """MatMul/Einsum of two activations whose result reaches a Softmax within three nodes."""
    initializers = {t.name for t in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    found = []
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Einsum") or set(node.input) & initializers:
            continue
        frontier = list(node.output)
        for _ in range(4):
            nexts = [c for t in frontier for c in consumers.get(t, [])]
            if any(c.op_type == "Softmax" for c in nexts):
                found.append(node)
                break
            frontier = [o for c in nexts for o in c.output]
    return found


@pytest.fixture(scope="module")
def fp16_engine(tmp_path_factory, tiny_export):
    export = tiny_export
    out = tmp_path_factory.mktemp("engines") / "tiny-ort-fp16"
    return export, build_engine(BuildSettings(export.export_dir, precision="fp16", out_dir=out), progress=False)


@pytest.mark.parametrize("graph", ["split", "fused"])
def test_fp16_engine_matches_eager_within_fp16_rounding(fp16_engine, graph):
    export, info = fp16_engine
    feeds = sample_feeds(np.random.default_rng(7), 2, [3, 2])
    with EagerRunner.from_checkpoint(export.checkpoint) as eager:
        expected = eager.infer(feeds)
    with open_runner(info.path, RunnerOptions(graph=graph)) as runner:
        assert runner.metadata["precision"] == "fp16"
        got = runner.infer(feeds)
    tolerances = fp16_tolerances(expected["logits"])
    for name, atol in tolerances.items():
        diff = float(np.abs(got[name] - expected[name]).max())
        assert diff <= atol, f"{name}: max |fp16 - eager| = {diff:.3g} > {atol:.3g}"
    # ...and it is really computed in fp16: an fp32 graph agrees with eager to ~1e-7.
    assert float(np.abs(got["logits"] - expected["logits"]).max()) > 1e-6


@pytest.mark.parametrize("part", ["head", "fused"])
def test_fp32_islands_are_fp32_in_the_fp16_graph(fp16_engine, part):
    _, info = fp16_engine
    model = onnx.load(str(info.parts[part]))
    types = float_types(model)
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16

    def io_types(node):
        return {types[t] for t in (*node.input, *node.output) if t in types and types[t] in (f32, f16)}

    softmax = [n for n in model.graph.node if n.op_type == "Softmax"]
    norms = [n for n in model.graph.node if n.op_type in ("GroupNormalization", "InstanceNormalization")]
    matmuls = attention_matmuls(model)
    assert len(softmax) >= 2 and len(norms) == 2 and len(matmuls) == 2  # acar_tiny: HR2O depth 2
    for node in (*softmax, *norms, *matmuls):
        assert io_types(node) == {f32}, f"{node.op_type} {node.name} reads/writes {io_types(node)}"
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs and all(io_types(n) == {f16} for n in convs)
    # no fp32 -> fp16 -> fp32 round trip anywhere (it would round the island's values to fp16)
    producer = {o: n for n in model.graph.node for o in n.output}
    cast_to = {n.name: next(a.i for a in n.attribute if a.name == "to") for n in model.graph.node if n.op_type == "Cast"}
    for node in model.graph.node:
        if node.op_type == "Cast" and cast_to[node.name] == f32:
            before = producer.get(node.input[0])
            assert not (before is not None and before.op_type == "Cast" and cast_to[before.name] == f16), node.name
    # fp32 inputs and outputs at the graph boundary
    assert {types[v.name] for v in (*model.graph.input, *model.graph.output) if v.name != "rois"} == {f32}
    # engine.json names the same nodes
    record = json.loads((info.path / "engine.json").read_text())["parts"][part]
    for node in (*softmax, *norms, *matmuls):
        assert node.name in record["fp32_nodes"]
    assert record["fp32_reasons"]["attention_logits"]


def test_plugin_export_fp16_inlines_custom_nodes(tiny_export_factory):
    """Custom ACAR_RoIAlign / ACAR_HR2O nodes: their function bodies are inlined, then the islands apply."""
    from acar_deploy.engines.builds.fp16 import convert_to_fp16
    from acar_deploy.engines.settings import Fp16Policy

    export = tiny_export_factory(plugin_nodes=True, parts="split")
    head = onnx.load(str(export.export_dir / "head.onnx"))
    assert {n.op_type for n in head.graph.node} >= {"ACAR_RoIAlign", "ACAR_HR2O"}
    converted, report = convert_to_fp16(head, Fp16Policy())
    assert set(report.inlined_functions) >= {"acar.deploy::ACAR_RoIAlign", "acar.deploy::ACAR_HR2O"}
    assert not [n for n in converted.graph.node if n.domain not in ("", "ai.onnx")]
    types = float_types(converted)
    for node in (*[n for n in converted.graph.node if n.op_type == "Softmax"], *attention_matmuls(converted)):
        assert {types[t] for t in (*node.input, *node.output) if t in types} == {onnx.TensorProto.FLOAT}
    # without inlining, the custom nodes stay whole and fp32
    kept, report = convert_to_fp16(head, Fp16Policy(inline_local_functions=False))
    custom = [n for n in kept.graph.node if n.domain == "acar.deploy"]
    assert custom and all(n.name in report.fp32_nodes for n in custom)
