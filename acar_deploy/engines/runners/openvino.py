"""OpenVINO runner: runs an OpenVINO engine folder (IR per part, fp32 / bf16 / int8) on the CPU.

Compiled for latency: one stream, one infer request per part, `INFERENCE_NUM_THREADS` threads, the
precision hint recorded in engine.json, and the folder's `cache/` as OpenVINO's `CACHE_DIR` (when
writable). The precision OpenVINO really uses is read back from the compiled model into
`metadata["inference_precision"]`: a bf16 engine on a CPU without native bf16 runs fp32 and says so.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from acar_deploy.engines import settings as defaults
from acar_deploy.engines.builds.openvino import bf16_fallback_warning, cpu_capabilities
from acar_deploy.engines.openvino_core import import_openvino, kept_signal_stack, openvino_core
from acar_deploy.engines.runners.bank_cache import BankProjectionCache
from acar_deploy.engines.runners.base import RunnerOptions
from acar_deploy.engines.runners.graph_parts import GraphPartRunner
from acar_deploy.engines.runners.ort import choose_graph
from acar_deploy.errors import InputError
from acar_deploy.formats import ENGINE_FILE, EngineRecord, Precision, Runtime
from acar_deploy.formats.manifest import BANK_PARTS


class OpenVinoRunner(GraphPartRunner):
    """`OpenVinoRunner("engines/acar_tiny-openvino-int8", RunnerOptions(threads=2))`.

    Reads `threads` (INFERENCE_NUM_THREADS; 0 = OpenVINO's default) and `graph` from the options;
    everything else comes from the compile options the build recorded in engine.json.
    """

    def __init__(self, path: str | Path, options: RunnerOptions = RunnerOptions(),
                 compile_overrides: dict[str, str] | None = None, use_cache: bool = True):
        self.path = Path(path)
        self.options = options
        self.compile_overrides = dict(compile_overrides or {})  # e.g. {"ENABLE_CPU_PINNING": "NO"}
        self.use_cache = use_cache  # compile through the folder's cache/ (skipped when read-only)
        folder = EngineRecord.load(self.path)
        if folder.runtime != Runtime.OPENVINO:
            raise InputError(f"{self.path / ENGINE_FILE}: runtime is {folder.runtime.value!r}; open it with open_runner()")
        self.folder = folder
        self.record = folder.openvino
        self._split = choose_graph(folder.parts, options.graph, self.path)
        self._bank = self._split and "head" not in folder.parts  # an acfb export: backbone, bank_kv, bank_head
        self.bank_cache = BankProjectionCache()
        super().__init__(f"openvino-{folder.precision.value}:{self.path.name}", folder.num_classes,
                         Runtime.OPENVINO, folder.precision)
        self.metadata["graph"] = "split" if self._split else "fused"
        self._requests: dict[str, Any] = {}
        self._outputs: dict[str, list[str]] = {}

    def compile_properties(self) -> dict[str, Any]:
        options: dict[str, Any] = dict(self.record["compile_options"])
        if self.options.threads:
            options["INFERENCE_NUM_THREADS"] = int(self.options.threads)
        cache = self.path / str(self.record.get("cache_dir") or defaults.OPENVINO_CACHE_DIR)
        if self.use_cache and cache.is_dir() and os.access(cache, os.W_OK):
            options["CACHE_DIR"] = str(cache)
        options.update(self.compile_overrides)
        return options

    def _activate(self) -> None:
        with kept_signal_stack():  # see engines/openvino_core.py
            self._compile()

    def _compile(self) -> None:
        ov = import_openvino(f"running {self.path}")
        core = openvino_core(f"running {self.path}")
        device = str(self.record.get("build_device", {}).get("device") or defaults.OPENVINO_DEVICE)
        options = self.compile_properties()
        names = ("backbone", *BANK_PARTS) if self._bank else ("backbone", "head") if self._split else ("fused",)
        compiled = {}
        for name in names:
            try:
                compiled[name] = core.compile_model(str(self.folder.graph_path(name)), device, options)
            except RuntimeError as exc:
                lines = [line for line in str(exc).splitlines() if line.strip()]
                raise InputError(f"{self.folder.graph_path(name)}: OpenVINO cannot compile it: "
                                 f"{lines[-1] if lines else exc}") from None
        self._requests = {n: c.create_infer_request() for n, c in compiled.items()}
        self._outputs = {n: [o.get_any_name() for o in c.outputs] for n, c in compiled.items()}
        first = compiled[names[0]]
        cpu = cpu_capabilities(core, device)
        hint = first.get_property("INFERENCE_PRECISION_HINT")
        effective = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        self.metadata.update({
            "provider": f"OpenVINO {device}",
            "device": device.lower(),
            "cpu": cpu["name"],
            "bf16_native": cpu["bf16_native"],
            "inference_precision": effective,
            "compile_options": {k: str(v) for k, v in options.items()},
            "threads": {"inference_num_threads": int(first.get_property("INFERENCE_NUM_THREADS")),
                        "num_streams": str(first.get_property("NUM_STREAMS"))},
        })
        if self.folder.precision == Precision.BF16 and not cpu["bf16_native"]:
            self.metadata["warning"] = bf16_fallback_warning(cpu["name"])
            warnings.warn(f"{self.path}: {self.metadata['warning']}", stacklevel=2)
        self.metadata["versions"]["openvino"] = ov.__version__

    def _close(self) -> None:
        with kept_signal_stack():  # the compiled models tear down here
            self._requests = {}
        self.bank_cache.clear()

    def _run(self, part: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = self._requests[part]
        wanted = {i.get_any_name() for i in request.model_inputs}
        request.infer({k: v for k, v in feeds.items() if k in wanted})
        return {name: request.get_tensor(name).data.copy() for name in self._outputs[part]}

    def _infer_bank(self, clips: np.ndarray, rois: np.ndarray, entries: np.ndarray,
                    window: np.ndarray) -> dict[str, np.ndarray]:
        """As for ONNX Runtime, but an empty window becomes one all-masked zero entry: OpenVINO's
        bank_head is wrong at M = 0, and a box with no allowed entry gets a zero message either way."""
        if entries.shape[0] == 0:
            entries = np.zeros((1, *entries.shape[1:]), np.float32)
            window = np.zeros((rois.shape[0], 1), bool)
        return super()._infer_bank(clips, rois, entries, window)

    def _infer_bank_projected(self, clips: np.ndarray, rois: np.ndarray, keys: np.ndarray, values: np.ndarray,
                              window: np.ndarray) -> dict[str, np.ndarray]:
        """Stored K/V; an empty window becomes one all-masked zero key/value (see `_infer_bank`)."""
        if keys.shape[1] == 0:
            keys = values = np.zeros((keys.shape[0], 1, *keys.shape[2:]), np.float32)
            window = np.zeros((rois.shape[0], 1), bool)
        return super()._infer_bank_projected(clips, rois, keys, values, window)
