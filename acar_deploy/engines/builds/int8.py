"""INT8 graphs: ONNX Runtime static quantization in QDQ format, calibrated on real clips with boxes.

Per part: inline model-local functions, save as one file, `quant_pre_process` (shape inference +
optimisation; it needs single-file graphs), then `quantize_static` with per-channel weights. Nodes
kept fp32 (`nodes_to_exclude`): the two stem convs (slow and fast conv1; the fast 5x7x7 3->8 conv
is far slower in int8 on CPU), the fp32 islands of the fp16 policy (attention logits, softmax,
normalisation) and any name pattern. RoiAlign and other ops outside `op_types` are never quantized.
ONNX Runtime on x86 runs u8 activations x s8 weights fastest; TensorRT needs symmetric s8 Q/DQ.

Plugin exports: the inlining replaces ACAR_RoIAlign / ACAR_HR2O by their standard-op bodies, which is
what ONNX Runtime runs anyway; a TensorRT engine would silently lose its plugins, so TensorRT INT8
builds of plugin exports are refused before calibration (`builds.trt_builder.refuse_int8_plugin_exports`).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from acar_deploy.engines.builds import fp32_islands
from acar_deploy.engines.builds.fp16 import inline_functions
from acar_deploy.engines.settings import CalibMethod, Fp16Policy, Int8Policy


@dataclass(frozen=True)
class QuantizationReport:
    fp32_nodes: tuple[str, ...]  # quantizable nodes kept fp32
    reasons: dict[str, list[str]]
    quantized_nodes: tuple[str, ...]
    activation_type: str
    inlined_functions: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "fp32_nodes": list(self.fp32_nodes),
            "fp32_reasons": self.reasons,
            "quantized_nodes": list(self.quantized_nodes),
            "activation_type": self.activation_type,
            "weight_type": "int8 per-channel symmetric",
            "inlined_functions": list(self.inlined_functions),
        }


class FeedReader:
    """`CalibrationDataReader` over a list of feed dicts (ORT duck-types the reader)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = feeds
        self._index = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._index >= len(self.feeds):
            return None
        self._index += 1
        return self.feeds[self._index - 1]

    def rewind(self) -> None:
        self._index = 0

    def __len__(self) -> int:
        return len(self.feeds)


def same_shape_feeds(feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Give every calibration sample the same shapes (histogram calibrators stack all batches).

    Each sample holds one clip; a second slot (batch index 1, a copy of the clip or context) takes
    copies of the sample's own boxes until every sample has the largest box count. Relations never
    cross clips, so the real clip's activations are unchanged, and the padding repeats real values.
    """
    if not feeds or "rois" not in feeds[0]:
        return feeds
    most = max(f["rois"].shape[0] for f in feeds)
    padded = []
    for f in feeds:
        rois = f["rois"]
        extra = rois[np.arange(most - rois.shape[0]) % rois.shape[0]].copy()
        extra[:, 0] = 1.0
        out = {"rois": np.concatenate([rois, extra], 0).astype(np.float32)}
        for name in ("clips", "context"):
            if name in f:
                out[name] = np.concatenate([f[name], f[name]], 0)
        padded.append(out)
    return padded


def int8_exclusions(model: onnx.ModelProto, policy: Int8Policy, fp16_policy: Fp16Policy) -> dict[str, list[str]]:
    """Reason -> nodes to keep fp32 in the QDQ graph."""
    reasons: dict[str, list[str]] = {}
    if policy.keep_stem_fp32:
        reasons["stem_convs"] = fp32_islands.stem_convs(model, "clips")
    if policy.keep_fp32_islands:
        reasons["attention_logits"] = fp32_islands.attention_logit_nodes(model)
        reasons["op_block_list"] = fp32_islands.normalization_nodes(model, fp16_policy.op_block_list)
    reasons["exclude_patterns"] = fp32_islands.pattern_nodes(model, policy.exclude_patterns)
    return {k: v for k, v in reasons.items() if v}


def _calibration_method(method: CalibMethod) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {
        CalibMethod.MINMAX: CalibrationMethod.MinMax,
        CalibMethod.ENTROPY: CalibrationMethod.Entropy,
        CalibMethod.PERCENTILE: CalibrationMethod.Percentile,
    }[CalibMethod(method)]


def quantize_int8(
    model: onnx.ModelProto,
    feeds: list[dict[str, np.ndarray]],
    policy: Int8Policy,
    fp16_policy: Fp16Policy,
    symmetric_activations: bool,
) -> tuple[onnx.ModelProto, QuantizationReport]:
    """The QDQ graph of `model` calibrated on `feeds` (dicts keyed by the graph's input names)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model, inlined = inline_functions(model)
    model = fp32_islands.ensure_node_names(model)
    with tempfile.TemporaryDirectory(prefix="acar-int8-") as tmp:
        source, prepared, output = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        onnx.save_model(model, str(source))
        try:
            quant_pre_process(str(source), str(prepared))
        except Exception:  # symbolic shape inference does not know every op; ONNX inference does
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        prepared_model = fp32_islands.ensure_node_names(onnx.load(str(prepared)))
        onnx.save_model(prepared_model, str(prepared))
        reasons = int8_exclusions(prepared_model, policy, fp16_policy)
        excluded = fp32_islands.unique(n for names in reasons.values() for n in names)
        activation = QuantType.QInt8 if symmetric_activations else QuantType.QUInt8
        extra = {
            "ActivationSymmetric": symmetric_activations,
            "WeightSymmetric": True,
            "CalibPercentile": policy.calib_percentile,
        }
        if policy.calib_method != CalibMethod.MINMAX:
            feeds = same_shape_feeds(feeds)
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print progress to stdout
            quantize_static(
                str(prepared),
                str(output),
                FeedReader(feeds),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(policy.op_types),
                per_channel=policy.per_channel,
                activation_type=activation,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded,
                calibrate_method=_calibration_method(policy.calib_method),
                extra_options=extra,
            )
        quantized = onnx.load(str(output))
    quantizable = set(policy.op_types)
    kept = [n.name for n in prepared_model.graph.node if n.op_type in quantizable and n.name in set(excluded)]
    done = tuple(quantized_node_names(quantized, quantizable))
    return quantized, QuantizationReport(
        fp32_nodes=tuple(kept),
        reasons=reasons,
        quantized_nodes=done,
        activation_type="int8 symmetric" if symmetric_activations else "uint8 asymmetric",
        inlined_functions=inlined,
    )


def quantized_node_names(model: onnx.ModelProto, op_types: set[str]) -> list[str]:
    """Compute nodes (of `op_types`) whose weight input comes from a DequantizeLinear."""
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type in op_types and len(n.input) > 1 and n.input[1] in dq_outputs]
