"""Per-clip latency of eager PyTorch and every given engine, measured in one interleaved run.

Why interleaved: on shared machines the speed drifts by up to 3x within minutes, so each timed
iteration runs every runtime once (round robin, starting runtime rotated per iteration) and the
ratio to eager is taken from the same run. The benchmark talks to runners only (`infer`,
`last_stage_times`, `metadata`); the eager model itself is used once, to count FLOPs.

Per iteration and runtime: one full `infer({"clips", "rois"})` at the primary actor count (the first
of `actors`); for every other actor count only the head runs (`infer({"context", "rois"})`) when the
runner accepts a context feed, otherwise the full pipeline runs again. The per-clip latency at a
secondary actor count is then `full - head(primary) + head(actors)` of the same iteration.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from acar_deploy.bench.environment import (
    collect_environment,
    load_average,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
)
from acar_deploy.bench.stats import PERCENTILE_METHOD_NOTE, LatencyStats, summarize
from acar_deploy.errors import InputError

EAGER = "eager"
# Reference rows built from the eager model itself, named among the engines: bf16 autocast, plain or
# with channels-last weights (`acar-deploy bench ENGINE... eager-bf16 eager-bf16-cl`).
EAGER_BF16_ROWS = {"eager-bf16": False, "eager-bf16-cl": True}
# Stage keys a runner may report, in display order; anything else is shown after them.
STAGE_ORDER = ("preprocess", "h2d", "backbone", "head", "d2h")
NOT_STAGES = ("wall", "total")  # whole-call times some runners add next to their stages  # SlowFast output stride with the dilated res5 (official ACAR backbone)


class Runner(Protocol):
    """The runner interface of docs/design.md, as far as the benchmark uses it."""

    name: str
    metadata: dict
    last_inference_time: float
    last_stage_times: dict[str, float]

    def activate(self) -> None: ...

    def close(self) -> None: ...

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class BenchSettings:
    """One benchmark run. `engines` are engine or export folders (anything `open_runner` opens)."""

    engines: tuple[str, ...] = ()
    checkpoint: Path | None = None  # eager weights; None: seeded random weights (latency only)
    config: str | None = None  # model config; None: the config recorded in the first engine
    actors: tuple[int, ...] = (8, 1, 32)  # the first is the primary count (full pipeline each iteration)
    clips: int = 1  # clips per inference call (B)
    size: tuple[int, int] = (256, 341)  # H, W of the clip tensor
    warmup: int = 2  # untimed iterations per runtime before the timed loop
    iters: int | None = 10  # timed iterations (each runs every runtime); ignored when `seconds` is set
    seconds: float | None = None  # time budget for the timed loop instead of a fixed count
    threads: int = 2  # torch intra-op threads and ORT intra_op_num_threads, for every runtime
    seed: int = 0
    count_flops: bool = True
    out: Path | None = None
    force: bool = False
    plots: bool = True

    def __post_init__(self) -> None:
        if not self.actors or min(self.actors) < 1:
            raise InputError(f"--actors must be positive integers, got {list(self.actors)}")
        if len(set(self.actors)) != len(self.actors):
            raise InputError(f"--actors has repeated values: {list(self.actors)}")
        if self.clips < 1:
            raise InputError(f"--clips must be >= 1, got {self.clips}")
        if min(self.size) < 16:
            raise InputError(f"--size must be at least 16x16 pixels, got {self.size[0]}x{self.size[1]}")
        if self.warmup < 0:
            raise InputError(f"--warmup must be >= 0, got {self.warmup}")
        if self.seconds is None and (self.iters is None or self.iters < 1):
            raise InputError("give --iters N (>= 1) or --seconds S")
        if self.seconds is not None and self.seconds <= 0:
            raise InputError(f"--seconds must be > 0, got {self.seconds}")
        if self.threads < 1:
            raise InputError(f"--threads must be >= 1, got {self.threads}")

    @property
    def primary_actors(self) -> int:
        return self.actors[0]


@dataclass(frozen=True)
class ActorCountResult:
    """Latency of one runtime at one actor count (per inference call of `clips` clips)."""

    actors: int
    latency: LatencyStats  # per call (B clips)
    per_clip: LatencyStats  # latency / B
    head: LatencyStats | None  # the head stage alone, when the runner reports it
    throughput_clips_per_s: float
    ratio_to_eager: float | None  # mean / eager mean, same run
    measured: str  # "full" (whole pipeline timed) or "head-only" (full - head(primary) + head(A))
    clips: int = 1  # clips per call, so per-actor head cost can be derived
    samples: tuple[float, ...] = ()  # the per-call latencies the statistics summarise, in order
    ratio_to_eager_p50: float | None = None  # robust companions of the mean ratio on a loaded machine
    ratio_to_eager_min: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "actors": self.actors,
            "latency_s": self.latency.to_dict(),
            "per_clip_s": self.per_clip.to_dict(),
            "head_s": None if self.head is None else self.head.to_dict(),
            "head_per_actor_s": None if self.head is None else self.head.mean / (self.actors * self.clips),
            "throughput_clips_per_s": self.throughput_clips_per_s,
            "ratio_to_eager": self.ratio_to_eager,
            "ratio_to_eager_p50": self.ratio_to_eager_p50,
            "ratio_to_eager_min": self.ratio_to_eager_min,
            "measured": self.measured,
            "samples_s": list(self.samples),
        }


@dataclass(frozen=True)
class RuntimeResult:
    name: str
    source: str
    metadata: dict[str, Any]
    by_actors: tuple[ActorCountResult, ...]
    stages_s: dict[str, float]  # mean seconds per stage at the primary actor count (+ "other")
    gflops_per_s: dict[str, float]  # achieved, per stage, from the eager FLOP count
    head_only: bool
    cuda_graphs: bool | None
    memory: dict[str, int | None]
    head_slope_s_per_actor: float | None = None  # least-squares slope of head time over actors per clip

    def at(self, actors: int) -> ActorCountResult:
        return next(r for r in self.by_actors if r.actors == actors)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "metadata": self.metadata,
            "head_only_supported": self.head_only,
            "cuda_graphs": self.cuda_graphs,
            "stages_s": self.stages_s,
            "gflops_per_s": self.gflops_per_s,
            "memory_bytes": self.memory,
            "head_slope_s_per_actor": self.head_slope_s_per_actor,
            "by_actors": [r.to_dict() for r in self.by_actors],
        }


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of the eager model at the benchmark's input size (1 multiply-accumulate = 2 FLOPs).

    The head has a per-clip part (conv_reduce on the context map) and a per-actor part (conv1/conv2
    on the [context, actor] map, HR2O); `head_marginal_per_actor` = F(2 actors) - F(1 actor).
    """

    backbone_per_clip: float
    head_by_actors: dict[int, float]  # whole head call for `actors` actors per clip, per clip
    head_marginal_per_actor: float

    def head_per_actor(self, actors: int) -> float:
        return self.head_by_actors[actors] / actors

    def to_dict(self) -> dict[str, Any]:
        return {
            "convention": "torch.utils.flop_counter.FlopCounterMode; 1 MAC = 2 FLOP; RoIAlign not counted",
            "backbone_gflop_per_clip": self.backbone_per_clip / 1e9,
            "head_gflop_per_clip": {str(a): f / 1e9 for a, f in self.head_by_actors.items()},
            "head_gflop_per_actor_average": {str(a): f / a / 1e9 for a, f in self.head_by_actors.items()},
            "head_gflop_marginal_per_actor": self.head_marginal_per_actor / 1e9,
        }


@dataclass(frozen=True)
class BenchResult:
    settings: BenchSettings
    environment: dict[str, Any]
    runtimes: tuple[RuntimeResult, ...]
    preprocess: LatencyStats | None  # uint8 frames -> normalised float clip, per clip
    flops: FlopCount | None
    iterations: int
    wall_s: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    def runtime(self, name: str) -> RuntimeResult:
        return next(r for r in self.runtimes if r.name == name)

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        return {
            "format": "acar-deploy-bench",
            "format_version": 1,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "settings": {
                "engines": list(s.engines),
                "checkpoint": None if s.checkpoint is None else str(s.checkpoint),
                "config": s.config,
                "actors": list(s.actors),
                "primary_actors": s.primary_actors,
                "clips": s.clips,
                "size": list(s.size),
                "warmup": s.warmup,
                "iters": s.iters,
                "seconds": s.seconds,
                "threads": s.threads,
                "seed": s.seed,
            },
            "methodology": {
                "timer": "time.perf_counter around runner.infer (host wall clock, outputs on host)",
                "interleaving": "round robin per iteration, starting runtime rotated each iteration",
                "warmup": f"{s.warmup} untimed iterations per runtime, run alone, before the timed loop",
                "percentiles": PERCENTILE_METHOD_NOTE,
                "per_clip": "latency of one call divided by the clips per call",
                "secondary_actor_counts": "full(primary) - head(primary) + head(actors), same iteration",
                "ratio_to_eager": "runtime mean / eager mean at the same actor count, same run",
                "memory": "VmHWM from /proc/self/status, reset before each runtime's solo warm-up",
            },
            "iterations": self.iterations,
            "wall_s": self.wall_s,
            "environment": self.environment,
            "preprocess_s": None if self.preprocess is None else self.preprocess.to_dict(),
            "flops": None if self.flops is None else self.flops.to_dict(),
            "runtimes": [r.to_dict() for r in self.runtimes],
            "notes": list(self.notes),
        }


# --- inputs -------------------------------------------------------------------------------------


def make_rois(clips: int, actors: int, rng: np.random.Generator) -> np.ndarray:
    """`actors` person-like boxes per clip, `(batch_index, x1, y1, x2, y2)` normalised to [0, 1]."""
    rows = []
    for b in range(clips):
        w = rng.uniform(0.1, 0.4, actors)
        h = rng.uniform(0.3, 0.9, actors)
        x1 = rng.uniform(0.0, 1.0 - w)
        y1 = rng.uniform(0.0, 1.0 - h)
        rows.append(np.stack([np.full(actors, b, float), x1, y1, x1 + w, y1 + h], 1))
    return np.concatenate(rows).astype(np.float32)


def context_shape(config: Any, clips: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Backbone output `[B, C_ctx, h, w]`: each of the four stride-2 ops maps n -> ceil(n / 2)."""
    h, w = size
    for _ in range(4):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return clips, int(config.backbone.context_channels), h, w


@dataclass(frozen=True)
class _Inputs:
    clips: np.ndarray
    context: np.ndarray
    rois: dict[int, np.ndarray]


def _make_inputs(settings: BenchSettings, config: Any) -> _Inputs:
    rng = np.random.default_rng(settings.seed)
    h, w = settings.size
    num_frames = int(getattr(getattr(config, "input", None), "num_frames", 32))
    clips = rng.standard_normal((settings.clips, 3, num_frames, h, w), dtype=np.float32)
    # Context after ReLU + temporal mean is non-negative; values only matter for realism, not shape.
    context = np.abs(rng.standard_normal(context_shape(config, settings.clips, settings.size), dtype=np.float32))
    rois = {a: make_rois(settings.clips, a, rng) for a in settings.actors}
    return _Inputs(clips, context, rois)


# --- preprocessing and FLOPs ---------------------------------------------------------------------


def time_preprocess(config: Any, settings: BenchSettings, repeats: int = 3) -> LatencyStats:
    """Time the data pipeline's uint8 frames -> normalised `[3, T, H, W]` float clip, per clip."""
    from PIL import Image

    from acar_deploy.data.clips import ClipSpec, frames_to_clip

    spec = ClipSpec.from_model_config(config, short_side=min(settings.size))
    rng = np.random.default_rng(settings.seed + 1)
    h, w = settings.size
    num_frames = int(getattr(getattr(config, "input", None), "num_frames", 32))
    frames = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for _ in range(num_frames)]
    frames_to_clip(frames, spec)  # warm caches and allocator
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        frames_to_clip(frames, spec)
        samples.append(time.perf_counter() - start)
    return summarize(samples)


def count_flops(model: Any, inputs: _Inputs) -> FlopCount:
    """Count backbone and head FLOPs of the eager model on the benchmark's own inputs."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    clips = torch.from_numpy(inputs.clips)
    with torch.inference_mode():
        counter = FlopCounterMode(display=False)
        with counter:
            context = model.context(clips)
        backbone = counter.get_total_flops() / clips.shape[0]
        head: dict[int, float] = {}
        rng = np.random.default_rng(0)
        extra = {a: make_rois(clips.shape[0], a, rng) for a in (1, 2) if a not in inputs.rois}
        for actors, rois in {**inputs.rois, **extra}.items():
            counter = FlopCounterMode(display=False)
            with counter:
                model.head(context, torch.from_numpy(rois.copy()))
            head[actors] = counter.get_total_flops() / clips.shape[0]
    marginal = head[2] - head[1]
    return FlopCount(float(backbone), {a: head[a] for a in inputs.rois}, float(marginal))


# --- runners ------------------------------------------------------------------------------------


def contention_note(load: float, threads: int) -> str:
    """Why figures taken on a busy machine mislead: eager's OpenMP barriers suffer most."""
    return (f"load average {load:.1f} while timing with {threads} threads on {os.cpu_count()} CPUs: other "
            "processes competed for the cores; eager PyTorch (OpenMP threads wait at barriers for a descheduled "
            "peer) slows far more than ONNX Runtime, so ratios to eager are biased in the engines' favour. "
            "Rerun on an idle machine, or with --threads 1.")


def open_engine_runner(source: str, threads: int) -> Runner:
    """`open_runner(source)` with ONNX Runtime's intra-op threads set (runtimes without it ignore it).

    ORT's pool threads would spin-wait after each call and steal the cores from the runtime timed
    next in the interleaved loop, so the benchmark turns spinning off for every ORT session.
    """
    from acar_deploy.engines.open_runner import open_runner

    try:
        return open_runner(source, intra_op_num_threads=threads, allow_spinning=False)
    except TypeError:  # a runner without a thread option (TensorRT: the GPU does the work)
        return open_runner(source)


def open_benchmark_runners(settings: BenchSettings) -> tuple[dict[str, Runner], dict[str, str], Any, Any]:
    """Open eager plus every engine; return runners by name, their sources, the config and eager model."""
    from acar_deploy.engines.eager import EagerRunner
    from acar_deploy.model.acar import build_model
    from acar_deploy.model.checkpoint import load_model
    from acar_deploy.model.config import get_config

    engine_runners = [(source, open_engine_runner(source, settings.threads))
                      for source in settings.engines if source not in EAGER_BF16_ROWS]
    if settings.checkpoint is not None:
        model = load_model(settings.checkpoint, settings.config)
        config = model.config
    else:
        import torch

        if settings.config is not None:
            config = get_config(settings.config)
        else:
            config = _config_from_runners([r for _, r in engine_runners])
        torch.manual_seed(settings.seed)
        model = build_model(config).eval()
    eager = EagerRunner(model, name=EAGER, num_threads=settings.threads)
    for source in settings.engines:
        if source in EAGER_BF16_ROWS:
            import copy

            from acar_deploy.engines.eager_bf16 import EagerBf16Runner

            bf16_model = copy.deepcopy(model) if EAGER_BF16_ROWS[source] else model  # channels-last converts weights
            engine_runners.append((source, EagerBf16Runner(bf16_model, name=source, num_threads=settings.threads,
                                                           channels_last=EAGER_BF16_ROWS[source])))

    runners: dict[str, Runner] = {EAGER: eager}
    sources: dict[str, str] = {
        EAGER: f"eager:{settings.checkpoint}" if settings.checkpoint else "eager (seeded random weights)"
    }
    for source, runner in engine_runners:
        name = source if source in EAGER_BF16_ROWS else runtime_label(runner, source)
        if name in runners:  # e.g. an export folder and an fp32 engine: both "ort-fp32"
            name = f"{name}:{Path(source).name}"
        base, n = name, 2
        while name in runners:
            name, n = f"{base}-{n}", n + 1
        runners[name] = runner
        sources[name] = source
    return runners, sources, config, model


def _config_from_runners(runners: Sequence[Runner]) -> Any:
    from acar_deploy.model.config import ModelConfig, get_config

    for runner in runners:
        meta = getattr(runner, "metadata", {}) or {}
        folder = getattr(runner, "folder", None)
        manifest = getattr(folder, "manifest", None) or meta.get("manifest") or {}
        data = manifest.get("config") or meta.get("config")
        if isinstance(data, dict):
            return ModelConfig.from_dict(data, source=f"{meta.get('path', 'engine')} manifest")
        name = manifest.get("model_name") or meta.get("model_name")
        if isinstance(name, str):
            return get_config(name)
    raise InputError("no --config given and no engine records its model config: pass --config NAME_OR_YAML")


def runtime_label(runner: Any, source: str = "") -> str:
    """`<runtime>-<precision>` from runner metadata, e.g. `ort-int8`, `trt-fp16`, `eager-fp32`."""
    meta = getattr(runner, "metadata", {}) or {}
    runtime = str(meta.get("runtime") or getattr(runner, "name", "") or Path(source).name or "engine").lower()
    runtime = {"onnxruntime": "ort", "tensorrt": "trt", "pytorch": "eager", "torch": "eager"}.get(runtime, runtime)
    precision = meta.get("precision")
    return f"{runtime}-{str(precision).lower()}" if precision and not runtime.endswith(str(precision)) else runtime


def _supports_head_only(runner: Runner, inputs: _Inputs, actors: int) -> bool:
    """Whether `infer({"context", "rois"})` runs the head alone (split engines, eager)."""
    try:
        out = runner.infer({"context": inputs.context, "rois": inputs.rois[actors]})
    except Exception:  # noqa: BLE001 - any refusal means "not supported"; the full path is used instead
        return False
    logits = out.get("logits") if isinstance(out, Mapping) else None
    return logits is not None and np.shape(logits)[0] == inputs.rois[actors].shape[0]


# --- measurement --------------------------------------------------------------------------------


@dataclass
class _Samples:
    full: list[float] = field(default_factory=list)
    stages: list[dict[str, float]] = field(default_factory=list)
    head: dict[int, list[float]] = field(default_factory=dict)
    full_by_actors: dict[int, list[float]] = field(default_factory=dict)


def _timed(runner: Runner, feeds: dict[str, np.ndarray]) -> tuple[float, dict[str, float]]:
    start = time.perf_counter()
    runner.infer(feeds)
    elapsed = time.perf_counter() - start
    return elapsed, dict(getattr(runner, "last_stage_times", {}) or {})


def _one_iteration(
    runner: Runner, inputs: _Inputs, settings: BenchSettings, head_only: bool, samples: _Samples
) -> None:
    primary = settings.primary_actors
    elapsed, stages = _timed(runner, {"clips": inputs.clips, "rois": inputs.rois[primary]})
    samples.full.append(elapsed)
    samples.stages.append(stages)
    samples.full_by_actors.setdefault(primary, []).append(elapsed)
    if "head" in stages:
        samples.head.setdefault(primary, []).append(stages["head"])
    for actors in settings.actors[1:]:
        if head_only:
            elapsed, stages = _timed(runner, {"context": inputs.context, "rois": inputs.rois[actors]})
            samples.head.setdefault(actors, []).append(stages.get("head", elapsed))
        else:
            elapsed, stages = _timed(runner, {"clips": inputs.clips, "rois": inputs.rois[actors]})
            samples.full_by_actors.setdefault(actors, []).append(elapsed)
            if "head" in stages:
                samples.head.setdefault(actors, []).append(stages["head"])


def _gpu_memory_used() -> int | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    return int(total - free)


def _iterations(settings: BenchSettings) -> Iterator[int]:
    if settings.seconds is None:
        yield from range(int(settings.iters or 1))
        return
    deadline = time.perf_counter() + settings.seconds
    i = 0
    while i < 2 or time.perf_counter() < deadline:
        yield i
        i += 1


def benchmark_runners(
    runners: Mapping[str, Runner],
    settings: BenchSettings,
    config: Any,
    model: Any | None = None,
    sources: Mapping[str, str] | None = None,
    progress: bool = True,
) -> BenchResult:
    """Time already-open runners (the first named `eager` is the baseline) on identical inputs."""
    import torch

    if EAGER not in runners:
        raise InputError("the benchmark needs an eager runner named 'eager' as its baseline")
    torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    load_at_start = load_average()
    inputs = _make_inputs(settings, config)
    names = list(runners)
    notes: list[str] = []

    for runner in runners.values():
        if hasattr(runner, "activate"):
            runner.activate()

    head_only = {n: len(settings.actors) > 1 and _supports_head_only(r, inputs, settings.actors[1])
                 for n, r in runners.items()}
    for n, ok in head_only.items():
        if len(settings.actors) > 1 and not ok:
            notes.append(f"{n}: no head-only path; every actor count ran the full pipeline")

    memory: dict[str, dict[str, int | None]] = {}
    samples = {n: _Samples() for n in names}
    iterations = 0
    with _progress(progress) as bar:
        warm_task = bar.add_task("warm-up", total=max(1, settings.warmup) * len(names))
        for n in names:  # solo warm-up per runtime; also its peak memory
            gpu_before = _gpu_memory_used()
            can_reset = reset_peak_rss()
            for _ in range(max(1, settings.warmup)):
                _one_iteration(runners[n], inputs, settings, head_only[n], _Samples())
                bar.advance(warm_task)
            gpu_after = _gpu_memory_used()
            memory[n] = {
                "peak_rss": peak_rss_bytes() if can_reset else None,
                "rss_after_warmup": rss_bytes(),
                "gpu_used": gpu_after,
                "gpu_used_delta": None if gpu_after is None or gpu_before is None else gpu_after - gpu_before,
            }
        total = None if settings.seconds is not None else settings.iters
        task = bar.add_task("timed (interleaved)", total=total)
        for i in _iterations(settings):
            shift = i % len(names)
            for n in names[shift:] + names[:shift]:
                _one_iteration(runners[n], inputs, settings, head_only[n], samples[n])
            iterations += 1
            bar.advance(task)

    flops = None
    if settings.count_flops and model is not None:
        flops = count_flops(model, inputs)
    try:
        preprocess = time_preprocess(config, settings)
    except ImportError as exc:  # pragma: no cover - the data layer is part of the package
        preprocess = None
        notes.append(f"preprocessing not timed: {exc}")

    load_at_end = load_average()
    busiest = max((load[0] for load in (load_at_start, load_at_end) if load), default=0.0)
    if busiest > (os.cpu_count() or 1) - settings.threads + 1:
        notes.append(contention_note(busiest, settings.threads))

    results = _summarise(runners, samples, settings, head_only, memory, flops, preprocess, sources or {})
    return BenchResult(
        settings=settings,
        environment={**collect_environment(settings.threads), "load_average_at_start": load_at_start},
        runtimes=results,
        preprocess=preprocess,
        flops=flops,
        iterations=iterations,
        wall_s=time.perf_counter() - started,
        notes=tuple(notes),
    )


def _per_actor_totals(s: _Samples, settings: BenchSettings, head_only: bool) -> dict[int, tuple[list[float], str]]:
    primary = settings.primary_actors
    totals: dict[int, tuple[list[float], str]] = {primary: (s.full, "full")}
    for actors in settings.actors[1:]:
        if head_only and primary in s.head and actors in s.head:
            composed = [f - hp + ha for f, hp, ha in zip(s.full, s.head[primary], s.head[actors], strict=True)]
            totals[actors] = (composed, "head-only")
        else:
            totals[actors] = (s.full_by_actors[actors], "full")
    return totals


def _summarise(
    runners: Mapping[str, Runner],
    samples: Mapping[str, _Samples],
    settings: BenchSettings,
    head_only: Mapping[str, bool],
    memory: Mapping[str, dict[str, int | None]],
    flops: FlopCount | None,
    preprocess: LatencyStats | None,
    sources: Mapping[str, str],
) -> tuple[RuntimeResult, ...]:
    B = settings.clips
    eager_totals = _per_actor_totals(samples[EAGER], settings, head_only[EAGER])
    eager_mean = {a: float(np.mean(v)) for a, (v, _) in eager_totals.items()}
    eager_stats = {a: summarize(v) for a, (v, _) in eager_totals.items()}
    out = []
    for name, runner in runners.items():
        s = samples[name]
        totals = _per_actor_totals(s, settings, head_only[name])
        by_actors = []
        for actors in settings.actors:
            values, how = totals[actors]
            stats = summarize(values)
            head = summarize(s.head[actors]) if s.head.get(actors) else None
            by_actors.append(ActorCountResult(
                actors=actors,
                latency=stats,
                per_clip=stats.scaled(1.0 / B),
                head=head,
                throughput_clips_per_s=B / stats.mean,
                ratio_to_eager=stats.mean / eager_mean[actors],
                measured=how,
                clips=B,
                samples=tuple(float(v) for v in values),
                ratio_to_eager_p50=stats.p50 / eager_stats[actors].p50,
                ratio_to_eager_min=stats.min / eager_stats[actors].min,
            ))
        stage_keys = sorted({k for st in s.stages for k in st if k not in NOT_STAGES}, key=_stage_rank)
        stages = {k: float(np.mean([st.get(k, 0.0) for st in s.stages])) for k in stage_keys}
        if preprocess is not None:
            stages = {"preprocess": preprocess.mean * B, **stages}
        timed_stages = sum(v for k, v in stages.items() if k != "preprocess")
        stages["other"] = max(0.0, float(np.mean(s.full)) - timed_stages)
        head_points = [(r.actors, r.head.mean / B) for r in by_actors if r.head is not None]
        slope = None
        if len(head_points) >= 2:
            xs, ys = np.array(head_points, np.float64).T
            slope = float(np.polyfit(xs, ys, 1)[0])
        meta = dict(getattr(runner, "metadata", {}) or {})
        meta.pop("manifest", None)  # the full manifest is in the engine folder; keep the JSON readable
        out.append(RuntimeResult(
            name=name,
            source=sources.get(name, name),
            metadata=meta,
            by_actors=tuple(by_actors),
            stages_s=stages,
            gflops_per_s=_achieved_gflops(stages, flops, settings),
            head_only=head_only[name],
            cuda_graphs=meta.get("cuda_graphs", meta.get("cuda_graph")),
            memory=dict(memory[name]),
            head_slope_s_per_actor=slope,
        ))
    return tuple(out)


def _stage_rank(key: str) -> tuple[int, str]:
    return (STAGE_ORDER.index(key) if key in STAGE_ORDER else len(STAGE_ORDER), key)


def _achieved_gflops(stages: Mapping[str, float], flops: FlopCount | None, settings: BenchSettings) -> dict[str, float]:
    if flops is None:
        return {}
    B, primary = settings.clips, settings.primary_actors
    achieved = {}
    if stages.get("backbone"):
        achieved["backbone"] = flops.backbone_per_clip * B / stages["backbone"] / 1e9
    if stages.get("head"):
        achieved["head"] = flops.head_by_actors[primary] * B / stages["head"] / 1e9
    return achieved


class _NoProgress:
    def add_task(self, *_: Any, **__: Any) -> int:
        return 0

    def advance(self, *_: Any) -> None:
        pass


class _progress:
    """A rich progress bar on stderr, or nothing (tests, JSON output)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._bar: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return _NoProgress()
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=Console(stderr=True), transient=True,
        )
        return self._bar.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def run_benchmark(settings: BenchSettings, progress: bool = True) -> BenchResult:
    """Open eager and every engine, time them interleaved, and write the report when `out` is set."""
    from acar_deploy.artifacts import check_can_write

    if settings.out is not None:
        check_can_write(Path(settings.out), settings.force)  # fail before minutes of timing
    runners, sources, config, model = open_benchmark_runners(settings)
    try:
        result = benchmark_runners(runners, settings, config, model=model, sources=sources, progress=progress)
    finally:
        for runner in runners.values():
            if hasattr(runner, "close"):
                runner.close()
    if settings.out is not None:
        from acar_deploy.bench.report import write_bench_report

        write_bench_report(result, Path(settings.out), force=settings.force)
    return result
