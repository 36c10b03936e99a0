"""Custom ONNX nodes for the plugin variants: `ACAR_RoIAlign` and `ACAR_HR2O` in domain `acar.deploy`.

Each node carries the TensorRT plugin attribute convention (`plugin_version`, `plugin_namespace`) and
ships with a model-local ONNX function whose body is standard ops, so ONNX Runtime inlines it and runs
at native speed and `onnx.checker` can check it. TensorRT's ONNX parser prefers a local function over
the plugin fallback, so the TensorRT build uses `prepare_for_tensorrt`, which strips the functions and
points each node at its plugin.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import onnx
from onnx import AttributeProto, FunctionProto, ModelProto, TensorProto, helper

CUSTOM_DOMAIN = "acar.deploy"
CUSTOM_DOMAIN_VERSION = 1
PLUGIN_NAMESPACE = "acar"
PLUGIN_VERSION = "1"

ROI_ALIGN_OP = "ACAR_RoIAlign"
HR2O_OP = "ACAR_HR2O"
CUSTOM_OPS = (ROI_ALIGN_OP, HR2O_OP)

# TensorRT's built-in RoIAlign (IPluginV3), which ACAR_RoIAlign maps onto for engine builds.
TRT_ROI_ALIGN_PLUGIN = "ROIAlign_TRT"
TRT_ROI_ALIGN_VERSION = "2"


def plugin_attributes() -> dict[str, str]:
    """String attributes the TensorRT parser reads to find the plugin creator."""
    return {"plugin_version": PLUGIN_VERSION, "plugin_namespace": PLUGIN_NAMESPACE}


def _ref(name: str, attr_type: AttributeProto.AttributeType, *, as_name: str | None = None) -> AttributeProto:
    return helper.make_attribute_ref(as_name or name, attr_type, ref_attr_name=name)


def _convention_attributes() -> list[AttributeProto]:
    return [helper.make_attribute(k, v) for k, v in plugin_attributes().items()]


def roi_align_function(opset: int) -> FunctionProto:
    """ACAR_RoIAlign(X, rois[R,4], batch_indices[R] int32) -> Y = ONNX RoiAlign-16 with the node's attributes."""
    cast = helper.make_node("Cast", ["batch_indices"], ["batch_indices_i64"], to=TensorProto.INT64)
    roi_align = helper.make_node("RoiAlign", ["X", "rois", "batch_indices_i64"], ["Y"])
    roi_align.attribute.extend(
        [
            _ref("coordinate_transformation_mode", AttributeProto.STRING),
            _ref("mode", AttributeProto.STRING),
            _ref("output_height", AttributeProto.INT),
            _ref("output_width", AttributeProto.INT),
            _ref("sampling_ratio", AttributeProto.INT),
            _ref("spatial_scale", AttributeProto.FLOAT),
        ]
    )
    defaults = [
        helper.make_attribute("coordinate_transformation_mode", "output_half_pixel"),
        helper.make_attribute("mode", "avg"),
        helper.make_attribute("output_height", 7),
        helper.make_attribute("output_width", 7),
        helper.make_attribute("sampling_ratio", 0),
        helper.make_attribute("spatial_scale", 1.0),
        *_convention_attributes(),
    ]
    return helper.make_function(
        CUSTOM_DOMAIN,
        ROI_ALIGN_OP,
        inputs=["X", "rois", "batch_indices"],
        outputs=["Y"],
        nodes=[cast, roi_align],
        opset_imports=[helper.make_opsetid("", opset)],
        attribute_protos=defaults,
        doc_string="RoIAlign with explicit batch indices (int32), as TensorRT's ROIAlign_TRT consumes them.",
    )


def hr2o_function(opset: int) -> FunctionProto:
    """ACAR_HR2O(q, k, v [R,C,h,w], batch_indices[R] int32) -> u [R,C,h,w].

    At every position, actor i attends over the actors j of the same clip:
    u_i = sum_j softmax_j(scale * <q_i, k_j>) v_j, with pairs from different clips masked out.
    """
    nodes = [
        helper.make_node("Transpose", ["q"], ["q_t"], perm=[2, 3, 0, 1]),  # [h,w,R,C]
        helper.make_node("Transpose", ["k"], ["k_t"], perm=[2, 3, 1, 0]),  # [h,w,C,R]
        helper.make_node("Transpose", ["v"], ["v_t"], perm=[2, 3, 0, 1]),  # [h,w,R,C]
        helper.make_node("MatMul", ["q_t", "k_t"], ["dots"]),  # [h,w,R,R]
        helper.make_node("Constant", [], ["scale_value"]),
        helper.make_node("CastLike", ["scale_value", "dots"], ["scale_typed"]),
        helper.make_node("Mul", ["dots", "scale_typed"], ["logits"]),
        helper.make_node("Constant", [], ["axis_1"], value_ints=[1]),
        helper.make_node("Constant", [], ["axis_0"], value_ints=[0]),
        helper.make_node("Unsqueeze", ["batch_indices", "axis_1"], ["clip_of_i"]),  # [R,1]
        helper.make_node("Unsqueeze", ["batch_indices", "axis_0"], ["clip_of_j"]),  # [1,R]
        helper.make_node("Equal", ["clip_of_i", "clip_of_j"], ["same_clip"]),  # [R,R]
        helper.make_node("Constant", [], ["minus_inf"], value_float=float("-inf")),
        helper.make_node("CastLike", ["minus_inf", "logits"], ["minus_inf_typed"]),
        helper.make_node("Where", ["same_clip", "logits", "minus_inf_typed"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["weights"], axis=-1),
        helper.make_node("MatMul", ["weights", "v_t"], ["u_t"]),  # [h,w,R,C]
        helper.make_node("Transpose", ["u_t"], ["u"], perm=[2, 3, 0, 1]),
    ]
    nodes[4].attribute.append(_ref("scale", AttributeProto.FLOAT, as_name="value_float"))
    defaults = [helper.make_attribute("scale", 1.0), *_convention_attributes()]
    return helper.make_function(
        CUSTOM_DOMAIN,
        HR2O_OP,
        inputs=["q", "k", "v", "batch_indices"],
        outputs=["u"],
        nodes=nodes,
        opset_imports=[helper.make_opsetid("", opset)],
        attribute_protos=defaults,
        doc_string="HR2O attention over the actors of the same clip, independently at each position.",
    )


_FUNCTION_BUILDERS = {ROI_ALIGN_OP: roi_align_function, HR2O_OP: hr2o_function}


def custom_nodes(model: ModelProto, op_type: str | None = None) -> list[onnx.NodeProto]:
    """Custom-domain nodes in the main graph (optionally of one op type)."""
    return [
        n
        for n in model.graph.node
        if n.domain == CUSTOM_DOMAIN and (op_type is None or n.op_type == op_type)
    ]


def main_opset(model: ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def attach_local_functions(model: ModelProto) -> ModelProto:
    """Add the function definitions (and the domain import) for every custom op the graph uses."""
    used = sorted({n.op_type for n in custom_nodes(model)})
    if not used:
        return model
    unknown = set(used) - set(_FUNCTION_BUILDERS)
    if unknown:
        raise ValueError(f"no local function is defined for custom ops {sorted(unknown)}")
    opset = main_opset(model)
    have = {(f.domain, f.name) for f in model.functions}
    for op_type in used:
        if (CUSTOM_DOMAIN, op_type) not in have:
            model.functions.append(_FUNCTION_BUILDERS[op_type](opset))
    _set_opset_import(model, CUSTOM_DOMAIN, CUSTOM_DOMAIN_VERSION)
    return model


def _set_opset_import(model: ModelProto, domain: str, version: int) -> None:
    for entry in model.opset_import:
        if entry.domain == domain:
            entry.version = version
            return
    model.opset_import.append(helper.make_opsetid(domain, version))


def strip_local_functions(model: ModelProto) -> ModelProto:
    """A copy of `model` without model-local functions, so TensorRT's parser falls back to plugins."""
    stripped = copy.deepcopy(model)
    del stripped.functions[:]
    return stripped


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _replace_attributes(node: onnx.NodeProto, values: dict) -> None:
    del node.attribute[:]
    node.attribute.extend(helper.make_attribute(k, v) for k, v in values.items())


def prepare_for_tensorrt(model: ModelProto) -> ModelProto:
    """The graph TensorRT should parse: local functions stripped, every custom node aimed at its plugin.

    ACAR_RoIAlign becomes TensorRT's built-in `ROIAlign_TRT` version "2" (integer fields; coordinate
    mode 0 = no half-pixel shift = ONNX output_half_pixel); ACAR_HR2O keeps its op type and namespace
    (the Python-defined plugin `acar::ACAR_HR2O` from `acar_deploy.export.tensorrt_plugins`) and
    gets `aot=1` so the ahead-of-time kernel is baked into the engine.
    """
    prepared = strip_local_functions(model)
    for node in custom_nodes(prepared, ROI_ALIGN_OP):
        mode = _attr(node, "coordinate_transformation_mode", b"output_half_pixel")
        pooling = _attr(node, "mode", b"avg")
        values = {
            "plugin_version": TRT_ROI_ALIGN_VERSION,
            "plugin_namespace": "",
            "coordinate_transformation_mode": 0 if _text(mode) == "output_half_pixel" else 1,
            "mode": 1 if _text(pooling) == "avg" else 0,
            "output_height": int(_attr(node, "output_height", 7)),
            "output_width": int(_attr(node, "output_width", 7)),
            "sampling_ratio": int(_attr(node, "sampling_ratio", 0)),
            "spatial_scale": float(_attr(node, "spatial_scale", 1.0)),
        }
        node.op_type = TRT_ROI_ALIGN_PLUGIN
        _replace_attributes(node, values)
    for node in custom_nodes(prepared, HR2O_OP):
        values = {
            "plugin_version": PLUGIN_VERSION,
            "plugin_namespace": PLUGIN_NAMESPACE,
            "scale": float(_attr(node, "scale", 1.0)),
            "aot": 1,
        }
        _replace_attributes(node, values)
    return prepared


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def node_summary(model: ModelProto, op_types: Iterable[str] = CUSTOM_OPS) -> dict[str, int]:
    """How many nodes of each custom op type the graph holds (for manifests and tests)."""
    wanted = set(op_types)
    counts: dict[str, int] = {}
    for node in custom_nodes(model):
        if node.op_type in wanted:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
