"""Time our AVA frame-mAP on a full-AVA-val-sized synthetic input, optionally beside the official code.

    .venv/bin/python benchmarks/bench_frame_map.py                      # our figure only
    .venv/bin/python benchmarks/bench_frame_map.py --official /path/to/ActivityNet/Evaluation

The input is deterministic (seeded): ~60k keyframes (67 videos x 897 keyframes), ground truth with
1-3 persons per keyframe and 1-3 actions each over the 60 AVA v2.1 classes, and ~1M detection rows
(the ground-truth boxes jittered plus false-positive boxes, several classes per box, scores `%.3f`
like ACAR-Net's output, so ties in score are frequent). Both evaluators read the same CSV files; the
time includes reading them; wall and CPU seconds are both reported (CPU time is the fairer
figure on a shared machine). `--official` accepts ActivityNet's `Evaluation` folder (or its
`get_ava_performance.py`); it runs in a subprocess with numpy-2 aliases (`np.bool`, `np.float`,
`np.NAN`) that the 2018 code still uses, and is never copied into this project.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from acar_deploy.data.ava_csv import AvaAnnotations, AvaPredictions, write_annotations, write_predictions
from acar_deploy.data.labelmap import PACKAGED_LABELMAP, read_labelmap
from acar_deploy.eval import frame_map

NUM_VIDEOS = 67
KEYFRAMES_PER_VIDEO = 897  # timestamps 0902 .. 1798, as in AVA


def make_inputs(out: Path, seed: int = 0, scale: float = 1.0) -> tuple[Path, Path]:
    """Write gt.csv and pred.csv under `out`; `scale` < 1 shrinks the number of videos (smoke runs)."""
    rng = np.random.default_rng(seed)
    classes = np.array(read_labelmap().ids)
    videos = [f"vid{v:08d}xx" for v in range(max(1, round(NUM_VIDEOS * scale)))]
    stamps = np.array([f"{t:04d}" for t in range(902, 902 + KEYFRAMES_PER_VIDEO)])
    n_key = len(videos) * len(stamps)
    key_video = np.repeat(np.array(videos), len(stamps))
    key_stamp = np.tile(stamps, len(videos))

    persons = rng.integers(1, 4, n_key)  # persons per keyframe
    p_key = np.repeat(np.arange(n_key), persons)
    n_p = len(p_key)
    xy = rng.uniform(0.0, 0.6, (n_p, 2))
    wh = rng.uniform(0.15, 0.4, (n_p, 2))
    p_box = np.round(np.concatenate([xy, np.minimum(xy + wh, 1.0)], axis=1), 3)

    actions = rng.integers(1, 4, n_p)
    g_person = np.repeat(np.arange(n_p), actions)
    g_action = classes[rng.integers(0, len(classes), len(g_person))]
    gt = AvaAnnotations(
        video_id=key_video[p_key[g_person]],
        timestamp=key_stamp[p_key[g_person]],
        boxes=p_box[g_person],
        action_id=g_action,
        person_id=g_person - np.searchsorted(p_key, p_key[g_person]),
    )

    # Detected boxes: each person jittered, plus ~0.5 false-positive boxes per keyframe.
    fp_boxes = rng.poisson(0.5, n_key)
    d_key = np.concatenate([p_key, np.repeat(np.arange(n_key), fp_boxes)])
    jitter = rng.normal(0.0, 0.03, (n_p, 4))
    fp_xy = rng.uniform(0.0, 0.6, (len(d_key) - n_p, 2))
    d_box = np.concatenate([p_box + jitter, np.concatenate([fp_xy, fp_xy + 0.3], axis=1)])
    d_box = np.round(np.clip(d_box, 0.0, 1.0), 3)
    per_box = 6  # classes scored per detected box
    r_box = np.repeat(np.arange(len(d_key)), per_box)
    r_action = classes[rng.integers(0, len(classes), len(r_box))]
    r_score = np.round(rng.beta(0.6, 3.0, len(r_box)), 3)
    # Ground-truth actions of true boxes get a detection with a higher score.
    t_action = g_action
    t_score = np.round(np.clip(rng.beta(3.0, 1.5, len(g_person)), 0.0, 1.0), 3)
    rows_box = np.concatenate([r_box, g_person])
    rows_action = np.concatenate([r_action, t_action])
    rows_score = np.concatenate([r_score, t_score])
    order = np.argsort(d_key[rows_box], kind="stable")  # rows grouped by keyframe, like model output
    rows_box, rows_action, rows_score = rows_box[order], rows_action[order], rows_score[order]
    pred = AvaPredictions(
        video_id=key_video[d_key[rows_box]],
        timestamp=key_stamp[d_key[rows_box]],
        boxes=d_box[rows_box],
        action_id=rows_action,
        score=rows_score,
    )
    out.mkdir(parents=True, exist_ok=True)
    write_annotations(gt, out / "gt.csv")
    write_predictions(pred, out / "pred.csv")
    return out / "gt.csv", out / "pred.csv"


_OFFICIAL_RUNNER = textwrap.dedent(
    """
    import io, json, logging, os, pprint, sys, time, importlib.util
    import numpy as np
    for name, value in (("bool", bool), ("float", float), ("int", int), ("NAN", np.nan)):
        if not hasattr(np, name):
            setattr(np, name, value)
    logging.disable(logging.CRITICAL)
    logging.warn = lambda *a, **k: None
    script, labelmap, gt, pred = sys.argv[1:5]
    folder = os.path.dirname(script)
    sys.path[:0] = [folder, os.path.join(folder, "ava")]
    spec = importlib.util.spec_from_file_location("get_ava_performance", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    captured = {}
    module.pprint.pprint = lambda metrics, indent=None: captured.update(metrics)
    start, cpu_start = time.perf_counter(), time.process_time()
    with open(labelmap) as l, open(gt) as g, open(pred) as d:
        if module.run_evaluation.__code__.co_argcount == 4:
            module.run_evaluation(l, g, d, None)
        else:
            module.run_evaluation(l, g, d)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    categories, _ = module.read_labelmap(open(labelmap))
    per_class = {}
    for c in categories:
        v = captured["PascalBoxes_PerformanceByCategory/AP@0.5IOU/" + c["name"]]
        per_class[c["id"]] = None if np.isnan(v) else float(v)
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "mAP": float(captured["PascalBoxes_Precision/mAP@0.5IOU"]),
                      "per_class": per_class}))
    """
)


def run_official(path: Path, labelmap: Path, gt: Path, pred: Path) -> dict:
    script = path / "get_ava_performance.py" if path.is_dir() else path
    if not script.is_file():
        raise SystemExit(
            f"{script}: not found; pass ActivityNet's Evaluation folder or get_ava_performance.py"
        )
    proc = subprocess.run(
        [sys.executable, "-c", _OFFICIAL_RUNNER, str(script), str(labelmap), str(gt), str(pred)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"official evaluator failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--official", type=Path, help="ActivityNet Evaluation folder or get_ava_performance.py"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/acar_bench_frame_map"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="fraction of the 67 videos (1.0 = AVA val size)"
    )
    parser.add_argument("--repeat", type=int, default=2, help="our evaluator's runs; the best is reported")
    args = parser.parse_args()

    gt, pred = make_inputs(args.workdir, args.seed, args.scale)
    n_gt = sum(1 for _ in open(gt))
    n_pred = sum(1 for _ in open(pred))
    print(f"input: {gt} ({n_gt} rows), {pred} ({n_pred} rows)")

    times, cpu_times = [], []
    for _ in range(args.repeat):
        start, cpu_start = time.perf_counter(), time.process_time()
        ours = frame_map(gt, pred)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    ours_s, ours_cpu = min(times), min(cpu_times)
    print(
        f"ours:     {ours_s:8.2f} s wall, {ours_cpu:8.2f} s CPU (best of {args.repeat}, reading the CSVs included)"
        f"  mAP = {ours.mAP:.6f}"
    )
    if args.official is None:
        return
    labelmap = Path(__file__).resolve().parents[1] / "acar_deploy" / "data" / PACKAGED_LABELMAP
    official = run_official(args.official, labelmap, gt, pred)
    diffs = [abs(official["mAP"] - ours.mAP)]
    for class_id, ap in ours.per_class.items():
        other = official["per_class"][str(class_id)]
        if (ap is None) != (other is None):
            diffs.append(float("inf"))
        elif ap is not None:
            diffs.append(abs(ap - other))
    print(
        f"official: {official['seconds']:8.2f} s wall, {official['cpu_seconds']:8.2f} s CPU  mAP = {official['mAP']:.6f}"
    )
    print(
        f"speed-up: {official['seconds'] / ours_s:8.1f}x wall, {official['cpu_seconds'] / ours_cpu:.1f}x CPU"
        f"   max |AP difference| = {max(diffs):.3g}"
    )


if __name__ == "__main__":
    main()
