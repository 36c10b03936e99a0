"""Feature bank vs no bank on temporal synthetic data, for several seeds (docs/bank.md's figures).

Each seed runs `acar_deploy.train.bank_gain.measure_bank_gain`: synth --temporal -> no-bank
model from scratch, then its head alone (the extractor) -> banks of the train and val splits -> the bank model and the no-bank model fine-tune
the extractor's head (backbone frozen) for the same epochs with the same recipe -> val frame-mAP and
AP watch of both, and how well the extractor sees the event (docs/bank.md).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bank_gain.py --out /tmp/bank_gain --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from acar_deploy.train.bank_gain import BankGainSettings, measure_bank_gain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="one folder per seed is written under it")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--video-seconds", type=int, default=6)
    parser.add_argument("--extractor-epochs", type=int, default=6)
    parser.add_argument("--extractor-head-epochs", type=int, default=24,
                        help="head-only epochs of the no-bank model before it fills the bank (0: none)")
    parser.add_argument("--extra-epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()

    rows = []
    for seed in args.seeds:
        result = measure_bank_gain(BankGainSettings(
            out=args.out / f"seed{seed}", videos=args.videos, seconds=args.video_seconds,
            extractor_epochs=args.extractor_epochs, extractor_head_epochs=args.extractor_head_epochs,
            extra_epochs=args.extra_epochs, seed=seed,
            threads=args.threads, workers=1, force=args.force))
        rows.append(result.to_json())
        print(f"seed {seed}: no bank {result.no_bank.val_map:.4f} (AP watch {result.no_bank.ap_watch:.4f}), "
              f"bank {result.bank.val_map:.4f} (AP watch {result.bank.ap_watch:.4f}), margin {result.margin:+.4f}",
              flush=True)
    print("\n| seed | extractor mAP | extractor AP listen | extractor sees event | no bank mAP | bank mAP | margin "
          "| no bank AP watch | bank AP watch |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        sees = "n/a" if r["extractor_sees_event"] is None else f"{r['extractor_sees_event']:+.3f}"
        heard = "n/a" if r["extractor_ap_heard"] is None else f"{r['extractor_ap_heard']:.3f}"
        print(f"| {r['seed']} | {r['extractor_map']:.4f} | {heard} | {sees} | {r['no_bank']['val_maps'][-1]:.4f} | "
              f"{r['bank']['val_maps'][-1]:.4f} | {r['margin']:+.4f} | {r['no_bank']['ap_watch']:.4f} | "
              f"{r['bank']['ap_watch']:.4f} |")
    margins = [r["margin"] for r in rows]
    print(f"\nmean margin {statistics.mean(margins):+.4f} over {len(margins)} seeds "
          f"(min {min(margins):+.4f}, max {max(margins):+.4f})")
    args.out.mkdir(parents=True, exist_ok=True)
    name = "bank_gain_seeds.json" if len(args.seeds) > 1 else f"bank_gain_seed{args.seeds[0]}.json"
    (args.out / name).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
