"""The timing loop: per-clip latency of eager PyTorch and every given engine, measured in one interleaved run.

Why interleaved: on shared machines the speed drifts by up to 3x within minutes, so each timed
iteration runs every runtime once (round robin, starting runtime rotated per iteration) and the
ratio to eager is taken from the same run. The benchmark talks to runners only (`infer`,
`last_stage_times`, `metadata`); the eager model itself is used once, to count FLOPs.

Per iteration and runtime: one full `infer({"clips", "rois"})` at the primary actor count (the first
of `actors`); for every other actor count only the head runs (`infer_head(context, rois)`) when the
runner `supports_head_only`, otherwise the full pipeline runs again. The per-clip latency at a
secondary actor count is then `full - head(primary) + head(actors)` of the same iteration.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from acar_deploy.bench.environment import (
    collect_environment,
    load_average,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
)
from acar_deploy.bench.flops import count_flops
from acar_deploy.bench.inputs import BenchInputs, make_inputs, time_preprocess
from acar_deploy.bench.results import (
    EAGER,
    EAGER_BF16_ROWS,
    NOT_STAGES,
    STAGE_ORDER,
    ActorCountResult,
    BenchResult,
    BenchSettings,
    FlopCount,
    RuntimeResult,
)
from acar_deploy.bench.stats import LatencyStats, summarize
from acar_deploy.engines.runners.base import Runner, RunnerOptions
from acar_deploy.errors import InputError
from acar_deploy.formats.enums import Runtime
from acar_deploy.progress import progress_bar

if TYPE_CHECKING:
    from acar_deploy.bench.bank import BankBenchResult

# --- runners ------------------------------------------------------------------------------------


def contention_note(load: float, threads: int) -> str:
    """Why figures taken on a busy machine mislead: eager's OpenMP barriers suffer most."""
    return (f"load average {load:.1f} while timing with {threads} threads on {os.cpu_count()} CPUs: other "
            "processes competed for the cores; eager PyTorch (OpenMP threads wait at barriers for a descheduled "
            "peer) slows far more than ONNX Runtime, so ratios to eager are biased in the engines' favour. "
            "Rerun on an idle machine, or with --threads 1.")


def bench_runner_options(threads: int) -> RunnerOptions:
    """Every runtime timed with the same intra-op threads; ORT's pool threads do not spin.

    Spinning ORT threads would steal the cores from the runtime timed next in the interleaved loop.
    """
    return RunnerOptions(threads=threads, allow_spinning=False)


def resolve_eager_device(setting: str, engines: Sequence[Runner], cuda_available: bool) -> str:
    """The eager baseline's device: on the GPU when a TensorRT engine is timed (auto), so that the
    ratios compare runtimes on one device, not a GPU engine with CPU PyTorch."""
    if setting == "auto":
        return "cuda" if cuda_available and any(r.runtime is Runtime.TRT for r in engines) else "cpu"
    if setting.startswith("cuda") and not cuda_available:
        raise InputError(f"--eager-device {setting}: torch sees no CUDA device on this machine; "
                         "use --eager-device cpu (or auto)")
    return setting


def cross_device_note(eager_device: str, engines: Sequence[Runner]) -> str | None:
    """A note when the eager baseline and a timed engine sit on different devices."""
    gpu_engines = [r.name for r in engines if r.runtime is Runtime.TRT]
    if gpu_engines and not eager_device.startswith("cuda"):
        return (f"eager ran on the CPU while {', '.join(gpu_engines)} ran on the GPU: their x-eager ratios compare "
                "devices, not runtimes (rerun with --eager-device cuda)")
    return None


def open_benchmark_runners(settings: BenchSettings) -> tuple[dict[str, Runner], dict[str, str], Any, Any]:
    """Open eager plus every engine; return runners by name, their sources, the config and eager model."""
    from acar_deploy.engines.runners.eager import EagerRunner
    from acar_deploy.engines.runners.open import open_runner
    from acar_deploy.formats import verify_folder
    from acar_deploy.model.acar import build_model
    from acar_deploy.model.checkpoint import load_model
    from acar_deploy.model.config import get_config

    for source in settings.engines:
        if source not in EAGER_BF16_ROWS:
            verify_folder(source)
    options = bench_runner_options(settings.threads)
    engine_runners = [(source, open_runner(source, options))
                      for source in settings.engines if source not in EAGER_BF16_ROWS]
    if settings.checkpoint is not None:
        model = load_model(settings.checkpoint, settings.config)
        config = model.config
    else:
        import torch

        if settings.config is not None:
            config = get_config(settings.config)
        else:
            config = _config_from_sources([s for s, _ in engine_runners])
        torch.manual_seed(settings.seed)
        model = build_model(config).eval()
    import torch

    device = resolve_eager_device(settings.eager_device, [r for _, r in engine_runners], torch.cuda.is_available())
    if config.head.type == "acfb":  # the bank head on precomputed K/V, as the engines run it
        from acar_deploy.bench.bank import EagerProjectedBankRunner

        if device != "cpu" and settings.eager_device != "auto":
            raise InputError(f"--eager-device {device}: the eager bank-head baseline runs on the CPU only; "
                             "use --eager-device cpu")
        device = "cpu"
        eager: Runner = EagerProjectedBankRunner(model, name=EAGER, options=options)
    else:
        eager = EagerRunner(model, name=EAGER, options=replace(options, device=None if device == "cpu" else device))
    for source in settings.engines:
        if source in EAGER_BF16_ROWS and config.head.type == "acfb":
            raise InputError(f"{source}: bf16 eager rows are not available for an acfb (feature-bank) model")
        if source in EAGER_BF16_ROWS:
            import copy

            from acar_deploy.engines.runners.eager_bf16 import EagerBf16Runner

            bf16_model = copy.deepcopy(model) if EAGER_BF16_ROWS[source] else model  # channels-last converts weights
            engine_runners.append((source, EagerBf16Runner(bf16_model, name=source, options=options,
                                                           channels_last=EAGER_BF16_ROWS[source])))

    runners: dict[str, Runner] = {EAGER: eager}
    sources: dict[str, str] = {
        EAGER: f"eager:{settings.checkpoint}" if settings.checkpoint else "eager (seeded random weights)"
    }
    for source, runner in engine_runners:
        name = source if source in EAGER_BF16_ROWS else runtime_label(runner)
        if name in runners:  # e.g. an export folder and an fp32 engine: both "ort-fp32"
            name = f"{name}:{Path(source).name}"
        base, n = name, 2
        while name in runners:
            name, n = f"{base}-{n}", n + 1
        runners[name] = runner
        sources[name] = source
    return runners, sources, config, model


def _config_from_sources(sources: Sequence[str]) -> Any:
    """The model config recorded in the first export or engine folder's manifest."""
    from acar_deploy.formats import ExportManifest, folder_kind
    from acar_deploy.model.config import ModelConfig

    for source in sources:
        if folder_kind(source) is not None:
            manifest = ExportManifest.load(source, check_files=False)  # an engine folder: the export copy
            return ModelConfig.from_dict(manifest.config, source=f"{manifest.path} config")
    raise InputError("no --config given and no engine records its model config: pass --config NAME_OR_YAML")


def runtime_label(runner: Runner) -> str:
    """`<runtime>-<precision>`, e.g. `ort-int8`, `trt-fp16`, `eager-fp32`."""
    return f"{runner.runtime.value}-{runner.precision.value}"


# --- measurement --------------------------------------------------------------------------------


@dataclass
class _Samples:
    full: list[float] = field(default_factory=list)
    stages: list[dict[str, float]] = field(default_factory=list)
    head: dict[int, list[float]] = field(default_factory=dict)
    full_by_actors: dict[int, list[float]] = field(default_factory=dict)


def _timed(runner: Runner, feeds: dict[str, np.ndarray]) -> tuple[float, dict[str, float]]:
    start = time.perf_counter()
    if "context" in feeds:
        runner.infer_head(feeds["context"], feeds["rois"])
    else:
        runner.infer(feeds)
    elapsed = time.perf_counter() - start
    return elapsed, dict(runner.last_stage_times)


def _one_iteration(
    runner: Runner, inputs: BenchInputs, settings: BenchSettings, head_only: bool, samples: _Samples
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
    inputs = make_inputs(settings, config)
    names = list(runners)
    notes: list[str] = []

    for runner in runners.values():
        runner.activate()

    head_only = {n: len(settings.actors) > 1 and r.supports_head_only for n, r in runners.items()}
    for n, ok in head_only.items():
        if len(settings.actors) > 1 and not ok:
            notes.append(f"{n}: no head-only path; every actor count ran the full pipeline")

    memory: dict[str, dict[str, int | None]] = {}
    samples = {n: _Samples() for n in names}
    iterations = 0
    with progress_bar(progress) as bar:
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
        meta = dict(runner.metadata)
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


def _check_engines_fit(settings: BenchSettings, config: Any) -> None:
    """Each engine must take --batch clips of --size and the model's frames/classes (before any timing)."""
    from acar_deploy.engines.compat import check_engine_fits

    for source in settings.engines:
        if not str(source).startswith("eager"):
            check_engine_fits(source, batch=settings.clips, size=settings.size,
                              num_frames=config.input.num_frames, num_classes=config.head.num_classes)


def run_benchmark(settings: BenchSettings, progress: bool = True) -> BenchResult | BankBenchResult:
    """Open eager and every engine, time them interleaved, and write the report when `out` is set.

    An acfb (feature-bank) model is timed per keyframe over `settings.bank_entries` (bench/bank.py)."""
    from acar_deploy.artifacts import check_can_write

    if settings.out is not None:
        check_can_write(Path(settings.out), settings.force)  # fail before minutes of timing
    runners, sources, config, model = open_benchmark_runners(settings)
    try:
        _check_engines_fit(settings, config)
        if settings.bank is not None and config.head.type != "acfb":
            raise InputError(f"--bank {settings.bank}: this model ({config.name}) has no bank head (head.type "
                             f"{config.head.type!r}); --bank replays a bank through an acfb model")
        if config.head.type == "acfb":
            from acar_deploy.bench.bank import benchmark_bank_runners

            result: BenchResult | BankBenchResult = benchmark_bank_runners(
                runners, settings, config, sources=sources, progress=progress)
        else:
            result = benchmark_runners(runners, settings, config, model=model, sources=sources, progress=progress)
    finally:
        for runner in runners.values():
            runner.close()
    note = cross_device_note(str(runners[EAGER].metadata.get("device", "cpu")),
                             [r for name, r in runners.items() if name != EAGER])
    if note is not None:
        result = replace(result, notes=(*result.notes, note))
    if settings.out is not None:
        from acar_deploy.bench.report import write_bench_report

        write_bench_report(result, Path(settings.out), force=settings.force)
    return result
