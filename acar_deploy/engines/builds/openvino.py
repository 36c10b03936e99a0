"""OpenVINO engine parts: each ONNX part saved as OpenVINO IR (`<part>.xml` + `<part>.bin`).

fp32 and bf16 engines hold the fp32 IR; bf16 is OpenVINO's `INFERENCE_PRECISION_HINT`, applied when
the runner compiles the IR (so the same folder runs bf16 on a CPU with native bf16 and falls back
to fp32, with a recorded warning, on one without). int8 engines hold either the NNCF
post-training-quantized IR of the fp32 graph (default; calibrated on the same clips and person
boxes as the ONNX Runtime int8 path) or the IR of our calibrated QDQ graph. Each part is compiled
once at build time into the folder's `cache/` (OpenVINO `CACHE_DIR`), which checks that it compiles
on this CPU and makes the first load fast.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from acar_deploy.engines import settings as defaults
from acar_deploy.engines.builds import fp32_islands
from acar_deploy.engines.openvino_core import (
    OPENVINO_INSTALL_HINT,
    import_openvino,
    kept_signal_stack,
    openvino_core,
)
from acar_deploy.engines.settings import BuildSettings, OpenVinoInt8Method, Precision
from acar_deploy.errors import InputError

# OpenVINO op types NNCF may quantize (the ONNX Runtime path's Conv/MatMul/Gemm/Einsum, plus Add);
# every other type present goes into NNCF's ignored scope. Neutral types carry no quantizer anyway.
NNCF_QUANTIZED_TYPES = frozenset({"Convolution", "GroupConvolution", "MatMul", "Add"})
NNCF_NEUTRAL_TYPES = frozenset({"Parameter", "Result", "Constant"})


def cpu_capabilities(core: Any, device: str = defaults.OPENVINO_DEVICE) -> dict[str, Any]:
    """What the device says about itself; `bf16_native` decides whether a bf16 hint is honoured."""
    capabilities = [str(c) for c in core.get_property(device, "OPTIMIZATION_CAPABILITIES")]
    return {
        "device": device,
        "name": str(core.get_property(device, "FULL_DEVICE_NAME")),
        "optimization_capabilities": capabilities,
        "bf16_native": "BF16" in capabilities,
    }


def inference_precision_hint(precision: Precision | str) -> str:
    """bf16 engines ask for bf16; every other engine pins f32 (OpenVINO's default on an AMX/AVX512-BF16
    CPU is bf16, which would silently change an fp32 engine's numbers). int8 ops come from the graph."""
    return "bf16" if Precision(precision) == Precision.BF16 else "f32"


def compile_options(settings: BuildSettings) -> dict[str, str]:
    """The compile properties recorded in engine.json; the runner adds threads and the cache folder."""
    return {
        "INFERENCE_PRECISION_HINT": inference_precision_hint(settings.precision),
        "PERFORMANCE_HINT": defaults.OPENVINO_PERFORMANCE_HINT,
        "NUM_STREAMS": "1",
    }


def uses_qdq_graph(settings: BuildSettings) -> bool:
    """Whether this engine starts from the ONNX Runtime QDQ graph (else from the fp32 source graph)."""
    return settings.precision == Precision.INT8 and settings.openvino.int8_method == OpenVinoInt8Method.QDQ


def write_openvino_part(
    settings: BuildSettings,
    name: str,
    graph: Any,
    feeds: list[dict[str, np.ndarray]] | None,
    out_dir: Path,
) -> tuple[Path, dict[str, Any]]:
    """Convert one ONNX part (a ModelProto) to IR, NNCF-quantize it when `feeds` are given, save it as
    `out_dir/<name>.xml` and compile it once into `out_dir/cache`. Returns the .xml and its record."""
    with kept_signal_stack():  # NNCF and compile make OpenVINO objects: see engines/openvino_core.py
        return _write_openvino_part(settings, name, graph, feeds, out_dir)


def _write_openvino_part(
    settings: BuildSettings, name: str, graph: Any, feeds: list[dict[str, np.ndarray]] | None, out_dir: Path
) -> tuple[Path, dict[str, Any]]:
    ov = import_openvino("building an OpenVINO engine")
    import onnx

    core = openvino_core("building an OpenVINO engine")
    with tempfile.TemporaryDirectory(prefix="acar-ov-") as tmp:
        source = Path(tmp) / f"{name}.onnx"
        graph = fp32_islands.ensure_node_names(graph)
        onnx.save_model(graph, str(source))
        try:
            model = core.read_model(str(source))
        except RuntimeError as exc:
            raise InputError(f"{name}: OpenVINO cannot read the ONNX graph: {_first_line(exc)}") from None
    record: dict[str, Any] = {}
    if feeds is not None:
        model, record = nncf_quantize(settings, model, graph, feeds)
    elif uses_qdq_graph(settings):
        record = {"int8_method": "qdq", "note": "QDQ graph of the ONNX Runtime int8 path, read by OpenVINO"}
    target = out_dir / f"{name}.xml"
    ov.save_model(model, str(target), compress_to_fp16=False)  # fp16 weight storage would change fp32 numbers
    cache = out_dir / defaults.OPENVINO_CACHE_DIR
    cache.mkdir(exist_ok=True)
    options = {**compile_options(settings), "CACHE_DIR": str(cache)}
    try:
        core.compile_model(str(target), settings.openvino.device, options)
    except RuntimeError as exc:
        raise InputError(f"{target}: OpenVINO cannot compile it for {settings.openvino.device}: {_first_line(exc)}") from None
    record["weights_file"] = f"{name}.bin"
    return target, record


def nncf_quantize(
    settings: BuildSettings, model: Any, graph: Any, feeds: list[dict[str, np.ndarray]]
) -> tuple[Any, dict[str, Any]]:
    """NNCF post-training int8 of the fp32 IR, calibrated on `feeds` (clips + real person boxes).

    Kept fp32 (NNCF's ignored scope): the stem convs and the attention logits/softmax/normalisation
    nodes, by the same rules (and ONNX node names, which OpenVINO keeps) as the ONNX Runtime path.
    """
    try:
        import nncf
    except ImportError:
        raise InputError(f"OpenVINO int8 with --int8-method nncf needs NNCF: {OPENVINO_INSTALL_HINT}") from None
    from acar_deploy.engines.builds.int8 import int8_exclusions

    reasons = int8_exclusions(graph, settings.int8, settings.fp16)
    present = {op.get_friendly_name() for op in model.get_ops()}
    ignored = [n for n in fp32_islands.unique(n for names in reasons.values() for n in names) if n in present]
    # Only the compute ops the ONNX Runtime path quantizes (and residual adds, which OpenVINO fuses
    # into int8 convs): NNCF would otherwise put int8 on box pooling sums, gathers and concats of the
    # head, which wrecks its output (relative L2 error 1.3 on acar_tiny).
    ignored_types = sorted({op.get_type_name() for op in model.get_ops()} - NNCF_QUANTIZED_TYPES - NNCF_NEUTRAL_TYPES)
    preset = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}[
        settings.openvino.nncf_preset
    ]
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF prints progress bars
        quantized = nncf.quantize(
            model,
            nncf.Dataset(feeds),
            preset=preset,
            subset_size=len(feeds),
            fast_bias_correction=settings.openvino.nncf_fast_bias_correction,
            ignored_scope=nncf.IgnoredScope(names=ignored, types=ignored_types, validate=False),
        )
    fake_quantize = sum(1 for op in quantized.get_ops() if op.get_type_name() == "FakeQuantize")
    return quantized, {
        "int8_method": "nncf",
        "nncf_version": nncf.__version__,
        "preset": settings.openvino.nncf_preset,
        "fast_bias_correction": settings.openvino.nncf_fast_bias_correction,
        "fp32_nodes": ignored,
        "fp32_reasons": {k: [n for n in v if n in present] for k, v in reasons.items()},
        "fp32_op_types": ignored_types,
        "fake_quantize_nodes": fake_quantize,
    }


def openvino_record(settings: BuildSettings) -> dict[str, Any]:
    """engine.json's `openvino` section: version, build CPU, compile options, bf16 status."""
    ov = import_openvino("building an OpenVINO engine")
    with kept_signal_stack():
        cpu = cpu_capabilities(openvino_core("building an OpenVINO engine"), settings.openvino.device)
    record: dict[str, Any] = {
        "version": ov.__version__,
        "build_device": cpu,
        "compile_options": compile_options(settings),
        "cache_dir": defaults.OPENVINO_CACHE_DIR,
    }
    if settings.precision == Precision.BF16 and not cpu["bf16_native"]:
        record["warning"] = bf16_fallback_warning(cpu["name"])
    return record


def bf16_fallback_warning(cpu_name: str) -> str:
    return (f"{cpu_name} has no native bf16 (OPTIMIZATION_CAPABILITIES lacks BF16): OpenVINO ignores the bf16 "
            "hint and runs fp32 here; the engine runs bf16 on a CPU with AVX512-BF16 or AMX")


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
