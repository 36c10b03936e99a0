"""FLOPs of the eager model's backbone and head on the benchmark's inputs (torch's FlopCounterMode)."""

from __future__ import annotations

from typing import Any

import numpy as np

from acar_deploy.bench.inputs import BenchInputs, make_rois
from acar_deploy.bench.results import FlopCount


def count_flops(model: Any, inputs: BenchInputs) -> FlopCount:
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


