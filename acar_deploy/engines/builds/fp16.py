"""Mixed-precision fp16 graphs: fp32 inputs/outputs, fp32 islands, everything else fp16.

The same graph serves ONNX Runtime and TensorRT 11 (strongly typed: precision is a property of the
graph). Conversion is `onnxruntime.transformers.float16.convert_float_to_float16` with
`keep_io_types=True`; its own default block list (ops with no fp16 kernel, e.g. RoiAlign) is kept
and the islands from `fp32_islands` are added by node name.

Model-local functions (the bodies of custom `ACAR_*` nodes): the converter does not look inside
functions, and a function body would receive fp16 tensors its constants do not match. With
`inline_local_functions` (the default) the functions are inlined first, so the islands land on the
Softmax/MatMul/normalisation nodes inside them; without it, every custom-domain node stays fp32 as a
whole (for TensorRT plugin graphs, whose plugins run in fp32).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import onnx
import onnx.numpy_helper

from acar_deploy.engines.builds import fp32_islands
from acar_deploy.engines.settings import Fp16Policy

FLOAT_TYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
               onnx.TensorProto.DOUBLE: "float64", onnx.TensorProto.BFLOAT16: "bfloat16"}


@dataclass(frozen=True)
class PrecisionReport:
    """Which nodes stayed fp32, and why (recorded in engine.json)."""

    fp32_nodes: tuple[str, ...]
    reasons: dict[str, list[str]]
    inlined_functions: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"fp32_nodes": list(self.fp32_nodes), "fp32_reasons": self.reasons,
                "inlined_functions": list(self.inlined_functions)}


def inline_functions(model: onnx.ModelProto) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    names = tuple(f"{f.domain}::{f.name}" for f in model.functions)
    if not names:
        return model, ()
    import onnx.inliner

    return onnx.inliner.inline_local_functions(model), names


def fp32_nodes_for_fp16(model: onnx.ModelProto, policy: Fp16Policy) -> dict[str, list[str]]:
    """Reason -> node names that must stay fp32 in the fp16 graph."""
    reasons = {
        "op_block_list": fp32_islands.normalization_nodes(model, policy.op_block_list),
        "attention_logits": fp32_islands.attention_logit_nodes(model) if policy.keep_attention_logits_fp32 else [],
        "node_block_patterns": fp32_islands.pattern_nodes(model, policy.node_block_patterns),
        "custom_domain": fp32_islands.custom_domain_nodes(model),
    }
    return {k: v for k, v in reasons.items() if v}


def convert_to_fp16(model: onnx.ModelProto, policy: Fp16Policy) -> tuple[onnx.ModelProto, PrecisionReport]:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    inlined: tuple[str, ...] = ()
    if policy.inline_local_functions:
        model, inlined = inline_functions(model)
    model = fp32_islands.ensure_node_names(model)
    reasons = fp32_nodes_for_fp16(model, policy)
    blocked = fp32_islands.unique(n for names in reasons.values() for n in names)
    default_blocked = [n.name for n in model.graph.node if n.op_type in DEFAULT_OP_BLOCK_LIST]
    if default_blocked:
        reasons["no_fp16_kernel"] = default_blocked
    converted = convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=list(DEFAULT_OP_BLOCK_LIST),
        node_block_list=blocked,
    )
    remove_fp16_round_trips(converted.graph, model.graph)
    topological_sort(converted.graph)
    all_fp32 = fp32_islands.unique([*blocked, *default_blocked])
    return converted, PrecisionReport(tuple(all_fp32), reasons, inlined)


def remove_fp16_round_trips(graph: onnx.GraphProto, original: onnx.GraphProto) -> int:
    """Undo the converter's fp32 -> fp16 -> fp32 Cast pairs.

    `convert_float_to_float16` wraps every blocked node on its own: between two adjacent fp32 nodes
    (MatMul -> Div -> Where -> Softmax) it writes Cast(fp16) + Cast(fp32), which rounds the attention
    logits to fp16 (and overflows above 65504) inside the island. Here an fp32 consumer of such a
    pair reads the original fp32 tensor again, and a constant that was stored in fp16 only to be cast
    back to fp32 gets its original fp32 value. Returns the number of casts bypassed.
    """
    producers = {o: n for n in graph.node for o in n.output}
    fp32_values = {t.name: t for t in original.initializer if t.data_type == onnx.TensorProto.FLOAT}
    for node in original.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == onnx.TensorProto.FLOAT:
                    fp32_values[node.output[0]] = attr.t
    initializer_names = {t.name for t in graph.initializer}
    replacements: dict[str, str] = {}
    restored: dict[str, onnx.TensorProto] = {}
    for node in graph.node:
        if node.op_type != "Cast" or _cast_to(node) != onnx.TensorProto.FLOAT:
            continue
        source = node.input[0]
        before = producers.get(source)
        if before is not None and before.op_type == "Cast" and _cast_to(before) == onnx.TensorProto.FLOAT16:
            replacements[node.output[0]] = before.input[0]
        elif before is None and source in initializer_names and source in fp32_values:
            name = f"{source}_fp32"
            restored[name] = onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(fp32_values[source]), name)
            replacements[node.output[0]] = name
        elif before is not None and before.op_type == "Constant" and before.output[0] in fp32_values:
            name = f"{before.output[0]}_fp32"
            restored[name] = onnx.numpy_helper.from_array(
                onnx.numpy_helper.to_array(fp32_values[before.output[0]]), name)
            replacements[node.output[0]] = name
    if not replacements:
        return 0
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in replacements:
                node.input[i] = replacements[name]
    graph_outputs = {o.name for o in graph.output}
    graph.initializer.extend(restored.values())
    # drop casts nobody reads any more (the bypassed ones, then fp16 casts left without readers)
    while True:
        used = {i for n in graph.node for i in n.input} | graph_outputs
        dead = [n for n in graph.node if n.op_type == "Cast" and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    unused = [t for t in graph.initializer if t.name not in used and t.name not in graph_outputs]
    for t in unused:
        graph.initializer.remove(t)
    live = {o for n in graph.node for o in n.output} | {i.name for i in graph.input} | {t.name for t in graph.initializer}
    stale = [v for v in graph.value_info if v.name not in live]
    for v in stale:
        graph.value_info.remove(v)
    return len(replacements)


def _cast_to(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "to"), -1)


def topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder nodes so that producers precede consumers: the converter appends its input Casts at
    the end, which shape inference and TensorRT's parser (both single-pass) do not accept."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:  # a cycle or an input from an outer scope: keep the rest in place
            ordered.extend(pending)
            break
        ready_ids = {id(n) for n in ready}
        for n in ready:
            ordered.append(n)
            available.update(n.output)
        pending = [n for n in pending if id(n) not in ready_ids]
    copies = [onnx.NodeProto() for _ in ordered]
    for copy, node in zip(copies, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def tensor_float_types(model: onnx.ModelProto) -> dict[str, str]:
    """Element type of every float tensor (inputs, outputs, initializers, inferred intermediates)."""
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]  # the converter can leave stale entries; infer afresh
    inferred = onnx.shape_inference.infer_shapes(bare)
    types: dict[str, str] = {}
    graph = inferred.graph
    for value in (*graph.input, *graph.output, *graph.value_info):
        elem = value.type.tensor_type.elem_type
        if elem in FLOAT_TYPES:
            types[value.name] = FLOAT_TYPES[elem]
    for init in graph.initializer:
        if init.data_type in FLOAT_TYPES:
            types[init.name] = FLOAT_TYPES[init.data_type]
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type in FLOAT_TYPES:
                    types[node.output[0]] = FLOAT_TYPES[attr.t.data_type]
    return types


def node_float_io(model: onnx.ModelProto, node_name: str, types: dict[str, str] | None = None) -> dict[str, list[str]]:
    """The float element types a node reads and writes (to check that an island is really fp32)."""
    types = types if types is not None else tensor_float_types(model)
    node = next(n for n in model.graph.node if n.name == node_name)
    return {
        "inputs": [types[i] for i in node.input if i in types],
        "outputs": [types[o] for o in node.output if o in types],
    }
