"""Bank benchmark of an acfb model: per-keyframe latency of the bank head as a function of M entries.

What deployment pays per keyframe (docs/bank.md, "Per-keyframe head cost"): the backbone, the
bank head on K/V that were projected earlier (each entry once while it stays in the window), and
the projection of the entries new to this window. So per runtime, entry count M and actor count A
the loop times, through `Runner.infer` with `bank_entries` / `bank_window` feeds:

- a *cold* call (primary actor count): entries the runner has not seen, so its `bank_kv` stage
  projects all of them; its time / entries is the K/V cost per entry;
- a *warm* call per actor count: the same entries again, so K/V come from the runner's per-entry
  cache; the call is the keyframe latency with K/V precomputed, its `head` stage the bank head alone.

Eager runs `ACFBHead.project_bank` once per entry (`BankProjectionCache`, as the ONNX Runtime and
OpenVINO runners do) and `ACFBHead.forward_projected` per keyframe (`EagerProjectedBankRunner`), so
all rows run the same algorithm. Runtimes are interleaved per iteration as in `latency.py`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from acar_deploy.bench.bank_replay import BankReplayResult, open_replay_bank, replay_video, run_replay
from acar_deploy.bench.environment import collect_environment, load_average
from acar_deploy.bench.inputs import context_shape, make_rois
from acar_deploy.bench.latency import contention_note
from acar_deploy.bench.results import EAGER, BenchSettings
from acar_deploy.bench.stats import PERCENTILE_METHOD_NOTE, LatencyStats, summarize
from acar_deploy.engines.runners.bank_cache import BankProjectionCache
from acar_deploy.engines.runners.base import Runner, RunnerOptions
from acar_deploy.errors import InputError
from acar_deploy.formats.enums import Precision, Runtime
from acar_deploy.formats.manifest import BankGeometry
from acar_deploy.progress import progress_bar

# --- eager row ----------------------------------------------------------------------------------


class EagerProjectedBankRunner(Runner):
    """The eager row: backbone, K/V by `ACFBHead.project_bank` for entries new to the window, then
    `ACFBHead.forward_projected` -- the deploy algorithm of the engines, in PyTorch."""

    def __init__(self, model: Any, name: str = EAGER, options: RunnerOptions = RunnerOptions()):
        super().__init__(name, int(model.config.head.num_classes), Runtime.EAGER, Precision.FP32)
        self.model = model
        self.options = options
        self.bank_cache = BankProjectionCache()
        self.metadata.update({"provider": "eager", "device": "cpu", "bank": "project_bank + forward_projected"})

    def _activate(self) -> None:
        import torch

        if self.options.threads:
            torch.set_num_threads(self.options.threads)
        self.model = self.model.eval().float()
        self.metadata["versions"]["torch"] = torch.__version__

    def forget_bank_projections(self) -> None:
        self.bank_cache.clear()

    def _close(self) -> None:
        self.bank_cache.clear()

    def _project(self, entries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.inference_mode():
            keys, values = self.model.head.project_bank(torch.from_numpy(entries))
        return keys.numpy(), values.numpy()

    def _infer_bank(self, clips: np.ndarray, rois: np.ndarray, entries: np.ndarray,
                    window: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        stages: dict[str, float] = {}
        with torch.inference_mode():
            start = time.perf_counter()
            context = self.model.context(torch.from_numpy(clips))
            stages["backbone"] = time.perf_counter() - start
            start = time.perf_counter()
            keys, values = self.bank_cache.keys_values(entries, self._project)
            stages["bank_kv"] = time.perf_counter() - start
            start = time.perf_counter()
            logits = self.model.head.forward_projected(
                context, torch.from_numpy(rois.copy()), torch.from_numpy(keys), torch.from_numpy(values),
                torch.from_numpy(window))
            stages["head"] = time.perf_counter() - start
        self.last_stage_times = stages
        return {"logits": logits.numpy()}


# --- inputs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BankInputs:
    """Clips, boxes per actor count, two distinct entry sets per M (a cold call always misses the
    K/V cache) and the window per (M, actors): every box of clip b attends the M entries of clip b."""

    clips: np.ndarray
    rois: dict[int, np.ndarray]
    entries: dict[int, tuple[np.ndarray, np.ndarray]]
    windows: dict[tuple[int, int], np.ndarray]
    geometry: BankGeometry


def bank_geometry(config: Any, size: tuple[int, int]) -> BankGeometry:
    """The entry shape an export of `config` at frame `size` takes (same formula as the export)."""
    _, _, h, w = context_shape(config, 1, size)
    return BankGeometry.for_head(asdict(config.head), (h, w))


def make_bank_inputs(settings: BenchSettings, config: Any) -> BankInputs:
    from acar_deploy.export.specs import random_bank_entries

    rng = np.random.default_rng(settings.seed)
    geometry = bank_geometry(config, settings.size)
    B = settings.clips
    h, w = settings.size
    clips = rng.standard_normal((B, 3, int(config.input.num_frames), h, w), dtype=np.float32)
    rois = {a: make_rois(B, a, rng) for a in settings.actors}
    shape = (geometry.channels, *geometry.size)
    entries = {m: (random_bank_entries(rng, B * m, shape), random_bank_entries(rng, B * m, shape))
               for m in settings.bank_entries}
    windows = {}
    for m in settings.bank_entries:
        entry_clip = np.repeat(np.arange(B), m)
        for a in settings.actors:
            windows[(m, a)] = rois[a][:, :1].astype(np.int64) == entry_clip[None, :]
    return BankInputs(clips, rois, entries, windows, geometry)


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BankPoint:
    """One runtime at M entries and A actors per keyframe (per clip: call / B)."""

    entries: int
    actors: int
    keyframe: LatencyStats  # whole call with K/V from the cache (backbone + lookup + bank head)
    head: LatencyStats | None  # the runner's `head` stage: the bank head on precomputed K/V
    lookup: LatencyStats | None  # the runner's `bank_kv` stage on a warm call (cache lookup)
    ratio_to_eager: float | None  # keyframe mean / eager keyframe mean, same run
    head_ratio_to_eager: float | None
    samples: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        def stats(s: LatencyStats | None) -> dict[str, Any] | None:
            return None if s is None else s.to_dict()

        return {"entries": self.entries, "actors": self.actors, "keyframe_s": stats(self.keyframe),
                "head_s": stats(self.head), "kv_lookup_s": stats(self.lookup),
                "ratio_to_eager": self.ratio_to_eager, "head_ratio_to_eager": self.head_ratio_to_eager,
                "samples_s": list(self.samples)}


@dataclass(frozen=True)
class BankRuntimeResult:
    name: str
    source: str
    metadata: dict[str, Any]
    points: tuple[BankPoint, ...]
    kv_per_entry: dict[int, LatencyStats]  # M -> the cold call's bank_kv stage / entries projected (M > 0)

    def at(self, entries: int, actors: int) -> BankPoint:
        return next(p for p in self.points if p.entries == entries and p.actors == actors)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "metadata": self.metadata,
                "points": [p.to_dict() for p in self.points],
                "kv_per_entry_s": {str(m): s.to_dict() for m, s in self.kv_per_entry.items()}}


@dataclass(frozen=True)
class BankBenchResult:
    settings: BenchSettings
    environment: dict[str, Any]
    geometry: BankGeometry
    runtimes: tuple[BankRuntimeResult, ...]
    iterations: int
    wall_s: float
    notes: tuple[str, ...] = field(default_factory=tuple)
    replay: BankReplayResult | None = None  # settings.bank: one real video's keyframes (bench/bank_replay.py)

    def runtime(self, name: str) -> BankRuntimeResult:
        return next(r for r in self.runtimes if r.name == name)

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        return {
            "format": "acar-deploy-bench-bank",
            "format_version": 1,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "settings": {"engines": list(s.engines), "checkpoint": None if s.checkpoint is None else str(s.checkpoint),
                         "config": s.config, "bank_entries": list(s.bank_entries), "actors": list(s.actors),
                         "clips": s.clips, "size": list(s.size), "warmup": s.warmup, "iters": s.iters,
                         "seconds": s.seconds, "threads": s.threads, "seed": s.seed,
                         "bank": None if s.bank is None else str(s.bank), "bank_video": s.bank_video,
                         "bank_keyframes": s.bank_keyframes},
            "bank": {"entry_shape": [self.geometry.channels, *self.geometry.size], "depth": self.geometry.depth},
            "methodology": {
                "feeds": "random bank entries of the export's entry shape; every box attends the M entries of its clip",
                "keyframe": "runner.infer with K/V already in the runner's per-entry cache (same entries as the "
                            "previous call), per clip",
                "head": "the runner's 'head' stage of that call: bank_head on precomputed K/V",
                "kv_per_entry": "the runner's 'bank_kv' stage on a call with entries it has not seen / entries",
                "eager": "ACFBHead.project_bank once per entry + ACFBHead.forward_projected per keyframe",
                "interleaving": "round robin per iteration, starting runtime rotated each iteration",
                "percentiles": PERCENTILE_METHOD_NOTE,
            },
            "iterations": self.iterations,
            "wall_s": self.wall_s,
            "environment": self.environment,
            "runtimes": [r.to_dict() for r in self.runtimes],
            "notes": list(self.notes),
            "replay": None if self.replay is None else self.replay.to_dict(),
        }


# --- measurement --------------------------------------------------------------------------------


@dataclass
class _BankSamples:
    keyframe: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    head: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    lookup: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    kv: dict[int, list[float]] = field(default_factory=dict)


def _bank_iteration(runner: Runner, inputs: BankInputs, settings: BenchSettings, i: int,
                    samples: _BankSamples) -> None:
    primary = settings.primary_actors
    for m in settings.bank_entries:
        entries = inputs.entries[m][i % 2]  # differs from the previous call's: a cold projection
        feeds = {"clips": inputs.clips, "rois": inputs.rois[primary], "bank_entries": entries,
                 "bank_window": inputs.windows[(m, primary)]}
        runner.infer(feeds)
        if m and "bank_kv" in runner.last_stage_times:
            samples.kv.setdefault(m, []).append(runner.last_stage_times["bank_kv"] / entries.shape[0])
        for a in settings.actors:
            start = time.perf_counter()
            runner.infer({**feeds, "rois": inputs.rois[a], "bank_window": inputs.windows[(m, a)]})
            elapsed = time.perf_counter() - start
            stages = runner.last_stage_times
            samples.keyframe.setdefault((m, a), []).append(elapsed)
            if "head" in stages:
                samples.head.setdefault((m, a), []).append(stages["head"])
            if "bank_kv" in stages:
                samples.lookup.setdefault((m, a), []).append(stages["bank_kv"])


def check_bank_runners(runners: Mapping[str, Runner], settings: BenchSettings) -> None:
    for name, runner in runners.items():
        if not runner.supports_bank:
            raise InputError(f"{name}: this runner cannot run an acfb (feature-bank) model; bench acfb export or "
                             "engine folders of ONNX Runtime, OpenVINO or TensorRT")


def benchmark_bank_runners(
    runners: Mapping[str, Runner],
    settings: BenchSettings,
    config: Any,
    sources: Mapping[str, str] | None = None,
    progress: bool = True,
) -> BankBenchResult:
    """Time already-open bank-capable runners (the one named `eager` is the baseline) on identical feeds."""
    import torch

    if EAGER not in runners:
        raise InputError("the benchmark needs an eager runner named 'eager' as its baseline")
    check_bank_runners(runners, settings)
    torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    load_at_start = load_average()
    inputs = make_bank_inputs(settings, config)
    replay_bank = None if settings.bank is None else open_replay_bank(Path(settings.bank), inputs.geometry)
    replay_video_id = None if replay_bank is None else replay_video(replay_bank, settings.bank_video)
    names = list(runners)
    for runner in runners.values():
        runner.activate()
    samples = {n: _BankSamples() for n in names}
    iterations = 0
    with progress_bar(progress) as bar:
        warm_task = bar.add_task("warm-up", total=max(1, settings.warmup) * len(names))
        for n in names:
            for w in range(max(1, settings.warmup)):
                _bank_iteration(runners[n], inputs, settings, w, _BankSamples())
                bar.advance(warm_task)
        task = bar.add_task("timed (interleaved)", total=None if settings.seconds is not None else settings.iters)
        deadline = None if settings.seconds is None else time.perf_counter() + settings.seconds
        while True:
            if deadline is None and iterations >= int(settings.iters or 1):
                break
            if deadline is not None and iterations >= 2 and time.perf_counter() >= deadline:
                break
            shift = iterations % len(names)
            for n in names[shift:] + names[:shift]:  # numbered after the warm-up: each cold call switches entry set
                _bank_iteration(runners[n], inputs, settings, max(1, settings.warmup) + iterations, samples[n])
            iterations += 1
            bar.advance(task)
        replay = None
        if replay_bank is not None and replay_video_id is not None:
            bar.add_task(f"replay of {replay_video_id}", total=None)
            replay = run_replay(runners, replay_bank, replay_video_id, int(config.head.bank_window),
                                bool(config.head.bank_causal), inputs.clips[:1], settings.bank_keyframes,
                                settings.warmup)
    runtimes = _summarise_bank(runners, samples, settings, sources or {})
    notes = []
    busiest = max((load[0] for load in (load_at_start, load_average()) if load), default=0.0)
    if busiest > (os.cpu_count() or 1) - settings.threads + 1:
        notes.append(contention_note(busiest, settings.threads))
    return BankBenchResult(
        settings=settings,
        environment={**collect_environment(settings.threads), "load_average_at_start": load_at_start},
        geometry=inputs.geometry,
        runtimes=runtimes,
        iterations=iterations,
        wall_s=time.perf_counter() - started,
        notes=tuple(notes),
        replay=replay,
    )


def _summarise_bank(runners: Mapping[str, Runner], samples: Mapping[str, _BankSamples], settings: BenchSettings,
                    sources: Mapping[str, str]) -> tuple[BankRuntimeResult, ...]:
    B = settings.clips

    def per_clip(values: list[float] | None) -> LatencyStats | None:
        return summarize([v / B for v in values]) if values else None

    eager = samples[EAGER]
    out = []
    for name, runner in runners.items():
        s = samples[name]
        points = []
        for m in settings.bank_entries:
            for a in settings.actors:
                keyframe = per_clip(s.keyframe[(m, a)])
                head = per_clip(s.head.get((m, a)))
                eager_head = per_clip(eager.head.get((m, a)))
                assert keyframe is not None
                points.append(BankPoint(
                    entries=m, actors=a, keyframe=keyframe, head=head, lookup=per_clip(s.lookup.get((m, a))),
                    ratio_to_eager=keyframe.mean / float(np.mean(eager.keyframe[(m, a)]) / B),
                    head_ratio_to_eager=None if head is None or eager_head is None else head.mean / eager_head.mean,
                    samples=tuple(v / B for v in s.keyframe[(m, a)]),
                ))
        out.append(BankRuntimeResult(
            name=name, source=sources.get(name, name), metadata=dict(runner.metadata), points=tuple(points),
            kv_per_entry={m: summarize(v) for m, v in sorted(s.kv.items())},
        ))
    return tuple(out)
