"""Frame-mAP drop per engine on the trained R50 (benchmarks/train_r50.py), for the accuracy table.

Random-weight parity says little about what a precision costs (class scores are near ties); this
exports the checkpoint that train_r50.py saved, builds one engine per runtime x precision from it,
and runs the parity gate of each on a held-out synthetic set the model never saw (train_r50.py's own
val split has 39 boxes, where one changed ranking moves frame-mAP by ~1.7 points; the held-out set is
larger, so a drop of a few tenths of a point can be told from one box).

    .venv/bin/python benchmarks/train_r50.py           # first: ~40 min on 2 cores, checkpoint outside git
    .venv/bin/python benchmarks/accuracy_r50.py        # then: export + 6 builds + 6 parity runs

Reads TRAINED/summary.json (default ~/.cache/acar-deploy/r50-synth); writes TRAINED/heldout (the
held-out videos, seed --heldout-seed, all in the val split), TRAINED/export, TRAINED/engines/* and benchmarks/results/r50-accuracy/{accuracy.json,accuracy.md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRAINED = Path.home() / ".cache" / "acar-deploy" / "r50-synth"
ENGINES = (("ort", "fp32"), ("ort", "fp16"), ("ort", "int8"), ("openvino", "fp32"), ("openvino", "bf16"),
           ("openvino", "int8"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trained", type=Path, default=DEFAULT_TRAINED, help="train_r50.py's --out folder")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "r50-accuracy")
    parser.add_argument("--engines", default=",".join(f"{r}-{p}" for r, p in ENGINES),
                        help="comma-separated runtime-precision pairs")
    parser.add_argument("--heldout-videos", type=int, default=48, help="videos in the held-out set (0: train_r50's val)")
    parser.add_argument("--heldout-seed", type=int, default=1, help="train_r50.py synthesizes with seed 0")
    parser.add_argument("--calib-clips", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rebuild", action="store_true", help="export and build again even where outputs exist")
    return parser.parse_args()


def heldout_set(args: argparse.Namespace, summary: dict) -> Path:
    """Videos the trained model never saw: the training set's generator and frame size, another seed."""
    from acar_deploy.data.synth import SynthSettings, synthesize

    out = args.trained / "heldout"
    if args.rebuild or not (out / "dataset.json").is_file():
        width, height = summary["data"]["frame_size"]
        synthesize(SynthSettings(out_dir=out, videos=args.heldout_videos, seconds=summary["data"]["seconds"],
                                 seed=args.heldout_seed, width=width, height=height, val_fraction=1.0, force=True,
                                 progress=False))
    return out


def main() -> None:
    from acar_deploy.engines.build import build_engine
    from acar_deploy.engines.settings import BuildSettings, Int8Policy
    from acar_deploy.export.exporter import ExportSettings, Parts, export_model
    from acar_deploy.verify.parity import ParityGateFailed, ParitySettings, check_parity

    args = parse_args()
    started = time.perf_counter()
    summary = json.loads((args.trained / "summary.json").read_text())
    checkpoint, data = Path(summary["checkpoint"]), args.trained / "data"
    calib = data  # calibration clips come from the training videos, never from the set scored
    if args.heldout_videos:
        data = heldout_set(args, summary)
    export = args.trained / "export"
    if args.rebuild or not (export / "manifest.json").is_file():
        export_model(export, checkpoint, None, ExportSettings(parts=Parts.all), force=True)
    rows = []
    for pair in args.engines.split(","):
        runtime, precision = pair.split("-")
        engine = args.trained / "engines" / pair
        if args.rebuild or not (engine / "engine.json").is_file():
            build_engine(BuildSettings(export, runtime=runtime, precision=precision, out_dir=engine, force=True,
                                       int8=Int8Policy(calib_data=calib, calib_clips=args.calib_clips)),
                         progress=False)
        try:
            report = check_parity(ParitySettings(engine=str(engine), data=data, checkpoint=checkpoint,
                                                 threads=args.threads, out=args.results / pair, force=True),
                                  progress=False)
        except ParityGateFailed as failed:
            report = failed.report
        rows.append({"engine": pair, "passed": report.passed, "failures": list(report.failures),
                     "map_eager": report.map_eager, "map_engine": report.map_engine,
                     "drop_points": -report.map_diff_points, "top1_changed": report.top1_changed,
                     "keyframes": report.keyframes, "boxes": report.boxes,
                     "ran_at": (report.metadata.get("engine") or {}).get("inference_precision")})
        print(f"[{time.perf_counter() - started:7.1f} s] {pair}: mAP {100 * report.map_engine:.2f} "
              f"(eager {100 * report.map_eager:.2f}, drop {-report.map_diff_points:+.2f} pts)", flush=True)
    from train_r50 import chance_map  # benchmarks/ is on sys.path when this runs as a script

    chance = chance_map(data, args.results / rows[0]["engine"] / "predictions_eager.csv")
    result = {"trained": summary, "scored_on": str(data), "chance_frame_map": chance, "machine": platform.processor() or platform.machine(), "threads": args.threads,
              "minutes": round((time.perf_counter() - started) / 60, 2), "engines": rows}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "accuracy.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"Trained R50 ({summary['config']}, {summary['input']['num_frames']} frames, short side "
             f"{summary['input']['short_side']}): val frame-mAP {100 * summary['val_frame_map']:.2f} "
             f"(chance {100 * summary['chance_frame_map']:.2f}) on its own val split. Scored here on {data.name}: "
             f"{rows[0]['keyframes']} keyframes, {rows[0]['boxes']} boxes, chance {100 * chance:.2f}.", "",
             "| engine | eager mAP | engine mAP | drop (pts) | top-1 changed | gate |", "|---|---:|---:|---:|---:|---|"]
    lines += [f"| {r['engine']} | {100 * r['map_eager']:.2f} | {100 * r['map_engine']:.2f} | {r['drop_points']:+.2f} | "
              f"{100 * r['top1_changed']:.1f} % | {'PASS' if r['passed'] else 'FAIL: ' + '; '.join(r['failures'])} |"
              for r in rows]
    (args.results / "accuracy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
