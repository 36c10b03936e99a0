"""Eager PyTorch baseline on one NVIDIA GPU, per call: fp32, fp16 and bf16 autocast, CUDA graphs off/on,
1 and several clips per call, with host-to-device and device-to-host copies timed apart from the model
(CUDA events), and each variant's logits compared with a float64 CPU reference on the same inputs.

Run by benchmarks/gpu.sh (which also runs `pytest -m gpu` and, where TensorRT imports, the TensorRT
builds and benchmarks). Writes one JSON with every row; gpu.sh renders the markdown. A variant that
fails (a CUDA graph capture refused, say) is recorded with its error, and the others still run.
`--device cpu` runs the same code without events or graphs (a smoke check where there is no GPU).

    python benchmarks/gpu_eager.py --config acar_r50 --size 256x341 --actors 8 --batches 1 4 --out eager.json
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import numpy as np

# off: eager; model: the whole forward captured as one CUDA graph; backbone: the backbone (convolutions
# only) captured, the head eager (RoIAlign's adaptive sampling grid has a data-dependent size).
# A failed capture can leave the device unusable for later captures, so "model" is tried last, once.
GRAPH_MODES = ("off", "backbone")
# fp32 runs with torch's defaults (cuDNN convolutions may use TF32 on Ampere and later); fp32-strict
# turns TF32 off for convolutions and matmuls, so the two rows show what TF32 buys and costs.
PRECISIONS = {"fp32": None, "fp32-strict": None, "fp16-autocast": "float16", "bf16-autocast": "bfloat16"}


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms, dtype=np.float64)
    return {"mean_ms": float(a.mean()), "p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "min_ms": float(a.min()), "std_ms": float(a.std()), "n": int(a.size)}


def _reference(model, clips, rois):
    """float64 on the CPU: the yardstick every precision and graph variant is compared with."""
    import torch

    cpu64 = copy.deepcopy(model).to("cpu", torch.float64)
    with torch.inference_mode():
        return cpu64(clips.double(), rois.double().clone()).float()


def _parity(out, ref) -> dict[str, float]:
    diff = (out.float().cpu() - ref).double()
    return {"rel_l2_vs_fp64": float(diff.norm() / ref.double().norm()), "max_abs_vs_fp64": float(diff.abs().max()),
            "ref_max_abs": float(ref.abs().max())}


def _first_error(exc: BaseException) -> str:
    """The exception that started it: a failed capture re-raises at capture end, hiding the cause."""
    while exc.__context__ is not None and exc.__cause__ is None:
        exc = exc.__context__
    exc = exc.__cause__ or exc
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def run(config: str, size: tuple[int, int], actors: int, batches: list[int], warmup: int, iters: int, seed: int,
        device_name: str) -> dict:
    import torch

    from acar_deploy.bench.inputs import make_rois
    from acar_deploy.model import load_model

    if device_name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_eager.py: no CUDA device visible")
    device = torch.device(device_name)
    model = load_model(None, config, seed=seed).eval()
    frames = int(getattr(getattr(model.config, "input", None), "num_frames", 32))
    rng = np.random.default_rng(seed)
    rows = []
    tf32_defaults = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    modes = GRAPH_MODES if device.type == "cuda" else ("off",)
    variants = [(batch, precision, mode) for batch in batches for precision in PRECISIONS for mode in modes]
    if device.type == "cuda":
        variants.append((batches[0], "fp32", "model"))
    inputs: dict[int, tuple] = {}
    for batch, precision, cuda_graph in variants:
        if batch not in inputs:
            clips = torch.from_numpy(rng.standard_normal((batch, 3, frames, *size), dtype=np.float32))
            rois = torch.from_numpy(make_rois(batch, actors, rng))
            start = time.perf_counter()
            ref = _reference(model.cpu(), clips, rois)
            print(f"batch {batch}: float64 CPU reference in {time.perf_counter() - start:.1f} s", flush=True)
            if device.type == "cuda":
                clips, rois = clips.pin_memory(), rois.pin_memory()
            inputs[batch] = clips, rois, ref
        clips, rois, ref = inputs[batch]
        row = {"runtime": "eager", "precision": precision, "cuda_graph": cuda_graph, "clips_per_call": batch,
               "actors_per_clip": actors}
        try:
            if device.type == "cuda":
                strict = precision == "fp32-strict"
                torch.backends.cudnn.allow_tf32 = not strict and tf32_defaults[1]
                torch.backends.cuda.matmul.allow_tf32 = not strict and tf32_defaults[0]
            row.update(_time_variant(model.to(device), clips, rois, ref, precision, cuda_graph, warmup, iters,
                                     device))
        except Exception as exc:  # recorded, not fatal: the other variants still say something
            row["error"] = _first_error(exc)
        rows.append(row)
        print(_line(row), flush=True)
    info = {"gpu": torch.cuda.get_device_name(), "capability": ".".join(map(str, torch.cuda.get_device_capability())),
            "cuda": torch.version.cuda, "tf32_default_matmul": tf32_defaults[0], "tf32_default_cudnn": tf32_defaults[1],
            } if device.type == "cuda" else {"gpu": None, "capability": None, "cuda": None}
    return {"config": config, "size": list(size), "actors": actors, "batches": batches, "warmup": warmup,
            "iters": iters, "device": device.type, **info, "torch": torch.__version__, "host": platform.node(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "rows": rows}


def _time_variant(model, clips_host, rois_host, ref, precision, cuda_graph, warmup, iters, device) -> dict:
    import torch

    cuda = device.type == "cuda"
    dtype = PRECISIONS[precision]
    clips_dev = torch.empty_like(clips_host, device=device)
    rois_dev = torch.empty_like(rois_host, device=device)

    def autocast():
        return torch.autocast(device.type, dtype=getattr(torch, dtype or "float32"), enabled=dtype is not None)

    def forward():
        with torch.inference_mode(), autocast():
            return model(clips_dev, rois_dev.clone())  # clone: the head scales rois in place

    def copy_in():
        clips_dev.copy_(clips_host, non_blocking=cuda)
        rois_dev.copy_(rois_host, non_blocking=cuda)

    if not cuda:
        times = {"h2d": [], "model": [], "d2h": [], "total": []}
        for i in range(warmup + iters):
            t0 = time.perf_counter()
            copy_in()
            t1 = time.perf_counter()
            out = forward()
            t2 = time.perf_counter()
            result = out.float().cpu()
            t3 = time.perf_counter()
            if i >= warmup:
                for stage, a, b in (("h2d", t0, t1), ("model", t1, t2), ("d2h", t2, t3), ("total", t0, t3)):
                    times[stage].append((b - a) * 1000)
        return _summary(result, ref, times, None)

    torch.cuda.reset_peak_memory_stats()
    stream = torch.cuda.Stream()
    graph = None
    with torch.cuda.stream(stream):
        copy_in()
        for _ in range(max(warmup, 3 if cuda_graph != "off" else warmup)):
            out = forward()
        if cuda_graph != "off":
            stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream):
                if cuda_graph == "model":
                    out = forward()
                else:
                    with torch.inference_mode(), autocast():
                        context = model.context(clips_dev)
    stream.synchronize()

    def replay():
        graph.replay()
        if cuda_graph == "model":
            return out
        with torch.inference_mode(), autocast():
            return model.head(context, rois_dev.clone())

    stream.synchronize()
    times = {"h2d": [], "model": [], "d2h": [], "total": []}
    for _ in range(iters):
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        with torch.cuda.stream(stream):
            ev[0].record(stream)
            copy_in()
            ev[1].record(stream)
            out = forward() if graph is None else replay()
            ev[2].record(stream)
            result = out.float().to("cpu", non_blocking=True)
            ev[3].record(stream)
        stream.synchronize()
        times["h2d"].append(ev[0].elapsed_time(ev[1]))
        times["model"].append(ev[1].elapsed_time(ev[2]))
        times["d2h"].append(ev[2].elapsed_time(ev[3]))
        times["total"].append(ev[0].elapsed_time(ev[3]))
    return _summary(result, ref, times, round(torch.cuda.max_memory_allocated() / 2**20, 1))


def _summary(result, ref, times, peak_mib) -> dict:
    import torch

    return {"logits_shape": list(result.shape), "finite": bool(torch.isfinite(result).all()),
            "peak_memory_mib": peak_mib, **_parity(result, ref), **{stage: _stats(v) for stage, v in times.items()}}


def _line(row: dict) -> str:
    head = f"eager {row['precision']:14s} graph={row['cuda_graph']:8s} clips={row['clips_per_call']}"
    if "error" in row:
        return f"{head}  FAILED {row['error']}"
    return (f"{head}  model p50 {row['model']['p50_ms']:.2f} ms  h2d {row['h2d']['p50_ms']:.2f}  "
            f"d2h {row['d2h']['p50_ms']:.2f}  rel err {row['rel_l2_vs_fp64']:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="acar_r50")
    parser.add_argument("--size", default="256x341")
    parser.add_argument("--actors", type=int, default=8)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="clips per call")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    h, w = (int(x) for x in args.size.lower().split("x"))
    result = run(args.config, (h, w), args.actors, args.batches, args.warmup, args.iters, args.seed, args.device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
