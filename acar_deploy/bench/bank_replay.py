"""Replay of a real bank: one video's keyframes in order, each with the window the model would read.

The M sweep (bench/bank.py) times random entries at fixed M. A deployment instead walks a video:
each keyframe's window [t - w, t + w] (or [t - w, t]) holds however many boxes those seconds had,
shares most entries with the previous keyframe's window, and has that second's real boxes as actors.
Replaying an extracted bank gives the per-keyframe latency with that mix: the runner's per-entry K/V
cache projects only the entries new to each window, as it would in a server. Clips are random (the
latency does not depend on pixel values); entries, boxes, window sizes and the window rule are the bank's
and the model config's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from acar_deploy.bank.window import FeatureBank, window_slice
from acar_deploy.bench.results import EAGER
from acar_deploy.bench.stats import LatencyStats, summarize
from acar_deploy.engines.runners.base import Runner
from acar_deploy.errors import InputError
from acar_deploy.formats.bank import MANIFEST_NAME
from acar_deploy.formats.manifest import BankGeometry


@dataclass(frozen=True)
class ReplayKeyframe:
    """One keyframe of the replayed video: its boxes (actors), window size and entries new to the window."""

    timestamp: int
    actors: int
    entries: int  # M: bank entries in this keyframe's window
    new_entries: int  # entries not in the previous keyframe's window (what a K/V cache must project)


@dataclass(frozen=True)
class ReplayRuntime:
    """One runtime over the replay: per-keyframe latency and its K/V stage, in keyframe order."""

    name: str
    keyframe: LatencyStats
    kv_stage: LatencyStats | None  # the runner's `bank_kv` stage (cache lookup + projecting new entries)
    ratio_to_eager: float | None
    samples: tuple[float, ...]  # seconds, keyframe order

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "keyframe_s": self.keyframe.to_dict(),
                "kv_stage_s": None if self.kv_stage is None else self.kv_stage.to_dict(),
                "ratio_to_eager": self.ratio_to_eager, "samples_s": list(self.samples)}


@dataclass(frozen=True)
class BankReplayResult:
    bank: str
    video: str
    half_width: int
    causal: bool
    keyframes: tuple[ReplayKeyframe, ...]
    runtimes: tuple[ReplayRuntime, ...]

    def runtime(self, name: str) -> ReplayRuntime:
        return next(r for r in self.runtimes if r.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"bank": self.bank, "video": self.video, "half_width": self.half_width, "causal": self.causal,
                "keyframes": [vars(k) for k in self.keyframes], "runtimes": [r.to_dict() for r in self.runtimes]}


def open_replay_bank(path: Path, geometry: BankGeometry) -> FeatureBank:
    """The bank, checked against the export's entry shape (a bank of another model would not fit)."""
    bank = FeatureBank(path)
    shape = (geometry.channels, *geometry.size)
    if tuple(bank.manifest.feature_shape) != shape:
        raise InputError(f"{Path(path) / MANIFEST_NAME}: field 'feature_shape' {list(bank.manifest.feature_shape)} is "
                         f"not the entry shape of this model at this --size {list(shape)}; replay a bank extracted "
                         "by this model at the same frame size")
    if not bank.manifest.videos:
        raise InputError(f"{Path(path) / MANIFEST_NAME}: field 'videos' is empty; extract the bank first")
    return bank


def replay_video(bank: FeatureBank, video: str | None) -> str:
    """`video`, or the bank's video with the most entries (the longest replay)."""
    if video is None:
        return max(bank.manifest.videos, key=lambda v: (v.entries, v.video_id)).video_id
    if video not in bank.video_ids:
        raise InputError(f"{bank.path / MANIFEST_NAME}: field 'videos' has no video {video!r} "
                         f"(it has {len(bank.video_ids)}, e.g. {sorted(bank.video_ids)[0]!r}); pick one with --bank-video")
    return video


def replay_keyframes(bank: FeatureBank, video: str, half_width: int, causal: bool,
                     limit: int | None = None) -> list[tuple[ReplayKeyframe, np.ndarray, np.ndarray]]:
    """(keyframe, window entries `[M, C, h, w]` float32, rois `[A, 5]`) per distinct timestamp, in order."""
    features, index = bank.arrays(video)
    timestamps = np.unique(index["timestamp"])
    if limit is not None:
        timestamps = timestamps[:limit]
    out = []
    previous = range(0)
    for t in timestamps.tolist():
        span = window_slice(index["timestamp"], int(t), half_width, causal)  # FeatureBank.window's rows
        rows = range(span.start, span.stop)
        boxes = index["box"][index["timestamp"] == t]
        rois = np.concatenate([np.zeros((len(boxes), 1), np.float32), boxes.astype(np.float32)], 1)
        keyframe = ReplayKeyframe(int(t), len(boxes), len(rows), len(set(rows) - set(previous)))
        out.append((keyframe, np.asarray(features[span], np.float32), rois))
        previous = rows
    return out


def run_replay(runners: Mapping[str, Runner], bank: FeatureBank, video: str, half_width: int, causal: bool,
               clip: np.ndarray, limit: int | None = None, warmup: int = 1) -> BankReplayResult:
    """Walk `video`'s keyframes once per runtime, interleaved per keyframe; caches cleared before the walk."""
    plan = replay_keyframes(bank, video, half_width, causal, limit)
    if not plan:
        raise InputError(f"{bank.path}: video {video!r} has no keyframes to replay")
    for runner in runners.values():  # warm-up on the first keyframes, then start from a cold cache
        for _, entries, rois in plan[:max(1, warmup)]:
            runner.infer(_feeds(clip, entries, rois))
        runner.forget_bank_projections()
    seconds: dict[str, list[float]] = {n: [] for n in runners}
    kv: dict[str, list[float]] = {n: [] for n in runners}
    names = list(runners)
    for i, (_, entries, rois) in enumerate(plan):
        feeds = _feeds(clip, entries, rois)
        for name in names[i % len(names):] + names[:i % len(names)]:
            start = time.perf_counter()
            runners[name].infer(feeds)
            seconds[name].append(time.perf_counter() - start)
            if "bank_kv" in runners[name].last_stage_times:
                kv[name].append(runners[name].last_stage_times["bank_kv"])
    eager_mean = float(np.mean(seconds[EAGER])) if EAGER in seconds else None
    runtimes = tuple(ReplayRuntime(
        name=name, keyframe=summarize(seconds[name]), kv_stage=summarize(kv[name]) if len(kv[name]) == len(plan) else None,
        ratio_to_eager=None if eager_mean is None else float(np.mean(seconds[name])) / eager_mean,
        samples=tuple(seconds[name])) for name in names)
    return BankReplayResult(str(bank.path), video, half_width, causal, tuple(k for k, _, _ in plan), runtimes)


def _feeds(clip: np.ndarray, entries: np.ndarray, rois: np.ndarray) -> dict[str, np.ndarray]:
    return {"clips": clip, "rois": rois, "bank_entries": entries,
            "bank_window": np.ones((len(rois), len(entries)), bool)}


__all__ = ["BankReplayResult", "ReplayKeyframe", "ReplayRuntime", "open_replay_bank", "replay_keyframes",
           "replay_video", "run_replay"]
