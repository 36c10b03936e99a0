"""Train the full ACAR R50 architecture on synthetic AVA-style data, for accuracy figures per engine.

Random-weight R50 parity says nothing about accuracy (every box scores alike); this trains acar_r50
(unchanged architecture; shorter clips and smaller frames than AVA's 32x256 so it fits 2 CPU cores in
about 40 minutes) on `acar-deploy synth` output, reports its validation frame-mAP against the chance
level (the same boxes with shuffled-in uniform random scores), and saves the checkpoint OUTSIDE git
(default ~/.cache/acar-deploy/r50-synth). Use that checkpoint for every R50 parity/accuracy figure.

    .venv/bin/python benchmarks/train_r50.py                      # the ~40-minute run (2 cores)
    .venv/bin/python benchmarks/train_r50.py --config acar_tiny --videos 4 --epochs 1 \
        --out /tmp/r50-smoke --force                              # smoke test of the script (~1 min)

Writes OUT/data (dataset), OUT/config.yaml, OUT/run (checkpoints, history, val predictions) and
OUT/summary.json (val mAP, chance mAP, minutes, checkpoint path).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path.home() / ".cache" / "acar-deploy" / "r50-synth"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (keep it outside git)")
    parser.add_argument("--config", default="acar_r50", help="built-in model config (architecture)")
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--video-seconds", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--num-frames", type=int, default=16, help="clip length (AVA: 32)")
    parser.add_argument("--short-side", type=int, default=96, help="clip short side in pixels (AVA: 256)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="replace OUT")
    return parser.parse_args()


def training_config(args: argparse.Namespace) -> dict:
    """The chosen architecture with the synthetic data's classes, input size and training recipe."""
    from acar_deploy.data.synth import synth_config_dict
    from acar_deploy.model.config import get_config

    synth = synth_config_dict()
    data = get_config(args.config).to_dict()
    data["name"] = f"{data['name']}_synth"
    data["head"]["num_classes"] = synth["head"]["num_classes"]
    data["input"].update(num_frames=args.num_frames, short_side=args.short_side)
    data["train"] = {**synth["train"], "batch_size": args.batch_size, "n_epochs": args.epochs}
    return data


def chance_map(data_dir: Path, predictions: Path, seeds: int = 5) -> float:
    """Mean frame-mAP of the same boxes with uniform random scores: what an untrained model gets."""
    from acar_deploy.eval.frame_map import frame_map

    files = json.loads((data_dir / "dataset.json").read_text())["files"]
    rows = [line.split(",") for line in predictions.read_text().splitlines() if line.strip()]
    results = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        shuffled = predictions.with_name(f"chance_{seed}.csv")
        shuffled.write_text("".join(",".join([*r[:7], f"{rng.uniform():.6f}"]) + "\n" for r in rows))
        results.append(frame_map(data_dir / files["val_annotations"], shuffled, labelmap=data_dir / files["labelmap"],
                                 exclusions=data_dir / files["val_exclusions"]).mAP)
        shuffled.unlink()
    return float(np.mean(results))


def main() -> None:
    import yaml

    from acar_deploy.data.synth import SynthSettings, synthesize
    from acar_deploy.train.loop import TrainSettings, train

    args = parse_args()
    started = time.perf_counter()
    if args.out.exists():
        if not args.force:
            raise SystemExit(f"{args.out} exists; pass --force to replace it")
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    data = args.out / "data"
    synthesize(SynthSettings(out_dir=data, videos=args.videos, seconds=args.video_seconds, seed=0,
                             width=args.width, height=args.height))
    config_path = args.out / "config.yaml"
    config_path.write_text(yaml.safe_dump(training_config(args), sort_keys=False))
    result = train(TrainSettings(config=str(config_path), data=data, out=args.out / "run", epochs=args.epochs,
                                 workers=0, threads=args.threads, validate=True, progress=True))
    last_epoch = result.history[-1].epoch
    chance = chance_map(data, result.run_dir / f"val_predictions_{last_epoch}.csv")
    summary = {
        "config": args.config,
        "input": {"num_frames": args.num_frames, "short_side": args.short_side},
        "data": {"videos": args.videos, "seconds": args.video_seconds, "frame_size": [args.width, args.height]},
        "epochs": args.epochs,
        "threads": args.threads,
        "val_frame_map": result.val_map,
        "chance_frame_map": chance,
        "val_map_per_epoch": [r.val_map for r in result.history],
        "checkpoint": str(result.final_checkpoint),
        "minutes": round((time.perf_counter() - started) / 60, 2),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
