"""Time reading one keyframe's bank window against one ACFB head inference (R50 sizes, CPU).

    .venv/bin/python benchmarks/bench_bank_window.py [--video-seconds 900] [--actors 3] [--window 10]

Writes a deterministic (seed 0) bank of one AVA-length video (one entry per actor per second,
first-order maps of the R50 head: 512 x 7 x 14 for 256 x 454 frames, fp16) to a temporary folder,
then reports medians over keyframes of: reading the window [t - w, t + w] through `FeatureBank`
(memory-mapped, page cache warm after the write), the eager R50 acfb head with K/V computed on the
fly, the K/V projection alone, and the head with precomputed K/V. Threads: torch's default.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from acar_deploy.artifacts import sha256_file
from acar_deploy.bank.window import FeatureBank
from acar_deploy.formats.bank import BankManifest, BankVideo, video_dir, write_video_arrays
from acar_deploy.model.acfb import ACFBHead
from acar_deploy.model.config import HeadConfig


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video-seconds", type=int, default=900)
    parser.add_argument("--actors", type=int, default=3)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    shape = (512, 7, 14)
    rng = np.random.default_rng(0)
    timestamps = np.repeat(np.arange(args.video_seconds, dtype=np.int32), args.actors)
    with tempfile.TemporaryDirectory() as tmp:
        bank_path = Path(tmp) / "bank"
        folder = video_dir(bank_path, "video")
        folder.mkdir(parents=True)
        features = np.empty((len(timestamps), *shape), np.float16)
        for start in range(0, len(features), 256):  # in chunks: a float32 copy of the whole video is 0.5 GiB
            features[start:start + 256] = rng.standard_normal((len(features[start:start + 256]), *shape), np.float32)
        write_video_arrays(folder, features, timestamps, np.tile([0.1, 0.1, 0.5, 0.9], (len(timestamps), 1)))
        record = BankVideo("video", len(timestamps), 0, args.video_seconds - 1, sha256_file(folder / "features.npy"),
                           sha256_file(folder / "index.npy"))
        BankManifest("fp16", shape, "val", "synthetic", {}, (record,)).write(bank_path)
        bank = FeatureBank(bank_path)
        middle = args.video_seconds // 2
        window = bank.window("video", middle, args.window)
        read_ms = _median_ms(lambda: bank.window("video", middle, args.window), args.repeats * 4)

        torch.manual_seed(0)
        head = ACFBHead(HeadConfig(type="acfb", width=2304, depth=2)).eval()
        context = torch.randn(1, 2304, 16, 29)
        rois = torch.tensor([[0, 0.1, 0.1, 0.4, 0.9], [0, 0.4, 0.2, 0.7, 0.9], [0, 0.6, 0.1, 0.9, 0.8]])
        entries = torch.from_numpy(window.features.copy())
        mask = torch.ones(len(rois), len(entries), dtype=torch.bool)
        with torch.inference_mode():
            keys, values = head.project_bank(entries)
            head_ms = _median_ms(lambda: head(context, rois, entries, mask), args.repeats)
            project_ms = _median_ms(lambda: head.project_bank(entries), args.repeats)
            projected_ms = _median_ms(lambda: head.forward_projected(context, rois, keys, values, mask), args.repeats)
    print(json.dumps({
        "entries_in_window": len(window), "window_mib": round(window.features.nbytes / 2**20, 2),
        "read_window_ms": round(read_ms, 3), "head_on_the_fly_kv_ms": round(head_ms, 1),
        "kv_projection_ms": round(project_ms, 1), "head_precomputed_kv_ms": round(projected_ms, 1),
        "torch_threads": torch.get_num_threads(),
    }, indent=2))


if __name__ == "__main__":
    main()
