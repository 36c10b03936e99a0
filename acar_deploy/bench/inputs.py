"""Synthetic benchmark inputs (clips, person boxes, context maps) and the preprocessing timer."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from acar_deploy.bench.results import BenchSettings
from acar_deploy.bench.stats import LatencyStats, summarize

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
class BenchInputs:
    clips: np.ndarray
    context: np.ndarray
    rois: dict[int, np.ndarray]


def make_inputs(settings: BenchSettings, config: Any) -> BenchInputs:
    rng = np.random.default_rng(settings.seed)
    h, w = settings.size
    num_frames = int(config.input.num_frames)
    clips = rng.standard_normal((settings.clips, 3, num_frames, h, w), dtype=np.float32)
    # Context after ReLU + temporal mean is non-negative; values only matter for realism, not shape.
    context = np.abs(rng.standard_normal(context_shape(config, settings.clips, settings.size), dtype=np.float32))
    rois = {a: make_rois(settings.clips, a, rng) for a in settings.actors}
    return BenchInputs(clips, context, rois)


def time_preprocess(config: Any, settings: BenchSettings, repeats: int = 3) -> LatencyStats:
    """Time the data pipeline's uint8 frames -> normalised `[3, T, H, W]` float clip, per clip."""
    from PIL import Image

    from acar_deploy.data.clips import ClipSpec, frames_to_clip

    spec = ClipSpec.from_model_config(config, short_side=min(settings.size))
    rng = np.random.default_rng(settings.seed + 1)
    h, w = settings.size
    num_frames = int(config.input.num_frames)
    frames = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for _ in range(num_frames)]
    frames_to_clip(frames, spec)  # warm caches and allocator
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        frames_to_clip(frames, spec)
        samples.append(time.perf_counter() - start)
    return summarize(samples)


