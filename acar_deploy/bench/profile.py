"""Where the time goes, per op type: ONNX Runtime's own profiler and torch.profiler.

Latency numbers say how fast; these tables say what to restructure. ORT profiling records one
event per executed node (`cat == "Node"`, duration in microseconds, `args.op_name` = the kernel's op
type after graph fusion, e.g. `QLinearConv`, `FusedConv`); torch.profiler's self CPU time per
aten op is the eager counterpart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class OpTime:
    """Time spent in one op type (or node), averaged per run."""

    name: str
    ms_per_run: float
    calls_per_run: float
    share: float  # of the summed op time

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _aggregate(totals: Mapping[str, tuple[float, int]], runs: int, top: int | None) -> list[OpTime]:
    grand = sum(t for t, _ in totals.values()) or 1.0
    rows = [OpTime(k, t / runs, c / runs, t / grand) for k, (t, c) in totals.items()]
    rows.sort(key=lambda r: -r.ms_per_run)
    return rows[:top] if top else rows


def parse_ort_profile(path: str | os.PathLike, skip_runs: int = 0) -> dict[str, dict[str, tuple[float, int]]]:
    """ORT's chrome-trace JSON -> {"op_type": {op: (ms, calls)}, "node": {name: (ms, calls)}}.

    `skip_runs` drops the events of the first runs (warm-up), counted by `model_run` events.
    """
    events = json.loads(Path(path).read_text(encoding="utf-8"))
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    start_ts = runs[skip_runs]["ts"] if skip_runs and len(runs) > skip_runs else -1
    by_type: dict[str, list[float]] = {}
    by_node: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time") or e["ts"] < start_ts:
            continue
        ms = float(e.get("dur", 0)) / 1e3
        op = str((e.get("args") or {}).get("op_name", "?"))
        node = str(e["name"])[: -len("_kernel_time")]
        by_type.setdefault(op, []).append(ms)
        by_node.setdefault(f"{node} ({op})", []).append(ms)
    return {
        "op_type": {k: (float(np.sum(v)), len(v)) for k, v in by_type.items()},
        "node": {k: (float(np.sum(v)), len(v)) for k, v in by_node.items()},
    }


def profile_ort_graph(
    graph: str | os.PathLike,
    feeds: Mapping[str, np.ndarray],
    threads: int,
    runs: int = 2,
    warmup: int = 1,
    top: int | None = 12,
    scratch: str | os.PathLike | None = None,
) -> dict[str, list[OpTime]]:
    """Run `graph` with ORT profiling on; op-type and node tables, ms per run (warm-up excluded)."""
    import tempfile

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort_profile")
        session = ort.InferenceSession(str(graph), sess_options=options, providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        inputs = {k: v for k, v in feeds.items() if k in wanted}
        for _ in range(warmup + runs):
            session.run(None, inputs)
        trace = session.end_profiling()
        tables = parse_ort_profile(trace, skip_runs=warmup)
    return {kind: _aggregate(totals, runs, top) for kind, totals in tables.items()}


def profile_torch(fn: Callable[[], Any], runs: int = 1, warmup: int = 1, top: int | None = 12) -> list[OpTime]:
    """Self CPU time per aten op of `fn()` under torch.profiler, ms per run (warm-up excluded)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                fn()
    totals = {
        e.key: (e.self_cpu_time_total / 1e3, int(e.count)) for e in prof.key_averages() if e.self_cpu_time_total > 0
    }
    return _aggregate(totals, runs, top)


def op_table(rows: list[OpTime], title: str) -> str:
    """Markdown table of the top ops."""
    lines = [f"| {title} | ms / run | calls / run | share |", "|---|---:|---:|---:|"]
    lines += [f"| {r.name} | {r.ms_per_run:.1f} | {r.calls_per_run:g} | {r.share:.1%} |" for r in rows]
    return "\n".join(lines)
