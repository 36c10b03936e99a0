"""TensorRT side of the plugin nodes (TensorRT 10.9+ and 11; GPU machines only).

- `ACAR_RoIAlign` runs as TensorRT's built-in `ROIAlign_TRT` v2 (`prepare_for_tensorrt` rewrites the
  node; `trt.init_libnvinfer_plugins` must run before parsing).
- `ACAR_HR2O` is a Python-defined plugin `acar::ACAR_HR2O` (`tensorrt.plugin`): `@trtp.register` gives
  the output descriptor, `@trtp.autotune` the fp32/fp16 combinations, and `@trtp.aot_impl` returns
  the PTX of an OpenAI Triton kernel, so the engine holds the kernel and runs without Python.

TensorRT's ONNX parser tries a model-local function before the plugin fallback, so always parse
`prepare_for_tensorrt(model)` (local functions stripped), e.g. with `parse_onnx_for_tensorrt`.

No `from __future__ import annotations` here: `tensorrt.plugin` reads the decorated functions'
annotations (TensorDesc inputs, typed attributes, the AOT return tuple) at registration time.
`tensorrt.plugin.aot_impl` exists from TensorRT 10.9; older versions get a one-line InputError.
tests/tensorrt_api runs these definitions through NVIDIA's own validators for 10.x and 11.x.
"""

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from acar_deploy.errors import InputError, MissingExtraError
from acar_deploy.export.plugin_nodes import HR2O_OP, PLUGIN_NAMESPACE, prepare_for_tensorrt

HR2O_PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{HR2O_OP}"
MIN_AOT_PLUGIN_VERSION = (10, 9)  # first TensorRT with tensorrt.plugin.aot_impl
_REGISTERED = False


def import_tensorrt():
    """`tensorrt`, or MissingExtraError (exit 2) naming the extra to install."""
    try:
        import tensorrt
    except ImportError:
        raise MissingExtraError("tensorrt", "gpu", "Building TensorRT engines with ACAR plugins") from None
    return tensorrt


def tensorrt_version(trt) -> tuple[int, int]:
    """(major, minor) of an imported `tensorrt` module."""
    major, minor = str(trt.__version__).split(".")[:2]
    return int(major), int(minor)


def supports_aot_plugins(trt) -> bool:
    return tensorrt_version(trt) >= MIN_AOT_PLUGIN_VERSION


def _trt_dtype_name(trt, dtype) -> str:
    if dtype == trt.float32:
        return "fp32"
    if dtype == trt.float16:
        return "fp16"
    raise ValueError(f"{HR2O_PLUGIN_ID}: unsupported dtype {dtype}")


def _constant(expr, what: str) -> int:
    """Value of a shape expression that must be known at build time (e.g. the channel count).

    `ShapeExpr.is_constant` is a property and `ShapeExpr.constant_value()` a method (10.x and 11.x).
    """
    if expr.is_constant:
        return int(expr.constant_value())
    raise ValueError(f"{HR2O_PLUGIN_ID}: {what} must be static in the network, got a dynamic dimension")


def scalar_attribute(value, name: str) -> float:
    """The one value of a float attribute that TensorRT hands over as a one-element array."""
    flat = np.asarray(value, dtype=np.float64).reshape(-1)
    if flat.size != 1:
        raise ValueError(f"{HR2O_PLUGIN_ID}: attribute {name} must hold one value, got {flat.size}")
    return float(flat[0])


KERNEL_ARGUMENTS = 7  # q, k, v, clip labels, num_actors, num_positions, u


def ptx_entry_parameter_count(ptx: str) -> int:
    """Number of parameters of the first `.entry` in a PTX module."""
    match = re.search(r"\.entry\s+\w+\s*\(([^)]*)\)", ptx)
    if not match:
        raise ValueError("no .entry function in the PTX")
    return len(re.findall(r"\.param\b", match.group(1)))


def compile_hr2o_kernel(dtype_name: str, channels: int, scale: float):
    """Compile the Triton kernel for one dtype/channel count; returns the compiled kernel (PTX inside).

    TensorRT launches an AOT kernel with exactly inputs, extra scalars and outputs (7 here). Triton
    >= 3.3 appends scratch-buffer pointers to every kernel's PTX entry; whether a given TensorRT passes
    them is not verified here (no GPU; TensorRT >= 10.16 samples use triton 3.5), so PTX whose entry
    does not take exactly those 7 parameters is refused in one line naming both versions.
    """
    import triton

    from acar_deploy.export.hr2o_gpu_kernel import hr2o_attention_kernel

    block_c = triton.next_power_of_2(channels)
    ptr = f"*{dtype_name}"
    constexprs = {"CHANNELS": channels, "BLOCK_C": block_c, "SCALE": float(scale)}
    runtime = [ptr, ptr, ptr, "*i32", "i32", "i32", ptr]
    names = ["q_ptr", "k_ptr", "v_ptr", "clip_ptr", "num_actors", "num_positions", "u_ptr"]
    try:  # Triton <= 3.2 (TensorRT samples): runtime signature string, constexprs as `constants`
        source = triton.compiler.ASTSource(fn=hr2o_attention_kernel, signature=",".join(runtime), constants=constexprs)
    except TypeError:  # newer Triton: every parameter named in the signature, constexprs apart
        signature = {**dict(zip(names, runtime, strict=True)), **{k: "constexpr" for k in constexprs}}
        source = triton.compiler.ASTSource(fn=hr2o_attention_kernel, signature=signature, constexprs=constexprs)
    kernel = triton.compile(source)
    count = ptx_entry_parameter_count(kernel.asm["ptx"])
    if count != KERNEL_ARGUMENTS:
        import tensorrt

        raise InputError(
            f"{HR2O_PLUGIN_ID}: triton {triton.__version__} emits {count} kernel parameters, TensorRT "
            f"{tensorrt.__version__} passes {KERNEL_ARGUMENTS} (inputs, 2 scalars, output): use a triton whose PTX "
            "entry has only the kernel's own parameters (Triton < 3.3 does), or export with --hr2o onnx"
        )
    return kernel


def register_hr2o_plugin() -> None:
    """Define `acar::ACAR_HR2O` in TensorRT's plugin registry (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    trt = import_tensorrt()
    if not supports_aot_plugins(trt):
        need = ".".join(map(str, MIN_AOT_PLUGIN_VERSION))
        raise InputError(
            f"TensorRT {trt.__version__} has no tensorrt.plugin.aot_impl; the ACAR_HR2O plugin needs TensorRT >= "
            f"{need}: pip install 'tensorrt>={need}', or export with --hr2o onnx"
        )
    import tensorrt.plugin as trtp

    # `scale` is typed as a float32 array: the ONNX parser passes a FLOAT attribute as a one-element
    # array, and TensorRT 10.x's creator converts a `float` attribute with float(array), which numpy 2
    # rejects (11.x takes element 0). An array attribute is passed through on both.
    @trtp.register(HR2O_PLUGIN_ID)
    def hr2o_desc(
        q: trtp.TensorDesc,
        k: trtp.TensorDesc,
        v: trtp.TensorDesc,
        batch_indices: trtp.TensorDesc,
        scale: npt.NDArray[np.float32],
    ) -> trtp.TensorDesc:
        return q.like()

    @trtp.autotune(HR2O_PLUGIN_ID)
    def hr2o_autotune(q, k, v, batch_indices, outputs):
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, FP32|FP16, INT32, FP32|FP16", "LINEAR")]

    @trtp.aot_impl(HR2O_PLUGIN_ID)
    def hr2o_aot(
        q, k, v, batch_indices, scale, outputs, tactic
    ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
        shape = q.shape_expr
        channels = _constant(shape[1], "the HR2O channel count")
        kernel = compile_hr2o_kernel(_trt_dtype_name(trt, q.dtype), channels, scalar_attribute(scale, "scale"))
        positions = shape[2] * shape[3]
        launch = trtp.KernelLaunchParams()
        launch.grid_x = positions
        launch.grid_y = shape[0]
        launch.block_x = kernel.metadata.num_warps * 32
        launch.shared_mem = kernel.metadata.shared
        extra_args = trtp.SymIntExprs.from_tuple([trtp.SymInt32(shape[0]), trtp.SymInt32(positions)])
        return kernel.metadata.name.encode(), kernel.asm["ptx"].encode(), launch, extra_args

    _REGISTERED = True


def load_plugins(logger: Any | None = None) -> Any:
    """Make every plugin the ACAR graphs need available: TensorRT's own (ROIAlign_TRT) and ours."""
    trt = import_tensorrt()
    logger = logger or trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    register_hr2o_plugin()
    return logger


def parse_onnx_for_tensorrt(graph: str | os.PathLike, builder: Any, logger: Any | None = None):
    """(network, parser) for an exported graph, with plugin nodes resolved to their plugins.

    Local functions are stripped first, so TensorRT uses the plugins rather than inlining the
    standard-op definitions. Works with TensorRT 10 (explicit batch is the default) and 11.
    """
    import onnx

    trt = import_tensorrt()
    logger = load_plugins(logger)
    model = onnx.load(str(graph))
    prepared = prepare_for_tensorrt(model)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(prepared.SerializeToString(), str(Path(graph).parent)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(f"{graph}: TensorRT cannot parse the graph: {errors}")
    return network, parser
