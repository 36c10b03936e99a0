"""Latency benchmark (`run_benchmark`): eager and every engine timed interleaved, through runners only.

Submodules import torch/onnxruntime inside functions; names here resolve on first use.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "BenchSettings": "acar_deploy.bench.results",
    "BenchResult": "acar_deploy.bench.results",
    "run_benchmark": "acar_deploy.bench.latency",
    "benchmark_runners": "acar_deploy.bench.latency",
    "write_bench_report": "acar_deploy.bench.report",
    "summarize": "acar_deploy.bench.stats",
    "LatencyStats": "acar_deploy.bench.stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'acar_deploy.bench' has no attribute {name!r}")
