"""Find the nodes that must stay fp32 in an fp16 or int8 graph, by structure rather than by name.

The exporter's node names carry no module path (`node_matmul_2`), so islands are found from the
dataflow: every Softmax, the attention-logit chain feeding it (MatMul/Einsum -> Div/Where/...),
normalisation nodes with their reshapes and affine Mul/Add, and the stem convs (first conv on each
path from `clips`). Name patterns (fnmatch on the node name or the torch namespace the exporter
records in `metadata_props`) add further nodes.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict, deque
from collections.abc import Iterable

import onnx

STANDARD_DOMAINS = ("", "ai.onnx")
# Ops an attention-logit chain may pass through between the MatMul and the Softmax.
LOGIT_PASS_THROUGH = {"Div", "Mul", "Add", "Sub", "Where", "Reshape", "Transpose", "Cast", "Unsqueeze",
                      "Squeeze", "Identity", "Neg"}
LOGIT_PRODUCERS = {"MatMul", "Einsum", "Gemm"}
NORMALIZATION_OPS = {"GroupNormalization", "InstanceNormalization", "LayerNormalization"}
NORM_AFFINE_OPS = {"Reshape", "Mul", "Add", "Unsqueeze", "Squeeze"}


def ensure_node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Name unnamed nodes (block lists address nodes by name); names stay unique."""
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)
    return model


def _constants(model: onnx.ModelProto) -> set[str]:
    names = {t.name for t in model.graph.initializer}
    names |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return names


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    result: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in model.graph.node:
        for i in n.input:
            result[i].append(n)
    return result


def attention_logit_nodes(model: onnx.ModelProto) -> list[str]:
    """Each Softmax plus the chain back to the MatMul/Einsum that computes its logits."""
    producers, constants = _producers(model), _constants(model)
    found: list[str] = []
    for softmax in (n for n in model.graph.node if n.op_type == "Softmax"):
        chain, stack, reached = [softmax.name], list(softmax.input[:1]), False
        while stack:
            node = producers.get(stack.pop())
            if node is None or node.name in chain:
                continue
            if node.op_type in LOGIT_PRODUCERS:
                chain.append(node.name)
                reached = True
            elif node.op_type in LOGIT_PASS_THROUGH:
                chain.append(node.name)
                data_inputs = node.input[1:] if node.op_type == "Where" else node.input
                if node.op_type in ("Reshape", "Unsqueeze", "Squeeze"):
                    data_inputs = node.input[:1]
                stack.extend(i for i in data_inputs if i and i not in constants)
        found.extend(chain if reached else [softmax.name])
    return found


def normalization_nodes(model: onnx.ModelProto, op_types: Iterable[str]) -> list[str]:
    """Normalisation nodes with the reshapes before them and their affine Mul/Add after them
    (a GroupNorm the exporter decomposed into Reshape -> InstanceNormalization -> Reshape -> Mul -> Add)."""
    op_types = set(op_types)
    producers, consumers, constants = _producers(model), _consumers(model), _constants(model)
    found: list[str] = []
    for node in model.graph.node:
        if node.op_type not in op_types:
            continue
        found.append(node.name)
        if node.op_type not in NORMALIZATION_OPS:
            continue
        before = producers.get(node.input[0])
        while before is not None and before.op_type == "Reshape" and before.name not in found:
            found.append(before.name)
            before = producers.get(before.input[0])
        frontier = deque(node.output)
        while frontier:
            users = consumers.get(frontier.popleft(), [])
            if len(users) != 1:
                continue
            user = users[0]
            others = [i for i in user.input[1:] if i]
            if user.op_type in NORM_AFFINE_OPS and user.name not in found and (
                user.op_type in ("Reshape", "Unsqueeze", "Squeeze") or all(o in constants for o in others)
            ):
                found.append(user.name)
                frontier.extend(user.output)
    return found


def pattern_nodes(model: onnx.ModelProto, patterns: Iterable[str]) -> list[str]:
    """Nodes whose name or exporter namespace (`metadata_props['namespace']`) matches a pattern."""
    patterns = list(patterns)
    if not patterns:
        return []
    found = []
    for node in model.graph.node:
        labels = [node.name] + [p.value for p in node.metadata_props if p.key == "namespace"]
        if any(fnmatch.fnmatchcase(label, pat) for label in labels for pat in patterns):
            found.append(node.name)
    return found


def custom_domain_nodes(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.domain not in STANDARD_DOMAINS]


def stem_convs(model: onnx.ModelProto, input_name: str = "clips") -> list[str]:
    """The first Conv on every path from `input_name` (SlowFast: the slow and the fast conv1)."""
    if input_name not in {i.name for i in model.graph.input}:
        return []
    consumers = _consumers(model)
    found: list[str] = []
    seen: set[str] = set()
    frontier = deque([input_name])
    while frontier:
        for node in consumers.get(frontier.popleft(), []):
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type == "Conv":
                found.append(node.name)
            else:
                frontier.extend(node.output)
    return found


def unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))
