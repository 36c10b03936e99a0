"""TensorRT engines (10.x and 11.x): build serialized plans from ONNX, and run them by tensor name.

Imported lazily: without the `[gpu]` extra, anything here raises `MissingExtraError` naming it.

Precision (a property of the graph where the version allows it):
- TensorRT 11 is always strongly typed and has no precision flags: FP16 builds parse the
  mixed-precision fp16 graph (the same one ONNX Runtime runs), INT8 builds parse the QDQ graph.
- TensorRT 10 parses the fp32 graph with `BuilderFlag.FP16` and pins the fp32 islands with layer
  precision constraints (`PREFER_PRECISION_CONSTRAINTS`); INT8 parses the QDQ graph with
  `BuilderFlag.INT8` (explicit quantization; no calibrator).
Plugin graphs (custom `ACAR_*` nodes) go through `acar_deploy.export.prepare_for_tensorrt`, which
strips the model-local functions so the parser falls back to the plugins.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from acar_deploy.engines.runners.bank_cache import BankProjectionCache
from acar_deploy.engines.runners.base import ExportedPartsLayout, Runner, RunnerOptions
from acar_deploy.engines.runners.ort import choose_graph
from acar_deploy.engines.settings import ShapeRange
from acar_deploy.errors import InputError, MissingExtraError
from acar_deploy.formats import EngineRecord, Precision, Runtime
from acar_deploy.formats.manifest import BANK_PARTS


def import_tensorrt(what: str) -> Any:
    try:
        import tensorrt as trt
    except ImportError:
        raise MissingExtraError("tensorrt", "gpu", what) from None
    return trt


def tensorrt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def has_precision_flags(trt: Any) -> bool:
    """TensorRT <= 10 (weakly typed builds possible); 11 removed BuilderFlag.FP16/INT8."""
    return hasattr(trt.BuilderFlag, "FP16")


def gpu_identity() -> tuple[str, str]:
    """(GPU name, compute capability) of the current CUDA device, for engine cache keys."""
    import torch

    if not torch.cuda.is_available():
        raise InputError("a TensorRT engine needs a CUDA GPU; none is visible (check CUDA_VISIBLE_DEVICES/driver)")
    major, minor = torch.cuda.get_device_capability()
    return torch.cuda.get_device_name(), f"{major}.{minor}"


def load_plugins(trt: Any, logger: Any, hr2o: bool) -> None:
    """Register TensorRT's built-in plugins (ROIAlign_TRT) and, for graphs with ACAR_HR2O nodes, the
    project's `acar::ACAR_HR2O` (TensorRT >= 10.9; older versions raise a one-line InputError).
    Must run before the ONNX parser sees the graph, or it reports "Plugin not found"."""
    trt.init_libnvinfer_plugins(logger, "")
    if hr2o:
        from acar_deploy.export.tensorrt_plugins import register_hr2o_plugin

        register_hr2o_plugin()


def graph_uses_op(onnx_path: Path, op_type: str) -> bool:
    """Whether the graph's main body has a node of `op_type` (weights are not loaded)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(node.op_type == op_type for node in model.graph.node)


@dataclass(frozen=True)
class TrtBuildRequest:
    """What the builder needs for one part; also the cache key's settings."""

    onnx_path: Path
    precision: Precision
    profiles: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]  # input -> min/opt/max
    workspace_bytes: int
    fp32_layers: tuple[str, ...]  # node names kept fp32 (TensorRT 10 FP16 builds)
    timing_cache: Path | None

    def cache_settings(self) -> dict[str, Any]:
        return {
            "precision": self.precision.value,
            "profiles": {k: [list(s) for s in v] for k, v in self.profiles.items()},
            "workspace_bytes": self.workspace_bytes,
            "fp32_layers": list(self.fp32_layers),
        }


def profile_shapes(
    inputs: tuple[dict[str, Any], ...], clips: ShapeRange, rois: ShapeRange, where: str,
    entries: ShapeRange | None = None,
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """min/opt/max shapes per input: `B` follows the clip range, `R` the RoI range, `M` (bank entries
    of an acfb export's bank_kv / bank_head) the entry range; others static."""
    ranges = {"B": clips, "R": rois}
    if entries is not None:
        ranges["M"] = entries
    shapes = {}
    for tensor in inputs:
        lo, mid, hi = [], [], []
        for dim in tensor["shape"]:
            if isinstance(dim, int):
                lo.append(dim), mid.append(dim), hi.append(dim)
            elif dim in ranges:
                r = ranges[dim]
                lo.append(r.min), mid.append(r.opt), hi.append(r.max)
            else:
                raise InputError(
                    f"{where}: input {tensor['name']} has dynamic dim {dim!r}; TensorRT builds need a static "
                    "frame size: re-export without --dynamic-size"
                )
        shapes[tensor["name"]] = (tuple(lo), tuple(mid), tuple(hi))
    return shapes


def build_plan(request: TrtBuildRequest) -> bytes:
    """Parse the ONNX graph and build a serialized plan (one optimization profile)."""
    trt = import_tensorrt("building a TensorRT engine")
    from acar_deploy.export.plugin_nodes import HR2O_OP

    logger = trt.Logger(trt.Logger.WARNING)
    load_plugins(trt, logger, hr2o=graph_uses_op(request.onnx_path, HR2O_OP))
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(request.onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(f"{request.onnx_path}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, request.workspace_bytes)
    if request.precision == Precision.FP32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32: TF32 matmuls/convs are on by default
    if has_precision_flags(trt):
        if request.precision == Precision.FP16:
            config.set_flag(trt.BuilderFlag.FP16)
            _pin_fp32_layers(trt, network, config, request.fp32_layers)
        elif request.precision == Precision.INT8:
            config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization from the Q/DQ nodes
    profile = builder.create_optimization_profile()
    for name, (lo, mid, hi) in request.profiles.items():
        profile.set_shape(name, lo, mid, hi)
    config.add_optimization_profile(profile)
    timing_cache = _attach_timing_cache(config, request.timing_cache)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise InputError(f"{request.onnx_path}: TensorRT failed to build an engine (see the log above)")
    if timing_cache is not None and request.timing_cache is not None:
        from acar_deploy.artifacts import atomic_file

        with atomic_file(request.timing_cache, force=True) as fh:
            fh.write(memoryview(config.get_timing_cache().serialize()))
    return bytes(plan)


def _pin_fp32_layers(trt: Any, network: Any, config: Any, node_names: tuple[str, ...]) -> None:
    """TensorRT 10 FP16: keep the layers the parser made from the fp32-island nodes in fp32.
    TensorRT 11 has no layer precisions (strongly typed): the fp16 graph carries the islands."""
    if not has_precision_flags(trt):
        return
    if not node_names:
        return
    config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    prefixes = tuple(node_names)
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name in prefixes or layer.name.startswith(tuple(f"{p}_" for p in prefixes)):
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                if layer.get_output(j).dtype in (trt.float32, trt.float16):
                    layer.set_output_type(j, trt.float32)


def _attach_timing_cache(config: Any, path: Path | None) -> Any:
    if path is None:
        return None
    data = Path(path).read_bytes() if Path(path).is_file() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


# --- runner ------------------------------------------------------------------------------------


class _Engine:
    """One deserialized plan with its execution context and I/O tensor names."""

    def __init__(self, trt: Any, runtime: Any, plan: bytes, where: Path):
        self.engine = runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise InputError(f"{where}: TensorRT cannot deserialize this plan (other TensorRT version or GPU?); rebuild it")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}


def _torch_dtype(trt: Any, dtype: Any) -> Any:
    import torch

    return {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int64: torch.int64,
        trt.int8: torch.int8,
        trt.bool: torch.bool,
    }[dtype]


def _stack_on_device(rows: list[Any]) -> Any:
    """K/V rows of a window -> one CUDA tensor `[depth, M, ...]`, without leaving the GPU. Kept there
    because copying a window's K/V to the head every keyframe moves them all over PCIe (R50, depth 2,
    M = 64: keys + values 2 x 2 x 64 x 512 x 7 x 14 fp32 = 51 MB), while only about M / (2w + 1)
    entries are new per keyframe."""
    import torch

    return torch.stack(rows, dim=1)


class TrtRunner(ExportedPartsLayout, Runner):
    """Runs a TensorRT engine folder on the current CUDA device; `cuda_graph=True` replays captured graphs.

    An acfb engine (backbone, bank_kv, bank_head) runs backbone -> bank_kv on the entries new to the
    window -> bank_head, with K/V kept on the GPU per entry (`BankProjectionCache` with a device stack); fed the K/V
    stored in the bank (`bank_keys`, `bank_values`) it copies them to the GPU and skips bank_kv.
    """

    def __init__(self, path: str | Path, options: RunnerOptions = RunnerOptions()):
        """`options.graph` and `options.cuda_graph` apply; CPU thread options are ignored (it runs on the GPU)."""
        self.path = Path(path)
        self.folder = EngineRecord.load(self.path)
        if self.folder.runtime != Runtime.TRT:
            raise InputError(f"{self.folder.path}: runtime is {self.folder.runtime.value!r}, not trt")
        self._split = choose_graph(self.folder.parts, options.graph, self.path)
        self._bank = self._split and "head" not in self.folder.parts  # an acfb engine: backbone, bank_kv, bank_head
        self.bank_cache = BankProjectionCache(stack=_stack_on_device)
        super().__init__(f"trt-{self.folder.precision.value}:{self.path.name}", self.folder.num_classes,
                         Runtime.TRT, self.folder.precision)
        self.cuda_graph = options.cuda_graph
        self.metadata.update({"provider": "tensorrt", "graph": "split" if self._split else "fused",
                              "cuda_graph": options.cuda_graph})
        self._engines: dict[str, _Engine] = {}
        self._graphs: dict[str, tuple[tuple, Any, dict[str, Any], dict[str, Any]]] = {}

    def _activate(self) -> None:
        trt = import_tensorrt("running a TensorRT engine")
        import torch

        name, capability = gpu_identity()
        built_on = self.folder.gpu
        if built_on and (built_on.get("name"), built_on.get("compute_capability")) != (name, capability):
            raise InputError(f"{self.path}: built for {built_on.get('name')} (sm {built_on.get('compute_capability')}), "
                             f"this GPU is {name} (sm {capability}); rebuild the engine here")
        from acar_deploy.export.tensorrt_plugins import supports_aot_plugins

        logger = trt.Logger(trt.Logger.WARNING)
        # AOT plugin kernels live in the plan; registering the definition too is harmless where supported.
        load_plugins(trt, logger, hr2o=supports_aot_plugins(trt))
        runtime = trt.Runtime(logger)
        parts = ("backbone", *BANK_PARTS) if self._bank else ("backbone", "head") if self._split else ("fused",)
        self._engines = {p: _Engine(trt, runtime, self.folder.graph_path(p).read_bytes(), self.folder.graph_path(p))
                         for p in parts}
        self._stream = torch.cuda.Stream()
        self.metadata.update({"device": f"cuda:{torch.cuda.current_device()} ({name}, sm {capability})"})
        self.metadata["versions"].update({"tensorrt": trt.__version__, "torch": torch.__version__,
                                          "cuda": torch.version.cuda})

    def forget_bank_projections(self) -> None:
        self.bank_cache.clear()

    def _close(self) -> None:
        self._graphs.clear()
        self._engines.clear()
        self.bank_cache.clear()

    def _enqueue(self, part: str, inputs: dict[str, Any]) -> dict[str, Any]:
        """Bind inputs by name, allocate outputs, enqueue on the runner's stream (no sync)."""
        import torch

        engine = self._engines[part]
        ctx = engine.context
        for name in engine.inputs:
            tensor = inputs[name].to(engine.dtypes[name]).contiguous()
            inputs[name] = tensor
            if not ctx.set_input_shape(name, tuple(tensor.shape)):
                raise InputError(f"{self.path}: {name} shape {list(tensor.shape)} is outside the engine's profile; "
                                 "rebuild with a wider --roi-profile / --batch-profile / --bank-profile")
            ctx.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in engine.outputs:
            shape = tuple(ctx.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=engine.dtypes[name], device="cuda")
            ctx.set_tensor_address(name, outputs[name].data_ptr())
        if not ctx.execute_async_v3(self._stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution of {part} failed")
        return outputs

    def _execute(self, part: str, inputs: dict[str, Any]) -> dict[str, Any]:
        if not self.cuda_graph:
            return self._enqueue(part, inputs)
        import torch

        key = tuple((n, tuple(t.shape)) for n, t in sorted(inputs.items()))
        captured = self._graphs.get(part)
        if captured is None or captured[0] != key:
            # (Re)capture for these shapes; one graph per part, since a run at other shapes may
            # reallocate TensorRT's internal buffers that an older graph still points to.
            self._graphs.pop(part, None)
            static_in = {n: t.clone() for n, t in inputs.items()}
            self._enqueue(part, dict(static_in))  # warm-up: TensorRT allocates lazily on the first run
            self._stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self._stream):
                static_out = self._enqueue(part, static_in)
            captured = self._graphs[part] = (key, graph, static_in, static_out)
        _, graph, static_in, static_out = captured
        with torch.cuda.stream(self._stream):
            for n, t in inputs.items():
                static_in[n].copy_(t)
            graph.replay()
        return static_out

    def _timed_run(self, stages: list[tuple[str, Any]]) -> tuple[dict[str, Any], dict[str, float]]:
        """Run (name, fn) stages on the stream with CUDA events between them; fn takes the previous result."""
        import torch

        events = [torch.cuda.Event(enable_timing=True) for _ in range(len(stages) + 1)]
        result: Any = None
        with torch.cuda.stream(self._stream):
            events[0].record(self._stream)
            for i, (_, fn) in enumerate(stages):
                result = fn(result)
                events[i + 1].record(self._stream)
        self._stream.synchronize()
        times = {name: events[i].elapsed_time(events[i + 1]) / 1000.0 for i, (name, _) in enumerate(stages)}
        return result, times

    @staticmethod
    def _to_device(array: np.ndarray) -> Any:
        """Host array -> CUDA tensor, through pinned memory (asynchronous on the runner's stream)."""
        import torch

        return torch.from_numpy(array).pin_memory().to("cuda", non_blocking=True)

    def _h2d(self, clips: np.ndarray, rois: np.ndarray) -> dict[str, Any]:
        return {"clips": self._to_device(clips), "rois": self._to_device(rois)}

    @staticmethod
    def _d2h(outputs: dict[str, Any]) -> dict[str, np.ndarray]:
        return {n: t.float().to("cpu", non_blocking=True) for n, t in outputs.items() if n in ("logits", "scores")}

    def _infer_split(self, clips: np.ndarray, rois: np.ndarray) -> dict[str, np.ndarray]:
        if self._bank:
            raise InputError(f"{self.path}: an acfb model needs each keyframe's bank window "
                             "(feeds bank_entries, bank_window; detect/parity --bank BANK)")
        state: dict[str, Any] = {}

        def backbone(dev: dict[str, Any]) -> Any:
            state.update(dev)
            return self._execute("backbone", {"clips": dev["clips"]})["context"]

        def head(context: Any) -> dict[str, Any]:
            return self._execute("head", {"context": context, "rois": state["rois"]})

        start = time.perf_counter()
        outputs, times = self._timed_run([("h2d", lambda _: self._h2d(clips, rois)), ("backbone", backbone),
                                          ("head", head), ("d2h", self._d2h)])
        self.last_stage_times = {**times, "wall": time.perf_counter() - start}
        return {n: t.numpy() for n, t in outputs.items()}

    def _infer_head(self, context: np.ndarray, rois: np.ndarray) -> dict[str, np.ndarray]:
        def h2d(_: Any) -> dict[str, Any]:
            return {"context": self._to_device(context), "rois": self._to_device(rois)}

        start = time.perf_counter()
        outputs, times = self._timed_run([("h2d", h2d), ("head", lambda dev: self._execute("head", dev)),
                                          ("d2h", self._d2h)])
        self.last_stage_times = {**times, "wall": time.perf_counter() - start}
        return {n: t.numpy() for n, t in outputs.items()}

    def _infer_fused(self, clips: np.ndarray, rois: np.ndarray) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        outputs, times = self._timed_run([("h2d", lambda _: self._h2d(clips, rois)),
                                          ("fused", lambda dev: self._execute("fused", dev)), ("d2h", self._d2h)])
        self.last_stage_times = {**times, "wall": time.perf_counter() - start}
        return {n: t.numpy() for n, t in outputs.items()}

    def _project_bank_on_device(self, entries: np.ndarray) -> tuple[Any, Any]:
        """bank_kv on new entries (host) -> keys, values on the GPU; cloned, since a captured CUDA
        graph's outputs are overwritten by its next replay."""
        outputs = self._execute("bank_kv", {"bank_entries": self._to_device(entries)})
        return outputs["bank_keys"].clone(), outputs["bank_values"].clone()

    def _project_bank(self, entries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """bank_kv alone, host to host (`Runner.project_bank`, e.g. `bank project` with a TensorRT engine).
        M = 0 runs one zero entry (profiles start at M = 1) and returns its K/V sliced to none."""
        count = entries.shape[0]
        if count == 0:
            entries = np.zeros((1, *entries.shape[1:]), np.float32)

        def d2h(outputs: dict[str, Any]) -> dict[str, Any]:
            return {n: outputs[n].float().to("cpu", non_blocking=True) for n in ("bank_keys", "bank_values")}

        start = time.perf_counter()
        outputs, times = self._timed_run([("h2d", lambda _: {"bank_entries": self._to_device(entries)}),
                                          ("bank_kv", lambda dev: self._execute("bank_kv", dev)), ("d2h", d2h)])
        self.last_stage_times = {**times, "wall": time.perf_counter() - start}
        return outputs["bank_keys"].numpy()[:, :count], outputs["bank_values"].numpy()[:, :count]

    def _infer_bank(self, clips: np.ndarray, rois: np.ndarray, entries: np.ndarray,
                    window: np.ndarray) -> dict[str, np.ndarray]:
        """backbone -> bank_kv (entries new to this window only) -> bank_head, stages timed with CUDA events."""
        if entries.shape[0] == 0:
            # Profiles start at M = 1: one all-masked zero entry, which gives every box the zero
            # message that an empty window gives (as the OpenVINO runner does).
            entries = np.zeros((1, *entries.shape[1:]), np.float32)
            window = np.zeros((rois.shape[0], 1), bool)
        return self._run_bank_head(clips, rois, window, None,
                                   lambda: self.bank_cache.keys_values(entries, self._project_bank_on_device))

    def _infer_bank_projected(self, clips: np.ndarray, rois: np.ndarray, keys: np.ndarray, values: np.ndarray,
                              window: np.ndarray) -> dict[str, np.ndarray]:
        """backbone -> bank_head on K/V stored in the bank, copied to the GPU with the clips: bank_kv does
        not run. An empty window becomes one all-masked zero key/value (see `_infer_bank`)."""
        if keys.shape[1] == 0:
            keys = values = np.zeros((keys.shape[0], 1, *keys.shape[2:]), np.float32)
            window = np.zeros((rois.shape[0], 1), bool)
        return self._run_bank_head(clips, rois, window, (keys, values), None)

    def _run_bank_head(self, clips: np.ndarray, rois: np.ndarray, window: np.ndarray,
                       stored: tuple[np.ndarray, np.ndarray] | None,
                       project: Callable[[], tuple[Any, Any]] | None) -> dict[str, np.ndarray]:
        """h2d -> backbone -> bank_kv (`project()`: device K/V) -> bank_head -> d2h, timed with CUDA events;
        with `stored` host K/V instead, they go to the GPU in h2d and there is no bank_kv stage."""
        state: dict[str, Any] = {}

        def h2d(_: Any) -> dict[str, Any]:
            dev = self._h2d(clips, rois)
            dev["bank_window"] = self._to_device(window)
            if stored is not None:
                dev["bank_keys"], dev["bank_values"] = self._to_device(stored[0]), self._to_device(stored[1])
            return dev

        def backbone(dev: dict[str, Any]) -> Any:
            state.update(dev)
            return self._execute("backbone", {"clips": dev["clips"]})["context"]

        def bank_kv(context: Any) -> tuple[Any, Any]:
            state["context"] = context
            return project() if project is not None else (state["bank_keys"], state["bank_values"])

        def head(kv: tuple[Any, Any]) -> dict[str, Any]:
            return self._execute("bank_head", {"context": state["context"], "rois": state["rois"], "bank_keys": kv[0],
                                               "bank_values": kv[1], "bank_window": state["bank_window"]})

        if project is None:
            stages = [("h2d", h2d), ("backbone", backbone), ("head", lambda context: head(bank_kv(context)))]
        else:
            stages = [("h2d", h2d), ("backbone", backbone), ("bank_kv", bank_kv), ("head", head)]
        start = time.perf_counter()
        outputs, times = self._timed_run([*stages, ("d2h", self._d2h)])
        self.last_stage_times = {**times, "wall": time.perf_counter() - start}
        return {n: t.numpy() for n, t in outputs.items()}
