"""Latency summary statistics, with the percentile method stated so numbers can be reproduced.

Percentiles use linear interpolation between closest ranks (numpy's default, `method="linear"`,
Hyndman & Fan type 7): for sorted samples x_0..x_{n-1}, p-th percentile = x_k + f * (x_{k+1} - x_k)
where k + f = p/100 * (n - 1). The standard deviation is the population one (ddof=0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

PERCENTILE_METHOD = "linear"
PERCENTILE_METHOD_NOTE = (
    "numpy.percentile method='linear' (type 7: x_k + f*(x_{k+1}-x_k), k+f = p/100*(n-1)); std with ddof=0"
)


@dataclass(frozen=True)
class LatencyStats:
    """Summary of n latency samples in seconds."""

    n: int
    mean: float
    p50: float
    p90: float
    p99: float
    min: float
    max: float
    std: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def scaled(self, factor: float) -> LatencyStats:
        """Every time statistic multiplied by `factor` (e.g. 1/B for per-clip values)."""
        return LatencyStats(
            n=self.n,
            mean=self.mean * factor,
            p50=self.p50 * factor,
            p90=self.p90 * factor,
            p99=self.p99 * factor,
            min=self.min * factor,
            max=self.max * factor,
            std=self.std * factor,
        )


def summarize(samples: Sequence[float]) -> LatencyStats:
    """Mean, p50/p90/p99 (linear interpolation), min, max and population std of `samples`."""
    values = np.asarray(samples, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no latency samples to summarise")
    p50, p90, p99 = np.percentile(values, [50, 90, 99], method=PERCENTILE_METHOD)
    return LatencyStats(
        n=int(values.size),
        mean=float(values.mean()),
        p50=float(p50),
        p90=float(p90),
        p99=float(p99),
        min=float(values.min()),
        max=float(values.max()),
        std=float(values.std(ddof=0)),
    )
