"""What a benchmark run is asked (`BenchSettings`) and what it returns (`BenchResult` and its parts).

Kept apart from the timing loop so the report, the CLI and the demo read results without importing it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from acar_deploy.bench.stats import PERCENTILE_METHOD_NOTE, LatencyStats
from acar_deploy.errors import InputError

EAGER = "eager"
# Reference rows built from the eager model itself, named among the engines: bf16 autocast, plain or
# with channels-last weights (`acar-deploy bench ENGINE... eager-bf16 eager-bf16-cl`).
EAGER_BF16_ROWS = {"eager-bf16": False, "eager-bf16-cl": True}
# Stage keys a runner may report, in display order; anything else is shown after them.
STAGE_ORDER = ("preprocess", "h2d", "backbone", "head", "d2h")
NOT_STAGES = ("wall", "total")  # whole-call times some runners add next to their stages
# Bank entries per keyframe timed for an acfb model; 63 = a 21 s window of 3 actors (AVA-like).
DEFAULT_BANK_ENTRIES = (0, 8, 32, 64)


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
    bank_entries: tuple[int, ...] = DEFAULT_BANK_ENTRIES  # acfb models only: M per keyframe
    bank: Path | None = None  # acfb models only: an extracted bank whose video is replayed (bench/bank_replay.py)
    bank_video: str | None = None  # the video to replay; None: the bank's video with the most entries
    bank_keyframes: int | None = None  # replay at most this many keyframes; None: all
    eager_device: str = "auto"  # the eager baseline's torch device: auto = cuda when a TensorRT engine is timed

    def __post_init__(self) -> None:
        if not self.actors or min(self.actors) < 1:
            raise InputError(f"--actors must be positive integers, got {list(self.actors)}")
        if len(set(self.actors)) != len(self.actors):
            raise InputError(f"--actors has repeated values: {list(self.actors)}")
        if self.clips < 1:
            raise InputError(f"--batch must be >= 1, got {self.clips}")
        if min(self.size) < 16:
            raise InputError(f"--size must be at least 16x16 pixels, got {self.size[0]}x{self.size[1]}")
        if self.warmup < 0:
            raise InputError(f"--warmup must be >= 0, got {self.warmup}")
        if self.seconds is None and (self.iters is None or self.iters < 1):
            raise InputError("give --iters N (>= 1) or --time-budget S")
        if self.seconds is not None and self.seconds <= 0:
            raise InputError(f"--time-budget must be > 0, got {self.seconds}")
        if self.threads < 1:
            raise InputError(f"--threads must be >= 1, got {self.threads}")
        if not self.bank_entries or min(self.bank_entries) < 0:
            raise InputError(f"--bank-entries must be integers >= 0, got {list(self.bank_entries)}")
        if len(set(self.bank_entries)) != len(self.bank_entries):
            raise InputError(f"--bank-entries has repeated values: {list(self.bank_entries)}")
        if self.bank_keyframes is not None and self.bank_keyframes < 1:
            raise InputError(f"--bank-keyframes must be >= 1, got {self.bank_keyframes}")
        if self.eager_device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", self.eager_device):
            raise InputError(f"--eager-device must be auto, cpu, cuda or cuda:N, got {self.eager_device!r}")
        if self.bank is None and (self.bank_video is not None or self.bank_keyframes is not None):
            raise InputError("--bank-video and --bank-keyframes need --bank BANK (the bank to replay)")

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


