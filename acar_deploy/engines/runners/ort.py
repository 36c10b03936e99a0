"""ONNX Runtime runner: runs an export folder (fp32) or an ORT engine folder (fp32/fp16/int8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from acar_deploy.engines.runners.bank_cache import BankProjectionCache
from acar_deploy.engines.runners.base import RunnerOptions
from acar_deploy.engines.runners.graph_parts import GraphPartRunner
from acar_deploy.engines.settings import ORT_PROVIDER_PREFERENCE
from acar_deploy.errors import InputError
from acar_deploy.formats import EngineRecord, ExportManifest, Precision, Runtime, folder_kind
from acar_deploy.formats.manifest import BANK_PARTS

GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "layout", "all")


def available_providers(requested: tuple[str, ...] | None = None) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if requested:
        unknown = [p for p in requested if p not in available]
        if unknown:
            raise InputError(f"ONNX Runtime providers {unknown} are not available here (available: {available})")
        return list(requested)
    return [p for p in ORT_PROVIDER_PREFERENCE if p in available] or ["CPUExecutionProvider"]


def session_options(settings: RunnerOptions) -> Any:
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "layout": getattr(ort.GraphOptimizationLevel, "ORT_ENABLE_LAYOUT", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if settings.graph_optimization_level not in levels:
        raise InputError(
            f"graph optimisation level {settings.graph_optimization_level!r}: use one of {GRAPH_OPTIMIZATION_LEVELS}"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[settings.graph_optimization_level]
    options.intra_op_num_threads = settings.threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.log_severity_level = 3
    if not settings.allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def choose_graph(parts: dict[str, Any], graph: str, where: Path) -> bool:
    """True for split (backbone + head, or an acfb head's backbone + bank parts), False for fused."""
    has_split = {"backbone", "head"} <= parts.keys() or {"backbone", *BANK_PARTS} <= parts.keys()
    if graph == "auto":
        return has_split
    if graph == "split":
        if not has_split:
            raise InputError(f"{where}: has no backbone+head graphs; use graph='fused'")
        return True
    if graph == "fused":
        if "fused" not in parts:
            raise InputError(f"{where}: has no fused graph; use graph='split'")
        return False
    raise InputError(f"graph {graph!r}: use auto, split or fused")


class OrtRunner(GraphPartRunner):
    """`OrtRunner("export/acar_tiny")` or `OrtRunner("engines/acar_tiny-ort-int8", RunnerOptions(threads=2))`."""

    def __init__(self, path: str | Path, options: RunnerOptions = RunnerOptions()):
        settings = options
        self.path = Path(path)
        self.settings = settings
        kind = folder_kind(self.path)
        if kind == "engine":
            folder: EngineRecord | ExportManifest = EngineRecord.load(self.path)
            if folder.runtime != Runtime.ORT:
                raise InputError(f"{folder.path}: runtime is {folder.runtime.value!r}; open it with open_runner()")
            precision = folder.precision
        elif kind == "export":
            folder = ExportManifest.load(self.path)
            precision = Precision.FP32
        else:
            raise InputError(f"{self.path}: neither an export folder (manifest.json) nor an engine folder (engine.json)")
        self.folder = folder
        self._split = choose_graph(folder.parts, settings.graph, self.path)
        super().__init__(f"ort-{precision.value}:{self.path.name}", folder.num_classes, Runtime.ORT, precision)
        self._bank = self._split and "head" not in folder.parts  # an acfb export: backbone, bank_kv, bank_head
        self.metadata.update({"graph": "split" if self._split else "fused"})
        self._sessions: dict[str, Any] = {}
        self.bank_cache = BankProjectionCache()

    def _activate(self) -> None:
        import onnxruntime as ort

        providers = available_providers(self.settings.providers)
        options = session_options(self.settings)
        names = ("backbone", *BANK_PARTS) if self._bank else ("backbone", "head") if self._split else ("fused",)
        try:
            self._sessions = {
                n: ort.InferenceSession(str(self.folder.graph_path(n)), sess_options=options, providers=providers)
                for n in names
            }
        except Exception as exc:  # ORT raises its own types; the message names the node/file
            raise InputError(f"{self.path}: ONNX Runtime cannot load the graph: {str(exc).splitlines()[0]}") from None
        provider = self._sessions[names[0]].get_providers()[0]
        self.metadata.update(
            {
                "provider": provider,
                "device": "cpu" if provider == "CPUExecutionProvider" else "cuda",
                "threads": {"intra_op": self.settings.threads, "inter_op": self.settings.inter_op_threads,
                            "allow_spinning": self.settings.allow_spinning},
                "graph_optimization_level": self.settings.graph_optimization_level,
            }
        )
        self.metadata["versions"]["onnxruntime"] = ort.__version__

    def _close(self) -> None:
        self._sessions = {}
        self.bank_cache.clear()

    def _run(self, part: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self._sessions[part]
        names = [o.name for o in session.get_outputs()]
        wanted = {i.name for i in session.get_inputs()}
        return dict(zip(names, session.run(names, {k: v for k, v in feeds.items() if k in wanted}), strict=True))
