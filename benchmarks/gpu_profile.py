"""Where one eager forward's GPU time goes: backbone vs head, per precision, and the top CUDA kernels.

The whole forward is timed twice: with autocast entered around each call (as benchmarks/gpu_eager.py
and a server do) and inside one held autocast region, where the parts are timed too. Backbone
(`model.context`) and head (`model.head`, RoIAlign + HR2O + classifier) are timed apart with
CUDA events (median of --iters after a warm-up), then torch.profiler lists the kernels that take the
most device time in one whole forward. Every timing is taken before the first profiler session: in
the first run on an H200 (2026-11-30) the fp16 timings taken after fp32's profiler session came out
1.5-2.4x slower than benchmarks/gpu_eager.py's in a fresh process, while fp32's, taken before any
profiling, agreed with it (a profiler session is thought to leave CUPTI's launch callbacks attached;
not verified). Random weights and inputs (timing only).

    python benchmarks/gpu_profile.py --config acar_r50 --size 256x341 --actors 8 --out profile.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

PRECISIONS = {"fp32": None, "fp16-autocast": "float16"}


def _median_ms(fn, iters: int, device) -> float:
    import torch

    for _ in range(5):
        fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            import time

            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def _autocast(device, dtype):
    import torch

    return torch.autocast(device.type, dtype=getattr(torch, dtype or "float32"), enabled=dtype is not None)


def _per_call(model, clips, rois, dtype, device):
    """As gpu_eager.py calls it: autocast entered and left around each forward (no weight-cast cache)."""
    import torch

    with torch.inference_mode(), _autocast(device, dtype):
        return model(clips, rois.clone())


def run(config: str, size: tuple[int, int], actors: int, iters: int, device_name: str) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from acar_deploy.bench.inputs import make_rois
    from acar_deploy.model import load_model

    device = torch.device(device_name)
    model = load_model(None, config, seed=0).eval().to(device)
    frames = int(model.config.input.num_frames)
    rng = np.random.default_rng(0)
    clips = torch.from_numpy(rng.standard_normal((1, 3, frames, *size), dtype=np.float32)).to(device)
    rois = torch.from_numpy(make_rois(1, actors, rng)).to(device)
    result: dict = {"config": config, "size": list(size), "actors": actors, "device": device.type, "rows": []}
    for precision, dtype in PRECISIONS.items():  # every timing before any profiling: see the docstring
        per_call = _median_ms(lambda d=dtype: _per_call(model, clips, rois, d, device), iters, device)
        with torch.inference_mode(), _autocast(device, dtype):
            context = model.context(clips)
            result["rows"].append({
                "precision": precision, "whole_autocast_per_call_ms": per_call,
                "whole_ms": _median_ms(lambda: model(clips, rois.clone()), iters, device),
                "backbone_ms": _median_ms(lambda: model.context(clips), iters, device),
                "head_ms": _median_ms(lambda c=context: model.head(c, rois.clone()), iters, device)})
    for row in result["rows"]:
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with torch.inference_mode(), _autocast(device, PRECISIONS[row["precision"]]):
            with profile(activities=activities) as prof:
                model(clips, rois.clone())
                if device.type == "cuda":
                    torch.cuda.synchronize()
        key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
        events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0.0), reverse=True)
        row["top_kernels"] = [{"name": e.key[:90], "calls": e.count, "ms": round(getattr(e, key, 0.0) / 1000, 3)}
                              for e in events[:12]]
        row["kernel_launches"] = sum(e.count for e in prof.key_averages() if e.key.startswith(("cudaLaunchKernel",
                                                                                              "cuLaunchKernel")))
        print(f"{row['precision']}: autocast per call {row['whole_autocast_per_call_ms']:.2f} ms; held: whole "
              f"{row['whole_ms']:.2f} ms = backbone {row['backbone_ms']:.2f} + head "
              f"{row['head_ms']:.2f}; kernel launches {row['kernel_launches']}", flush=True)
        for k in row["top_kernels"][:8]:
            print(f"    {k['ms']:8.3f} ms  x{k['calls']:<4d} {k['name']}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="acar_r50")
    parser.add_argument("--size", default="256x341")
    parser.add_argument("--actors", type=int, default=8)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    h, w = (int(x) for x in args.size.lower().split("x"))
    result = run(args.config, (h, w), args.actors, args.iters, args.device)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
