"""Per-keyframe latency of an acfb (feature-bank) model served by the bundled Triton server, against the
in-process ONNX Runtime runner on the same export.

Steps: export `--config` (default acfb_tiny, random weights) at --size, write a repository (KIND_CPU, one
instance per model), start the bundled server on free 127.0.0.1 ports, then replay one synthetic video's
keyframes one request at a time over HTTP: each keyframe's window holds --entries bank entries of which
--new are new (the window slides by --new entries), sent three ways:
  entries    the window's entries; the pipeline's K/V cache projects only the new ones
  cold       every keyframe's entries all new (nothing cached: bank_kv projects all M)
  stored     keys and values projected beforehand (what `acar-deploy bank project` stores): no bank_kv
and through the in-process OrtRunner (entries, with its BankProjectionCache; ORT threads do not spin
after a run), the four interleaved per keyframe in a rotating order. Reports median and p90 ms per
keyframe (client wall time) after --warmup keyframes. The cold mode's random windows (M per keyframe) also pass through the pipeline's LRU cache; the cached
mode's entries are used every keyframe, so they stay in it.

    .venv/bin/python benchmarks/triton_bank_latency.py --keyframes 100   # acfb_tiny, 64x64, M = 21, 2 new
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"median_ms": round(1000 * statistics.median(ordered), 2),
            "p90_ms": round(1000 * ordered[int(0.9 * (len(ordered) - 1))], 2), "keyframes": len(ordered)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="acfb_tiny")
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--entries", type=int, default=21, help="bank entries M per keyframe window")
    parser.add_argument("--new", type=int, default=2, help="entries new to each keyframe's window")
    parser.add_argument("--boxes", type=int, default=2)
    parser.add_argument("--keyframes", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from acar_deploy.engines.runners.base import RunnerOptions
    from acar_deploy.engines.runners.ort import OrtRunner
    from acar_deploy.export.exporter import ExportSettings, export_model
    from acar_deploy.formats import ExportManifest
    from acar_deploy.serve.local_triton import ServeSettings, TritonServerProcess, free_port, prepare_bundled
    from acar_deploy.serve.triton import InstanceKind, TritonSettings, build_model_repository
    from acar_deploy.serve.triton_client import BankFeeds, infer_pipeline

    height, _, width = args.size.lower().partition("x")
    size = (int(height), int(width))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "export"
        export_model(export, config=args.config, settings=ExportSettings(input_size=size, validate=False))
        bank = ExportManifest.load(export).bank_geometry()
        shape = (bank.channels, *bank.size)
        total = args.entries + args.new * (args.keyframes - 1)
        video = rng.exponential(0.5, size=(total, *shape)).astype(np.float32)
        clips = rng.standard_normal((1, 3, 32, *size)).astype(np.float32)
        rois = np.array([[0, 0.1 + 0.3 * i / args.boxes, 0.1, 0.4 + 0.5 * i / args.boxes, 0.9]
                         for i in range(args.boxes)], np.float32)
        window = np.ones((args.boxes, args.entries), bool)
        frames = [video[k * args.new: k * args.new + args.entries] for k in range(args.keyframes)]
        with OrtRunner(export) as runner:  # stored K/V of every keyframe, from the export's bank_kv
            stored = [runner.project_bank(entries) for entries in frames]
        repo = build_model_repository(export, Path(tmp) / "repo",
                                      settings=TritonSettings(kind=InstanceKind.cpu, instances=1))
        times: dict[str, list[float]] = {}
        serve = ServeSettings(repo.path, http_port=free_port(), grpc_port=free_port(), ready_timeout_s=300)
        with TritonServerProcess(serve, prepare_bundled(install=True)) as server, OrtRunner(export, RunnerOptions(allow_spinning=False)) as runner:
            url = server.wait_ready().http
            modes = {
                "triton entries (cached)": lambda k: infer_pipeline(url, clips, rois,
                                                                    bank=BankFeeds(window, entries=frames[k])),
                "triton entries (cold)": lambda k: infer_pipeline(url, clips, rois, bank=BankFeeds(
                    window, entries=rng.exponential(0.5, size=(args.entries, *shape)).astype(np.float32))),
                "triton stored K/V": lambda k: infer_pipeline(url, clips, rois, bank=BankFeeds(
                    window, keys=stored[k][0], values=stored[k][1])),
                "in-process ORT entries (cached)": lambda k: runner.infer(
                    {"clips": clips, "rois": rois, "bank_entries": frames[k], "bank_window": window}),
            }
            names = list(modes)
            for k in range(args.keyframes):  # interleaved per keyframe, the order rotated: load hits all alike
                for mode in names[k % len(names):] + names[:k % len(names)]:
                    run = modes[mode]
                    start = time.perf_counter()
                    run(k)
                    times.setdefault(mode, []).append(time.perf_counter() - start)
        results = {mode: summary(values[args.warmup:]) for mode, values in times.items()}
    print(json.dumps({"config": args.config, "size": list(size), "entries": args.entries, "new": args.new,
                      "boxes": args.boxes, "results": results}, indent=2))


if __name__ == "__main__":
    main()
