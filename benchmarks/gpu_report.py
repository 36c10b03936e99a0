"""Collect one benchmarks/gpu.sh run folder into gpu.json and gpu.md (figures as measured, no edits)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def collect(out: Path) -> dict:
    steps = []
    for line in (out / "steps.tsv").read_text().splitlines():
        name, rc, seconds, command = line.split("\t", 3)
        log = out / f"{name}.log"
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
        steps.append({"step": name, "rc": int(rc), "timed_out": rc in ("124", "137"), "seconds": int(seconds),
                      "command": command, "last_line": tail[0] if tail else ""})
    result: dict = {"folder": str(out), "steps": steps}
    if (out / "eager.json").is_file():
        result["eager"] = json.loads((out / "eager.json").read_text())
    trt_log = out / "tensorrt_import.log"
    result["tensorrt"] = ("not importable: " + trt_log.read_text().strip().splitlines()[-1]
                          if trt_log.is_file() and trt_log.read_text().strip() else "imported")
    seeds = sorted((out / "bank").glob("seed*.json"), key=lambda f: int(f.stem.removeprefix("seed")))
    if seeds:
        result["bank_seeds"] = [json.loads(f.read_text()) for f in seeds]
    bench = out / "work" / "bench" / "results.json"
    if bench.is_file():
        result["trt_bench"] = json.loads(bench.read_text())
    return result


def render(result: dict) -> str:
    lines = ["# GPU run (benchmarks/gpu.sh)", ""]
    eager = result.get("eager")
    if eager:
        lines += [f"{eager['gpu']} (sm {eager['capability']}), torch {eager['torch']}, CUDA {eager['cuda']}, "
                  f"{eager['date']}; {eager['config']} at {eager['size'][0]}x{eager['size'][1]}, {eager['actors']} actors "
                  f"per clip, {eager['iters']} iterations after {eager['warmup']} warm-up. Error: relative L2 of the "
                  "logits against a float64 CPU run on the same inputs and weights. fp32 = torch's defaults (TF32 "
                  f"matmul {eager.get('tf32_default_matmul')}, cuDNN {eager.get('tf32_default_cudnn')}); fp32-strict = "
                  "TF32 off. CUDA graph: off = eager; model = the whole forward as one graph; backbone = the "
                  "backbone as a graph, the head eager.", "",
                  "| clips/call | precision | CUDA graph | model p50 ms | model mean ms | H2D p50 ms | D2H p50 ms | "
                  "total p50 ms | ms per clip | rel. error | peak MiB |",
                  "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in eager["rows"]:
            clips = r.get("clips_per_call", 1)
            graph = {True: "model", False: "off"}.get(r["cuda_graph"], r["cuda_graph"])
            if "error" in r:
                lines.append(f"| {clips} | {r['precision']} | {graph} | failed: {r['error'].replace('|', '/')[:100]} "
                             "| | | | | | | |")
                continue
            lines.append(f"| {clips} | {r['precision']} | {graph} | {r['model']['p50_ms']:.2f} | "
                         f"{r['model']['mean_ms']:.2f} | {r['h2d']['p50_ms']:.3f} | {r['d2h']['p50_ms']:.3f} | "
                         f"{r['total']['p50_ms']:.2f} | {r['total']['p50_ms'] / clips:.2f} | "
                         f"{r.get('rel_l2_vs_fp64', float('nan')):.1e} | {r.get('peak_memory_mib')} |")
        lines.append("")
    lines += [f"TensorRT: {result['tensorrt']}.", ""]
    if "trt_bench" in result:
        lines += ["TensorRT bench: see work/bench/results.md (acar-deploy bench output).", ""]
    if "bank_seeds" in result:
        lines += ["Bank vs no bank (benchmarks/bank_gain.py, CPU, 1 thread per seed, 12 head-only epochs):", "",
                  "| seed | extractor mAP | extractor sees event | no bank mAP | bank mAP | margin |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for r in result["bank_seeds"]:
            sees = "n/a" if r["extractor_sees_event"] is None else f"{r['extractor_sees_event']:+.3f}"
            lines.append(f"| {r['seed']} | {r['extractor_map']:.4f} | {sees} | {r['no_bank']['val_maps'][-1]:.4f} | "
                         f"{r['bank']['val_maps'][-1]:.4f} | {r['margin']:+.4f} |")
        lines.append("")
    lines += ["| step | rc | seconds | last log line |", "|---|---|---|---|"]
    for s in result["steps"]:
        rc = "timeout" if s["timed_out"] else s["rc"]
        lines.append(f"| {s['step']} | {rc} | {s['seconds']} | {s['last_line'].replace('|', '/')[:120]} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    out = Path(sys.argv[1])
    result = collect(out)
    (out / "gpu.json").write_text(json.dumps(result, indent=2))
    (out / "gpu.md").write_text(render(result))


if __name__ == "__main__":
    main()
