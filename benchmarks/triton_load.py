"""Load the served pipeline with perf_analyzer and compare it with the in-process ONNX Runtime runner.

Steps: export (unless --export is given), write a Triton repository (KIND_AUTO, backbone max_batch 4 with
dynamic batching, --instances pipeline/backbone/head instances), start the bundled server on free
127.0.0.1 ports, run perf_analyzer at each concurrency on one clip with --boxes boxes, read Triton's
statistics per model (queue vs compute per request), stop the server, then time the same request with
the in-process ORT runner on the same export (same process, same machine, right after).

    .venv/bin/python benchmarks/triton_load.py                        # acar_tiny at 64x64 (CI size)
    .venv/bin/python benchmarks/triton_load.py --config acar_r50 --size 256x341 --instances 1 \
        --concurrency 1,2 --requests-per-window 3 --max-trials 3 --results benchmarks/results/triton-load-r50.json
        # R50: on a quiet machine; under a load average of 11-15 it did not settle (benchmarks/README.md)

The bundled server runs the stand-in onnxruntime backend on CPU (docs/serving.md): these figures are
the serving overhead of Triton's HTTP/gRPC front end, queueing and the BLS pipeline on this machine,
not a GPU deployment's throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def parse_size(text: str) -> tuple[int, int]:
    height, _, width = text.lower().partition("x")
    return int(height), int(width)


def request(size: tuple[int, int], boxes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    clips = rng.standard_normal((1, 3, 32, *size)).astype(np.float32)
    corners = np.sort(rng.uniform(0.05, 0.95, size=(boxes, 2, 2)), axis=1)
    rois = np.concatenate([np.zeros((boxes, 1)), corners[:, 0], corners[:, 1]], axis=1)
    return clips, rois.astype(np.float32)


def in_process_ort(export: Path, clips: np.ndarray, rois: np.ndarray, seconds: float) -> dict[str, float]:
    """Median / p99 of `runner.infer` on the same request, after one warm-up call."""
    from acar_deploy.engines import open_runner

    times = []
    with open_runner(export) as runner:
        runner.infer({"clips": clips, "rois": rois})
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(times) < 5:
            start = time.perf_counter()
            runner.infer({"clips": clips, "rois": rois})
            times.append(time.perf_counter() - start)
    times_ms = sorted(t * 1000 for t in times)
    return {"calls": len(times_ms), "p50_ms": statistics.median(times_ms),
            "p99_ms": times_ms[min(len(times_ms) - 1, int(0.99 * len(times_ms)))],
            "throughput": 1000 / statistics.median(times_ms)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="acar_tiny")
    parser.add_argument("--size", type=parse_size, default=(64, 64), help="HxW of the export and the clip")
    parser.add_argument("--export", type=Path, help="existing split export (default: export --config now)")
    parser.add_argument("--boxes", type=int, default=2)
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--protocol", default="http", choices=("http", "grpc"))
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--interval", type=int, default=3000, help="perf_analyzer measurement window, ms")
    parser.add_argument("--requests-per-window", type=int, default=0,
                        help="perf_analyzer count_windows of this many requests instead of time windows (slow models)")
    parser.add_argument("--max-trials", type=int, default=10, help="perf_analyzer --max-trials")
    parser.add_argument("--stability", type=int, default=50, help="perf_analyzer --stability-percentage")
    parser.add_argument("--ort-seconds", type=float, default=10.0)
    parser.add_argument("--results", type=Path, help="write the figures here as JSON")
    args = parser.parse_args(argv)

    from acar_deploy.serve.local_triton import ServeSettings, TritonServerProcess, free_port, prepare_bundled
    from acar_deploy.serve.triton import TritonSettings, build_model_repository
    from acar_deploy.serve.triton_client import TritonProtocol, infer_pipeline
    from acar_deploy.serve.triton_load import LoadSettings, prepare_perf_analyzer, run_load

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="triton-load-") as tmp:
        export = args.export
        if export is None:
            from acar_deploy import export as exporting

            export = Path(tmp) / "export"
            settings = exporting.ExportSettings(parts=exporting.Parts.split, input_size=args.size, validate=False)
            exporting.export_model(export, config=args.config, settings=settings)
        repo = build_model_repository(export, Path(tmp) / "repo",
                                      settings=TritonSettings(max_batch=4, instances=args.instances)).path
        runtime, analyzer = prepare_bundled(install=True), prepare_perf_analyzer(install=True)
        clips, rois = request(args.size, args.boxes)
        serve = ServeSettings(repo, http_port=free_port(), grpc_port=free_port(), ready_timeout_s=600)
        load = LoadSettings(serve_url(serve, "http"), serve_url(serve, "grpc"), protocol=TritonProtocol(args.protocol),
                            concurrency=tuple(int(c) for c in args.concurrency.split(",")),
                            measurement_interval_ms=args.interval, stability_percent=args.stability,
                            max_trials=args.max_trials, measurement_requests=args.requests_per_window,
                            timeout_s=max(300.0, args.interval * 12 / 1000))
        print(f"[{time.perf_counter() - started:6.1f} s] starting the server", file=sys.stderr)
        with TritonServerProcess(serve, runtime) as server:
            server.wait_ready()
            infer_pipeline(load.http_url, clips, rois, timeout_s=600)  # warm-up: first calls load sessions
            print(f"[{time.perf_counter() - started:6.1f} s] perf_analyzer", file=sys.stderr)
            levels = run_load(load, analyzer, clips, rois)
        print(f"[{time.perf_counter() - started:6.1f} s] in-process ORT", file=sys.stderr)
        ort = in_process_ort(export, clips, rois, args.ort_seconds)

    report = {
        "config": args.config, "size": list(args.size), "boxes": args.boxes, "protocol": args.protocol,
        "instances": args.instances, "load_average": os.getloadavg(), "cpus": os.cpu_count(),
        "levels": [level.to_dict() for level in levels], "in_process_ort": ort,
        "overhead_ms_at_concurrency_1": levels[0].p50_ms - ort["p50_ms"] if levels[0].concurrency == 1 else None,
    }
    print(render(report))
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def serve_url(serve, protocol: str) -> str:
    return f"{serve.host}:{serve.http_port if protocol == 'http' else serve.grpc_port}"


def render(report: dict) -> str:
    lines = [
        f"{report['config']} {report['size'][0]}x{report['size'][1]}, 1 clip, {report['boxes']} boxes, "
        f"{report['protocol']}, {report['instances']} instances per model, load average at the end "
        f"{report['load_average'][0]:.1f} on {report['cpus']} CPUs",
        "",
        "| concurrency | infer/s | p50 ms | p90 ms | p99 ms | pipeline queue ms | backbone queue ms | backbone compute ms "
        "| head compute ms | backbone executions / requests |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in report["levels"]:
        models = level["models"]
        pipe, backbone, head = (models.get(k, {}) for k in ("acar", "acar_backbone", "acar_head"))
        lines.append(
            f"| {level['concurrency']} | {level['throughput']:.1f} | {level['p50_ms']:.1f} | {level['p90_ms']:.1f} "
            f"| {level['p99_ms']:.1f} | {pipe.get('queue_ms', 0):.1f} | {backbone.get('queue_ms', 0):.1f} "
            f"| {backbone.get('compute_ms', 0):.1f} | {head.get('compute_ms', 0):.1f} "
            f"| {backbone.get('executions', 0)} / {backbone.get('requests', 0)} |"
        )
    ort = report["in_process_ort"]
    lines += ["", f"in-process ORT runner, same request: {ort['throughput']:.1f} calls/s, p50 {ort['p50_ms']:.1f} ms, "
              f"p99 {ort['p99_ms']:.1f} ms ({ort['calls']} calls)"]
    if report["overhead_ms_at_concurrency_1"] is not None:
        lines.append(f"serving overhead per clip at concurrency 1 (p50 served - p50 in-process): "
                     f"{report['overhead_ms_at_concurrency_1']:.1f} ms")
    lines += ["", "perf_analyzer command (first level): " + report["levels"][0]["command"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
