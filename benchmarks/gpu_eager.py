"""Eager PyTorch baseline on one NVIDIA GPU, per clip: fp32 and fp16 autocast, CUDA graphs off/on,
with host-to-device and device-to-host copies timed apart from the model (CUDA events).

Run by benchmarks/gpu.sh (which also runs `pytest -m gpu` and, where TensorRT imports, the TensorRT
builds and benchmarks). Writes one JSON with every row; gpu.sh renders the markdown.

    python benchmarks/gpu_eager.py --config acar_r50 --size 256x341 --actors 8 --iters 50 --out eager.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms, dtype=np.float64)
    return {"mean_ms": float(a.mean()), "p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "min_ms": float(a.min()), "std_ms": float(a.std()), "n": int(a.size)}


def run(config: str, size: tuple[int, int], actors: int, warmup: int, iters: int, seed: int) -> dict:
    import torch

    from acar_deploy.bench.latency import make_rois
    from acar_deploy.model import load_model

    if not torch.cuda.is_available():
        raise SystemExit("gpu_eager.py: no CUDA device visible")
    device = torch.device("cuda")
    model = load_model(None, config, seed=seed).eval().to(device)
    frames = int(getattr(getattr(model.config, "input", None), "num_frames", 32))
    rng = np.random.default_rng(seed)
    clips_host = torch.from_numpy(rng.standard_normal((1, 3, frames, *size), dtype=np.float32)).pin_memory()
    rois_host = torch.from_numpy(make_rois(1, actors, rng)).pin_memory()
    rows = []
    for precision in ("fp32", "fp16-autocast"):
        for cuda_graph in (False, True):
            rows.append(_time_variant(model, clips_host, rois_host, precision, cuda_graph, warmup, iters, device))
    return {
        "config": config, "size": list(size), "actors": actors, "clips_per_call": 1, "warmup": warmup, "iters": iters,
        "gpu": torch.cuda.get_device_name(), "capability": ".".join(map(str, torch.cuda.get_device_capability())),
        "torch": torch.__version__, "cuda": torch.version.cuda, "host": platform.node(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "rows": rows,
    }


def _time_variant(model, clips_host, rois_host, precision, cuda_graph, warmup, iters, device) -> dict:
    import torch

    stream = torch.cuda.Stream()
    autocast = precision == "fp16-autocast"
    clips_dev = torch.empty_like(clips_host, device=device)
    rois_dev = torch.empty_like(rois_host, device=device)

    def forward():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=autocast):
            return model(clips_dev, rois_dev.clone())  # clone: the head scales rois in place

    graph = None
    with torch.cuda.stream(stream):
        clips_dev.copy_(clips_host, non_blocking=True)
        rois_dev.copy_(rois_host, non_blocking=True)
        for _ in range(max(warmup, 3 if cuda_graph else warmup)):
            out = forward()
        if cuda_graph:
            stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream):
                out = forward()
    stream.synchronize()
    times = {"h2d": [], "model": [], "d2h": [], "total": []}
    for _ in range(iters):
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        with torch.cuda.stream(stream):
            ev[0].record(stream)
            clips_dev.copy_(clips_host, non_blocking=True)
            rois_dev.copy_(rois_host, non_blocking=True)
            ev[1].record(stream)
            if graph is not None:
                graph.replay()
            else:
                out = forward()
            ev[2].record(stream)
            result = out.float().to("cpu", non_blocking=True)
            ev[3].record(stream)
        stream.synchronize()
        times["h2d"].append(ev[0].elapsed_time(ev[1]))
        times["model"].append(ev[1].elapsed_time(ev[2]))
        times["d2h"].append(ev[2].elapsed_time(ev[3]))
        times["total"].append(ev[0].elapsed_time(ev[3]))
    return {"runtime": "eager", "precision": precision, "cuda_graph": cuda_graph,
            "logits_shape": list(result.shape), "finite": bool(torch.isfinite(result).all()),
            "peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            **{stage: _stats(v) for stage, v in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="acar_r50")
    parser.add_argument("--size", default="256x341")
    parser.add_argument("--actors", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    h, w = (int(x) for x in args.size.lower().split("x"))
    result = run(args.config, (h, w), args.actors, args.warmup, args.iters, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for row in result["rows"]:
        print(f"eager {row['precision']:14s} cuda_graph={row['cuda_graph']!s:5s} "
              f"model p50 {row['model']['p50_ms']:.2f} ms  h2d {row['h2d']['p50_ms']:.2f}  d2h {row['d2h']['p50_ms']:.2f}")


if __name__ == "__main__":
    main()
