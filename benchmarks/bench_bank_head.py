"""Per-keyframe cost of an acfb head: bank K/V projected on the fly vs once per entry, as a function of M.

    .venv/bin/python benchmarks/bench_bank_head.py [--heads tiny r50] [--entries 8 32 64 128] [--ort]

At 256 x 454 frames (context 16 x 29, bank maps 7 x 14) with 3 actors, for each head size and number
M of bank entries in the window, the best of --repeats runs (ms) of:
  on_the_fly   the head recomputing K/V of all M entries for this keyframe (`ACFBHead.forward`)
  precomputed  the head on stored K/V (`forward_projected`) plus projecting the entries new to this
               keyframe's window: one second's share, M / (2w + 1), as consecutive keyframes of a
               video share 2w of their 2w + 1 window seconds (`bank_kv` run on those only): the
               runners' in-memory cache (`BankProjectionCache`)
  stored       K/V stored in the bank by `acar-deploy bank project`: read the window (entries and
               K/V, fp16, memory-mapped .npy of a real bank folder, page cache warm) with
               `FeatureBank.window`, then the head on them; nothing is projected. `stored_read`
               is the read alone.
Eager PyTorch always; with --ort also ONNX Runtime on the exported bank_kv and bank_head graphs
(`acar_deploy.export.exporter.export_part`, the parts `acar-deploy export` writes). Random weights and
inputs (timing only). Threads: --threads for torch and ORT (intra-op; default 1).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from acar_deploy.bank.window import FeatureBank
from acar_deploy.export.exporter import DEFAULT_OPSET, export_part
from acar_deploy.export.specs import make_spec
from acar_deploy.formats.bank import (
    BankManifest,
    BankProjection,
    BankVideo,
    ProjectionWeights,
    commit_kv_record,
    create_kv_arrays,
    video_dir,
    write_video_arrays,
)
from acar_deploy.formats.manifest import BankGeometry, ExportGeometry
from acar_deploy.model.acfb import ACFBHead
from acar_deploy.model.config import HeadConfig

HEADS = {  # context channels, head config: acar_tiny's and acar_r50's head, as acfb heads
    "tiny": HeadConfig(type="acfb", width=320, reduce_dim=32, hidden_dim=16, depth=2),
    "r50": HeadConfig(type="acfb", width=2304, depth=2),
}
CONTEXT = (16, 29)  # 256 x 454 frames, stride 16
ACTORS = 3


def _best_ms(fn, repeats: int) -> float:
    """Best of `repeats` after a warm-up: on a shared machine the minimum is the least disturbed run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return min(times)


def _ort_sessions(head: ACFBHead, config: HeadConfig, folder: Path, threads: int):
    import onnxruntime as ort

    holder = nn.Module()
    holder.head = head
    bank = BankGeometry.for_head({"hidden_dim": config.hidden_dim, "depth": config.depth}, CONTEXT)
    geometry = ExportGeometry((256, 454), CONTEXT, config.width, config.num_classes, bank=bank)
    folder.mkdir(parents=True, exist_ok=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    sessions = {}
    for part in ("bank_kv", "bank_head"):
        spec = make_spec(part, geometry)
        export_part(holder, spec, DEFAULT_OPSET, folder / spec.file)
        sessions[part] = ort.InferenceSession(str(folder / spec.file), options, providers=["CPUExecutionProvider"])
    return sessions


def _stored_bank(folder: Path, entries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                 depth: int) -> FeatureBank:
    """A one-video fp16 bank folder holding `entries` and their K/V, as `bank project` writes it; all
    entries share one timestamp, so the window at that second is the M entries (one contiguous read)."""
    shape = tuple(int(v) for v in entries.shape[1:])
    manifest = BankManifest("fp16", shape, "val", "benchmark", {})  # type: ignore[arg-type]
    (video_dir(folder, "v") / "kv").mkdir(parents=True)
    write_video_arrays(video_dir(folder, "v"), entries.numpy().astype(np.float16),
                       np.zeros(len(entries), np.int32), np.zeros((len(entries), 4), np.float32))
    BankVideo("v", len(entries), 0, 0, "-", "-").write(video_dir(folder, "v") / "video.json")
    weights = ProjectionWeights(None, 0, "benchmark", depth)
    k, v = create_kv_arrays(video_dir(folder, "v") / "kv", manifest, depth, len(entries))
    k[:], v[:] = keys.numpy(), values.numpy()
    k.flush()
    v.flush()
    del k, v
    commit_kv_record(video_dir(folder, "v") / "kv", "v", len(entries), weights)
    BankManifest(**{**manifest.__dict__, "videos": (BankVideo("v", len(entries), 0, 0, "-", "-"),),
                    "projection": BankProjection(weights, "benchmark")}).write(folder)
    bank = FeatureBank(folder)
    bank.use_stored_kv(weights)
    return bank


def _time_window(head: ACFBHead, sessions, context: torch.Tensor, rois: torch.Tensor, bank: torch.Tensor,
                 new: int, repeats: int, folder: Path) -> dict[str, float]:
    """One keyframe with M = len(bank) entries in its window, `new` of them not seen by the previous keyframe."""
    mask = torch.ones(len(rois), len(bank), dtype=torch.bool)
    row = {}
    with torch.inference_mode():
        keys, values = head.project_bank(bank)
        stored = _stored_bank(folder, bank, keys, values, len(head.hr2o))

        def read():
            window = stored.window("v", 0, 10)
            return (torch.from_numpy(window.keys.astype(np.float32)), torch.from_numpy(window.values.astype(np.float32)))

        row["eager_on_the_fly_ms"] = _best_ms(lambda: head(context, rois, bank, mask), repeats)
        attend = _best_ms(lambda: head.forward_projected(context, rois, keys, values, mask), repeats)
        row["eager_precomputed_ms"] = attend + _best_ms(lambda: head.project_bank(bank[:new]), repeats)
        row["stored_read_ms"] = _best_ms(read, repeats)
        row["eager_stored_ms"] = _best_ms(lambda: head.forward_projected(context, rois, *read(), mask), repeats)
    if sessions is None:
        return row
    feeds = {"context": context.numpy(), "rois": rois.numpy(), "bank_window": mask.numpy()}
    entries = bank.numpy()

    def on_the_fly():
        k, v = sessions["bank_kv"].run(None, {"bank_entries": entries})
        return sessions["bank_head"].run(None, {**feeds, "bank_keys": k, "bank_values": v})

    k, v = sessions["bank_kv"].run(None, {"bank_entries": entries})
    row["ort_on_the_fly_ms"] = _best_ms(on_the_fly, repeats)
    row["ort_precomputed_ms"] = (
        _best_ms(lambda: sessions["bank_head"].run(None, {**feeds, "bank_keys": k, "bank_values": v}), repeats)
        + _best_ms(lambda: sessions["bank_kv"].run(None, {"bank_entries": entries[:new]}), repeats))

    def ort_stored():
        keys_read, values_read = read()
        return sessions["bank_head"].run(None, {**feeds, "bank_keys": keys_read.numpy(), "bank_values": values_read.numpy()})

    row["ort_stored_ms"] = _best_ms(ort_stored, repeats)
    return row


def bench_head(name: str, entries: list[int], window: int, repeats: int, use_ort: bool, tmp: Path,
               threads: int) -> list[dict]:
    config = HEADS[name]
    torch.manual_seed(0)
    head = ACFBHead(config).eval()
    rng = np.random.default_rng(0)
    context = torch.from_numpy(rng.exponential(0.5, (1, config.width, *CONTEXT)).astype(np.float32))
    rois = torch.tensor([[0, 0.1, 0.1, 0.4, 0.9], [0, 0.4, 0.2, 0.7, 0.9], [0, 0.6, 0.1, 0.9, 0.8]])
    map_size = BankGeometry.for_head({"hidden_dim": config.hidden_dim}, CONTEXT).size
    sessions = _ort_sessions(head, config, tmp / name, threads) if use_ort else None
    rows = []
    for m in entries:
        bank = torch.from_numpy(rng.exponential(0.5, (m, config.hidden_dim, *map_size)).astype(np.float16).astype(np.float32))
        new = max(1, round(m / (2 * window + 1)))
        timed = _time_window(head, sessions, context, rois, bank, new, repeats, tmp / f"{name}-bank-{m}")
        row = {"head": name, "M": m, "new_entries": new, **timed}
        rows.append({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()})
        print(json.dumps(rows[-1]), flush=True)  # one line per M as it is measured (slow heads, shared machines)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", nargs="+", choices=sorted(HEADS), default=["tiny"])
    parser.add_argument("--entries", nargs="+", type=int, default=[8, 32, 64, 128])
    parser.add_argument("--window", type=int, default=10, help="w: the window holds 2w + 1 seconds")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch and ORT intra-op threads")
    parser.add_argument("--ort", action="store_true", help="also time ONNX Runtime on the exported bank parts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.heads:
            rows += bench_head(name, args.entries, args.window, args.repeats, args.ort, Path(tmp), args.threads)
    print(json.dumps({"threads": args.threads, "actors": ACTORS, "window": args.window, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
