"""The one runner interface every runtime implements (after Polygraphy's runners).

`infer({"clips", "rois"}) -> {"logits", "scores"}`; `infer_head(context, rois)` runs the head alone
where `supports_head_only`. A runner subclass only implements how to run its graph(s): `_activate`,
`_close`, `_infer_split` (backbone+head) or `_infer_fused`, and `_infer_head`. Empty RoIs, input
checks, timing and scores live here once. `RunnerOptions` is what every runner is opened with.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from acar_deploy import __version__
from acar_deploy.engines.settings import ORT_GRAPH_OPTIMIZATION
from acar_deploy.errors import InputError
from acar_deploy.formats.enums import Precision, Runtime

GRAPHS = ("auto", "split", "fused")


@dataclass(frozen=True)
class RunnerOptions:
    """How to open a runner; each runtime reads the fields that apply to it and ignores the rest.

    threads: intra-op threads (torch.set_num_threads / ORT intra_op_num_threads), 0 = runtime default.
    graph: "split" (backbone + head), "fused", or "auto" (split when the folder has it).
    allow_spinning: ORT pool threads spin-wait after a run; off, another runtime timed right after
    (an interleaved benchmark) is not starved of the cores.
    """

    threads: int = 0
    inter_op_threads: int = 0
    device: str | None = None  # eager: torch device to move the model to (None: where it is); TensorRT: current CUDA device
    providers: tuple[str, ...] | None = None  # ORT: None = TensorRT EP -> CUDA EP -> CPU, as available
    graph: str = "auto"
    graph_optimization_level: str = ORT_GRAPH_OPTIMIZATION  # ORT: disable, basic, extended, layout, all
    allow_spinning: bool = True
    cuda_graph: bool = False  # TensorRT: replay captured CUDA graphs

    def __post_init__(self) -> None:
        if self.graph not in GRAPHS:
            raise InputError(f"graph {self.graph!r}: use one of {', '.join(GRAPHS)}")
        if self.threads < 0 or self.inter_op_threads < 0:
            raise InputError(f"threads {self.threads}: needs 0 (runtime default) or more")
        if self.providers is not None:
            object.__setattr__(self, "providers", tuple(self.providers))

LOG = logging.getLogger("acar_deploy")


def warn_non_finite(values: np.ndarray, source: str) -> bool:
    """Log one warning when outputs hold NaN/Inf (they would be written as score 0.000); True if so.

    A warning, not an error: an fp16 engine can overflow on one odd clip while the rest is usable,
    and parity/validate are the gates that fail on it. Weights are checked strictly at load time
    (model/checkpoint.py), so eager outputs are finite unless the input is.
    """
    values = np.asarray(values)
    if values.size == 0 or np.isfinite(values).all():
        return False
    bad = int(values.size - np.isfinite(values).sum())
    LOG.warning("warning: %s produced %d non-finite (NaN/Inf) output values of %d; they are written as 0",
                source, bad, values.size)
    return True


def check_feeds(feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """clips [B, 3, T, H, W] float32 and rois [R, 5] float32 with batch indices in [0, B)."""
    missing = {"clips", "rois"} - set(feeds)
    if missing:
        raise InputError(f"runner feeds lack {sorted(missing)}: pass {{'clips': [B,3,T,H,W], 'rois': [R,5]}}")
    clips = np.ascontiguousarray(feeds["clips"], dtype=np.float32)
    rois = np.ascontiguousarray(feeds["rois"], dtype=np.float32)
    if rois.size == 0:
        rois = rois.reshape(0, 5)
    if clips.ndim != 5:
        raise InputError(f"clips has shape {list(clips.shape)}; expected [B, 3, T, H, W]")
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise InputError(f"rois has shape {list(rois.shape)}; expected [R, 5] = (batch_index, x1, y1, x2, y2)")
    if rois.shape[0]:
        index = rois[:, 0]
        if (index < 0).any() or (index >= clips.shape[0]).any() or (index != np.round(index)).any():
            raise InputError(f"rois batch indices must be integers in [0, {clips.shape[0]}); got {np.unique(index)}")
    return clips, rois


def check_bank(entries: np.ndarray, window: np.ndarray, rois: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """bank_entries [M, C, h, w] (float32 after this) and bank_window [R, M] bool."""
    entries = np.ascontiguousarray(entries, dtype=np.float32)
    window = np.ascontiguousarray(window)
    if entries.ndim != 4:
        raise InputError(f"bank_entries has shape {list(entries.shape)}; expected [M, C, h, w]")
    if window.dtype != np.bool_ or window.shape != (rois.shape[0], entries.shape[0]):
        raise InputError(f"bank_window is {window.dtype} {list(window.shape)}; expected bool "
                         f"[R, M] = {[rois.shape[0], entries.shape[0]]}")
    return entries, window


def check_bank_kv(keys: np.ndarray, values: np.ndarray, window: np.ndarray,
                  rois: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """bank_keys, bank_values [depth, M, C, h, w] (float32 after this, e.g. from an fp16 bank) and bank_window [R, M]."""
    keys = np.ascontiguousarray(keys, dtype=np.float32)
    values = np.ascontiguousarray(values, dtype=np.float32)
    window = np.ascontiguousarray(window)
    if keys.ndim != 5 or values.shape != keys.shape:
        raise InputError(f"bank_keys {list(keys.shape)} / bank_values {list(values.shape)}: expected two equal "
                         "[depth, M, C, h, w] arrays (the bank_kv part's outputs)")
    if window.dtype != np.bool_ or window.shape != (rois.shape[0], keys.shape[1]):
        raise InputError(f"bank_window is {window.dtype} {list(window.shape)}; expected bool "
                         f"[R, M] = {[rois.shape[0], keys.shape[1]]}")
    return keys, values, window


class Runner:
    """Base class: activate/close (also a context manager), infer, timings, metadata."""

    name: str
    metadata: dict[str, Any]
    num_classes: int

    def __init__(self, name: str, num_classes: int, runtime: Runtime, precision: Precision):
        self.name = name
        self.num_classes = num_classes
        self._runtime = Runtime(runtime)
        self._precision = Precision(precision)
        self.metadata = {"runtime": self._runtime.value, "precision": self._precision.value,
                         "versions": {"acar_deploy": __version__}}
        self.last_inference_time: float = float("nan")
        self.last_stage_times: dict[str, float] = {}
        self.is_active = False
        self._warned_non_finite = False  # once per runner, not once per call

    # --- lifecycle -----------------------------------------------------------------------------
    def activate(self) -> None:
        if not self.is_active:
            self._activate()
            self.is_active = True

    def close(self) -> None:
        if self.is_active:
            self._close()
            self.is_active = False

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # --- what it is ----------------------------------------------------------------------------
    @property
    def runtime(self) -> Runtime:
        return self._runtime

    @property
    def precision(self) -> Precision:
        return self._precision

    @property
    def split(self) -> bool:
        """True when the backbone and the head run as two graphs (the head is skipped for R == 0)."""
        return True

    @property
    def supports_head_only(self) -> bool:
        """True when `infer_head` can run the head alone: a split runner that implements `_infer_head`."""
        return self.split and type(self)._infer_head is not Runner._infer_head

    @property
    def supports_bank(self) -> bool:
        """True when `infer` takes an acfb model's feature-bank window (`bank_entries`, `bank_window`)."""
        return type(self)._infer_bank is not Runner._infer_bank

    @property
    def supports_stored_kv(self) -> bool:
        """True when `infer` takes precomputed `bank_keys` / `bank_values` (K/V stored in the bank) and
        `project_bank` runs the bank_kv part alone."""
        return self.supports_bank and type(self)._infer_bank_projected is not Runner._infer_bank_projected

    def forget_bank_projections(self) -> None:
        """Drop the K/V this runner cached per bank entry, so that the next keyframe starts cold (a new
        video, or a timing that must include the projection). Runners without a cache have nothing to drop."""

    # --- inference -----------------------------------------------------------------------------
    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`{"clips", "rois"}` -> `{"logits", "scores"}`; an acfb model also takes its bank window:
        `bank_entries` [M, C, h, w] and `bank_window` [R, M] (bool: which entries each box attends), or
        instead of the entries their precomputed `bank_keys`, `bank_values` [depth, M, C, h, w] (the
        K/V stored by `acar-deploy bank project`; the bank_kv part is then skipped)."""
        self.activate()
        clips, rois = check_feeds(feeds)
        projected = "bank_keys" in feeds or "bank_values" in feeds
        bank = "bank_entries" in feeds or projected
        if bank and not self.supports_bank:
            raise InputError(f"{self.name}: this runner cannot run a feature-bank (acfb) model; use the eager runner "
                             "or ONNX Runtime on an acfb export folder")
        if projected and not self.supports_stored_kv:
            raise InputError(f"{self.name}: this runner cannot take precomputed bank_keys/bank_values; "
                             "feed bank_entries instead")
        start = time.perf_counter()
        if rois.shape[0] == 0:
            # No box in any clip: neither graph runs (TensorRT profiles need R >= 1; nothing to score).
            self.last_stage_times = {}
            outputs = {"logits": np.zeros((0, self.num_classes), np.float32)}
        elif projected:
            outputs = self._infer_bank_projected(clips, rois, *check_bank_kv(
                feeds.get("bank_keys"), feeds.get("bank_values"), feeds.get("bank_window"), rois))
        elif bank:
            outputs = self._infer_bank(clips, rois, *check_bank(feeds["bank_entries"], feeds.get("bank_window"), rois))
        elif self.split:
            outputs = self._infer_split(clips, rois)
        else:
            outputs = self._infer_fused(clips, rois)
        return self._finish(outputs, start)

    def project_bank(self, entries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bank entries [M, C, h, w] -> keys, values [depth, M, C, h, w] float32: the bank_kv part alone."""
        if not self.supports_stored_kv:
            raise InputError(f"{self.name}: this runner has no bank_kv part to run; use an acfb export folder, "
                             "an ORT/OpenVINO engine folder of one, or eager with an acfb checkpoint")
        self.activate()
        entries = np.ascontiguousarray(entries, dtype=np.float32)
        if not entries.flags.writeable:  # a memory-mapped bank slice: torch wants its own copy
            entries = entries.copy()
        if entries.ndim != 4:
            raise InputError(f"bank_entries has shape {list(entries.shape)}; expected [M, C, h, w]")
        keys, values = self._project_bank(entries)
        return np.asarray(keys, np.float32), np.asarray(values, np.float32)

    def infer_head(self, context: np.ndarray, rois: np.ndarray) -> dict[str, np.ndarray]:
        """context [B, C, h, w] + rois [R, 5] -> `{"logits", "scores"}` (for head-only latency)."""
        if not self.supports_head_only:
            raise InputError(f"{self.name}: this runner cannot run the head alone (fused graph); pass clips and rois")
        self.activate()
        context = np.ascontiguousarray(context, dtype=np.float32)
        _, rois = check_feeds({"clips": np.zeros((context.shape[0], 1, 1, 1, 1), np.float32), "rois": rois})
        if context.ndim != 4:
            raise InputError(f"context has shape {list(context.shape)}; expected [B, C, h, w]")
        start = time.perf_counter()
        if rois.shape[0] == 0:
            self.last_stage_times = {}
            outputs = {"logits": np.zeros((0, self.num_classes), np.float32)}
        else:
            outputs = self._infer_head(context, rois)
        return self._finish(outputs, start)

    def _finish(self, outputs: dict[str, np.ndarray], start: float) -> dict[str, np.ndarray]:
        if "scores" not in outputs:
            from acar_deploy.model.scores import action_scores

            outputs["scores"] = action_scores(np.asarray(outputs["logits"], np.float32))
        self.last_inference_time = time.perf_counter() - start
        if not self._warned_non_finite:
            self._warned_non_finite = warn_non_finite(outputs["scores"], self.name)
        return {"logits": np.asarray(outputs["logits"], np.float32), "scores": np.asarray(outputs["scores"], np.float32)}

    def _infer_head(self, context: np.ndarray, rois: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _infer_split(self, clips: np.ndarray, rois: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _infer_bank(self, clips: np.ndarray, rois: np.ndarray, entries: np.ndarray,
                    window: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _infer_bank_projected(self, clips: np.ndarray, rois: np.ndarray, keys: np.ndarray, values: np.ndarray,
                              window: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _project_bank(self, entries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _infer_fused(self, clips: np.ndarray, rois: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _activate(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError


def timed(stage_times: dict[str, float], stage: str, fn: Any, *args: Any) -> Any:
    start = time.perf_counter()
    result = fn(*args)
    stage_times[stage] = time.perf_counter() - start
    return result


def execution_details(metadata: dict[str, Any]) -> list[str]:
    """What a runner really ran with, for the bench and parity reports, where that can differ from
    the engine's label: OpenVINO's effective inference precision (a bf16 engine runs f32 on a CPU
    without native bf16) and any warning the runner recorded. Empty when there is nothing to add."""
    details = []
    if "inference_precision" in metadata:
        text = f"inference precision {metadata['inference_precision']} (engine {metadata.get('precision', '?')}"
        if "bf16_native" in metadata:
            text += f"; native bf16 on {metadata.get('cpu') or 'this CPU'}: {'yes' if metadata['bf16_native'] else 'no'}"
        details.append(text + ")")
    if metadata.get("warning"):
        details.append(f"warning: {metadata['warning']}")
    return details


class ExportedPartsLayout:
    """For runners of an export's part files (ORT, OpenVINO, TensorRT): split / bank / head-only
    follow from which parts the folder holds (`_split`, `_bank`, set in the runner's __init__).
    Listed before `Runner` in the bases so these properties take precedence."""

    _split: bool
    _bank: bool  # an acfb export: backbone, bank_kv, bank_head (no plain head)

    @property
    def split(self) -> bool:
        return self._split

    @property
    def supports_bank(self) -> bool:
        return self._bank

    @property
    def supports_head_only(self) -> bool:
        return self._split and not self._bank
