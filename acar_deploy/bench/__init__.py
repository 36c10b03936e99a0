"""Latency benchmark (`run_benchmark`) and parity gate (`check_parity`); both talk only to runners.

Submodules import torch/onnxruntime inside functions; names here resolve on first use.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "BenchSettings": "acar_deploy.bench.latency",
    "BenchResult": "acar_deploy.bench.latency",
    "run_benchmark": "acar_deploy.bench.latency",
    "benchmark_runners": "acar_deploy.bench.latency",
    "write_bench_report": "acar_deploy.bench.report",
    "ParitySettings": "acar_deploy.bench.parity",
    "ParityReport": "acar_deploy.bench.parity",
    "ParityGateFailed": "acar_deploy.bench.parity",
    "check_parity": "acar_deploy.bench.parity",
    "ParityThresholds": "acar_deploy.bench.thresholds",
    "summarize": "acar_deploy.bench.stats",
    "LatencyStats": "acar_deploy.bench.stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'acar_deploy.bench' has no attribute {name!r}")
