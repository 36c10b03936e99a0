"""Frame-mAP: hand-computed cases, properties, and a slow loop-based reference written from the definition."""

from __future__ import annotations

import heapq
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acar_deploy.data.ava_csv import NO_ACTION, NO_PERSON, AvaAnnotations, AvaExclusions, AvaPredictions
from acar_deploy.data.labelmap import LabelMap
from acar_deploy.errors import InputError
from acar_deploy.eval import FrameMapResult, frame_map

LABELMAP = LabelMap(ids=(1, 2, 4), names=("bend", "crouch", "dance"))

A = (0.1, 0.1, 0.5, 0.5)  # a ground-truth box
B = (0.6, 0.6, 0.9, 0.9)  # far from A
FAR = (0.0, 0.8, 0.1, 0.9)  # overlaps nothing above


def write(path: Path, rows: list[tuple]) -> Path:
    path.write_text("".join(",".join(str(c) for c in row) + "\n" for row in rows))
    return path


def gt_row(ts, box, cls, video="v"):
    return (video, ts, *box, cls)


def det_row(ts, box, cls, score, video="v"):
    return (video, ts, *box, cls, score)


def run(tmp_path, gt, det, protocol="head", exclusions=None) -> FrameMapResult:
    ex = write(tmp_path / "ex.csv", exclusions) if exclusions is not None else None
    return frame_map(write(tmp_path / "gt.csv", gt), write(tmp_path / "det.csv", det), LABELMAP, ex, protocol)


# ----------------------------------------------------------------------------- hand-computed cases


def test_false_positive_ranked_first(tmp_path):
    gt = [gt_row("0902", A, 1), gt_row("0902", B, 1)]
    det = [det_row("0902", FAR, 1, 0.9), det_row("0902", A, 1, 0.8), det_row("0902", B, 1, 0.7)]
    r = run(tmp_path, gt, det)
    # ranks: FP (p 0, r 0), TP (p 1/2, r 1/2), TP (p 2/3, r 1); interpolated p at r=1/2 is 2/3
    # AP = 1/2 * 2/3 + 1/2 * 2/3 = 2/3
    assert r.per_class[1] == pytest.approx(2 / 3)
    assert r.per_class[2] is None and r.per_class[4] is None
    assert r.mAP == pytest.approx(2 / 3)


def test_best_iou_ground_truth_already_taken_is_a_false_positive(tmp_path):
    ga, gb = (0.0, 0.0, 0.5, 1.0), (0.2, 0.0, 0.7, 1.0)
    near_a = (0.05, 0.0, 0.55, 1.0)  # IoU with ga = .45/.55 = .818, with gb = .35/.65 = .538
    det = [det_row("0902", ga, 1, 0.9), det_row("0902", near_a, 1, 0.8)]
    r = run(tmp_path, [gt_row("0902", ga, 1), gt_row("0902", gb, 1)], det)
    # det 1 takes ga; det 2's best box is ga (taken) -> FP although IoU with gb >= .5
    # ranks: TP (p 1, r 1/2), FP (p 1/2, r 1/2) -> AP = 1/2 * 1 = 0.5
    assert r.per_class[1] == pytest.approx(0.5)


def test_equal_iou_goes_to_the_first_box_in_heap_order(tmp_path):
    left, right = (0.125, 0.25, 0.625, 0.75), (0.375, 0.25, 0.875, 0.75)
    middle = (0.25, 0.25, 0.75, 0.75)  # IoU with either box = .1875 / .3125 = 0.6
    gt = [gt_row("0902", right, 1), gt_row("0902", left, 1)]  # file order: right first
    det = [det_row("0902", middle, 1, 0.9), det_row("0902", left, 1, 0.8)]
    # the official heap holds (1.0, 1, y1, x1, ...) tuples: left (x1 .125) sorts before right, so the
    # middle detection takes `left` and the exact `left` detection is then a FP:
    # TP (p 1, r 1/2), FP -> AP = 1/2 (taking boxes in file order would give 1.0)
    assert run(tmp_path, gt, det).per_class[1] == pytest.approx(0.5)


def test_duplicate_boxes(tmp_path):
    gt = [gt_row("0902", A, 1), gt_row("0902", A, 1)]  # the same box annotated twice
    det = [det_row("0902", A, 1, 0.9), det_row("0902", A, 1, 0.8)]
    r = run(tmp_path, gt, det)
    # both detections pick the first of the equal boxes (argmax): TP then FP; num_gt = 2
    # ranks: TP (p 1, r 1/2), FP (p 1/2, r 1/2) -> AP = 1/2
    assert r.per_class[1] == pytest.approx(0.5)


def test_classes_outside_labelmap(tmp_path):
    gt = [gt_row("0902", A, 1), gt_row("0903", A, 3)]  # class 3 is not in the label map
    det = [det_row("0903", A, 1, 0.95), det_row("0903", A, 3, 0.99), det_row("0902", A, 1, 0.5)]
    r = run(tmp_path, gt, det)
    # 0903 stays annotated although its only row is dropped: the class-1 detection there is a FP;
    # the class-3 detection is dropped. ranks: FP (p 0), TP (p 1/2, r 1) -> AP = 1/2
    assert r.per_class == {1: pytest.approx(0.5), 2: None, 4: None}
    assert 3 not in r.per_class
    assert r.mAP == pytest.approx(0.5)


@pytest.mark.parametrize(("protocol", "expected"), [("head", 1.0), ("2019", 0.5)])
def test_detections_on_keyframes_without_ground_truth(tmp_path, protocol, expected):
    det = [det_row("0999", A, 1, 0.9), det_row("0902", A, 1, 0.5)]
    r = run(tmp_path, [gt_row("0902", A, 1)], det, protocol)
    # head: 0999 is ignored -> one TP -> AP 1; 2019: FP then TP -> AP 1/2 * 1/2... = 0.5
    assert r.per_class[1] == pytest.approx(expected)


def test_two_column_rows_mark_annotated_keyframes(tmp_path):
    det = [det_row("0903", A, 1, 0.9), det_row("0902", A, 1, 0.5)]
    with_row = run(tmp_path, [gt_row("0902", A, 1), ("v", "0903")], det)
    without = run(tmp_path, [gt_row("0902", A, 1)], det)
    # with the row 0903 is annotated: FP then TP -> 1/2; without it the detection is ignored -> 1
    assert with_row.per_class[1] == pytest.approx(0.5)
    assert without.per_class[1] == pytest.approx(1.0)
    with pytest.raises(InputError, match="2019"):
        run(tmp_path, [gt_row("0902", A, 1), ("v", "0903")], det, "2019")


@pytest.mark.parametrize("protocol", ["head", "2019"])
def test_exclusions(tmp_path, protocol):
    gt = [gt_row("0902", A, 1), gt_row("0903", B, 1)]
    det = [det_row("0903", FAR, 1, 0.9), det_row("0902", A, 1, 0.8)]
    # not excluded: num_gt 2, ranks FP (p 0), TP (p 1/2, r 1/2) -> AP = 1/2 * 1/2 = 0.25
    assert run(tmp_path, gt, det, protocol).per_class[1] == pytest.approx(0.25)
    # 0903 excluded: its box and detection leave; one GT, one TP -> AP 1
    assert run(tmp_path, gt, det, protocol, exclusions=[("v", "903")]).per_class[1] == pytest.approx(1.0)


def test_timestamp_keys_per_protocol(tmp_path):
    # 0902, 902 and 902.0 are one keyframe at HEAD (%.6f); 902.0 is an error in 2019 (%04d of int())
    gt = [gt_row("0902", A, 1)]
    assert run(tmp_path, gt, [det_row("902.0", A, 1, 0.5)]).per_class[1] == pytest.approx(1.0)
    assert run(tmp_path, gt, [det_row("902", A, 1, 0.5)], "2019").per_class[1] == pytest.approx(1.0)
    with pytest.raises(InputError, match="not an integer"):
        run(tmp_path, gt, [det_row("902.0", A, 1, 0.5)], "2019")


def _filler(n, score):
    return [det_row("0902", FAR, 2, score) for _ in range(n)]


def test_cap_tie_keeps_the_first_of_equal_scores(tmp_path):
    gt = [gt_row("0902", A, 1)]
    tp, other = det_row("0902", A, 1, 0.5), det_row("0902", B, 2, 0.5)
    # 49 rows at .9 + the first .5 fill the 50 places; the second .5 is not > the smallest (.5): rejected
    assert run(tmp_path, gt, _filler(49, 0.9) + [tp, other]).per_class[1] == pytest.approx(1.0)
    assert run(tmp_path, gt, _filler(49, 0.9) + [other, tp]).per_class[1] == pytest.approx(0.0)


def test_cap_eviction_takes_the_smallest_tuple(tmp_path):
    gt = [gt_row("0902", A, 1)]
    tp, other = det_row("0902", A, 1, 0.5), det_row("0902", B, 2, 0.5)
    # 48 x .9 + tp + other = 50; a .95 row evicts the smallest (score, action_id, ...) tuple:
    # (.5, 1, ...) < (.5, 2, ...), so the class-1 TP leaves although it came first -> AP 0
    rows = _filler(48, 0.9) + [tp, other, det_row("0902", FAR, 2, 0.95)]
    assert run(tmp_path, gt, rows).per_class[1] == pytest.approx(0.0)


def test_invalid_detection_boxes_are_dropped_after_the_cap(tmp_path):
    flat = (0.3, 0.1, 0.3, 0.5)  # x2 == x1
    r = run(tmp_path, [gt_row("0902", A, 1)], [det_row("0902", flat, 1, 0.9), det_row("0902", A, 1, 0.5)])
    assert r.per_class[1] == pytest.approx(1.0)  # counted as a FP it would give 0.5


def test_empty_predictions(tmp_path):
    r = run(tmp_path, [gt_row("0902", A, 1), gt_row("0902", A, 4)], [])
    assert r.per_class == {1: 0.0, 2: None, 4: 0.0}
    assert r.mAP == 0.0


def test_no_ground_truth_of_labelmap_classes_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no ground-truth box"):
        run(tmp_path, [gt_row("0902", A, 3)], [det_row("0902", A, 1, 0.5)])


def test_eval_never_imports_torch(tmp_path):
    gt = write(tmp_path / "gt.csv", [gt_row("0902", A, 1)])
    det = write(tmp_path / "det.csv", [det_row("0902", A, 1, 0.5)])
    code = (
        "import sys\nfrom acar_deploy.eval import frame_map\n"
        f"r = frame_map({str(gt)!r}, {str(det)!r})\nassert r.mAP == 1.0, r\n"
        "bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'pandas') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- reference from the definition


def reference_map(gt_rows, det_rows, class_ids, protocol="head", excluded=()):
    """Slow, loop-based frame-mAP written from the protocol's definition (distinct scores assumed)."""

    def key(video, ts):
        return (video, float(ts)) if protocol == "head" else (video, int(ts))

    excluded = {key(*e) for e in excluded}
    annotated = {key(r[0], r[1]) for r in gt_rows} - excluded
    gt_heaps = {}  # the official reader keeps ground truth in a heap too; argmax ties follow its order
    for video, ts, x1, y1, x2, y2, cls in gt_rows:
        k = key(video, ts)
        if cls in class_ids and k not in excluded:
            heapq.heappush(gt_heaps.setdefault(k, []), (1.0, cls, y1, x1, y2, x2))
    gt = {k: [(c, (x1, y1, x2, y2)) for _, c, y1, x1, y2, x2 in h] for k, h in gt_heaps.items()}
    heaps = {}
    for video, ts, x1, y1, x2, y2, cls, score in det_rows:
        if cls not in class_ids:
            continue
        heap = heaps.setdefault(key(video, ts), [])
        item = (score, cls, y1, x1, y2, x2)
        if len(heap) < 50:
            heapq.heappush(heap, item)
        elif score > heap[0][0]:
            heapq.heapreplace(heap, item)

    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    results = {c: [] for c in class_ids}  # (score, is_tp)
    for k, heap in heaps.items():
        if k in excluded or (protocol == "head" and k not in annotated):
            continue
        for score, cls, y1, x1, y2, x2 in sorted(heap, reverse=True):
            if not (x1 < x2 and y1 < y2):
                continue
            boxes = [(i, b) for i, (c, b) in enumerate(gt.get(k, [])) if c == cls]
            taken = results.setdefault(("taken", k), set())
            best, best_iou = None, -1.0
            for i, b in boxes:
                v = iou((x1, y1, x2, y2), b)
                if v > best_iou:
                    best, best_iou = i, v
            hit = best is not None and best_iou >= 0.5 and best not in taken
            if hit:
                taken.add(best)
            results[cls].append((score, hit))
    per_class = {}
    for c in class_ids:
        n_gt = sum(1 for boxes in gt.values() for cls, _ in boxes if cls == c)
        if n_gt == 0:
            per_class[c] = None
            continue
        dets = sorted(results[c], reverse=True)
        tp = fp = 0
        points = []  # (recall, precision) after each detection
        for _, hit in dets:
            tp, fp = tp + hit, fp + (not hit)
            points.append((tp / n_gt, tp / (tp + fp)))
        # all-point AP: sum over recall steps of the best precision at that recall or beyond
        ap, last_recall = 0.0, 0.0
        for i, (recall, _) in enumerate(points):
            if recall > last_recall:
                ap += (recall - last_recall) * max(p for _, p in points[i:])
                last_recall = recall
        per_class[c] = ap
    aps = [v for v in per_class.values() if v is not None]
    return sum(aps) / len(aps), per_class


def random_case(seed, n_keys=4, max_dets=70):
    rng = random.Random(seed)
    keys = [(f"v{v}", f"{t:04d}") for v in range(2) for t in range(902, 902 + n_keys // 2)]
    grid = [
        (x / 10, y / 10, x / 10 + w / 10, y / 10 + h / 10)
        for x in range(5)
        for y in range(5)
        for w in (2, 3, 4)
        for h in (2, 4)
    ]
    gt, det = [], []
    for video, ts in rng.sample(keys, rng.randint(1, len(keys))):
        for _ in range(rng.randint(1, 3)):
            box = rng.choice(grid)
            for cls in rng.sample([1, 2, 3, 4], rng.randint(1, 2)):
                gt.append((video, ts, *box, cls))
    scores = rng.sample(range(1, 10**6), rng.randint(0, max_dets))
    for s in scores:
        video, ts = rng.choice(keys)
        if gt and rng.random() < 0.5:
            box = tuple(v + rng.choice((0.0, 0.05, -0.05)) for v in rng.choice(gt)[2:6])
        else:
            box = rng.choice(grid)
        det.append((video, ts, *box, rng.choice([1, 2, 3, 4]), s / 10**6))
    return gt, det, keys


def to_tables(gt, det):
    ann = AvaAnnotations(
        video_id=np.array([r[0] for r in gt], dtype=str),
        timestamp=np.array([r[1] for r in gt], dtype=str),
        boxes=np.array([r[2:6] for r in gt], dtype=float).reshape(-1, 4),
        action_id=np.array([r[6] for r in gt], dtype=np.int64),
        person_id=np.full(len(gt), NO_PERSON, dtype=np.int64),
        source="gt",
    )
    pred = AvaPredictions(
        video_id=np.array([r[0] for r in det], dtype=str),
        timestamp=np.array([r[1] for r in det], dtype=str),
        boxes=np.array([r[2:6] for r in det], dtype=float).reshape(-1, 4),
        action_id=np.array([r[6] for r in det], dtype=np.int64),
        score=np.array([r[7] for r in det], dtype=float),
        source="det",
    )
    assert (ann.action_id != NO_ACTION).all()
    return ann, pred


@pytest.mark.parametrize("protocol", ["head", "2019"])
@pytest.mark.parametrize("seed", range(40))
def test_agrees_with_loop_reference(seed, protocol):
    gt, det, keys = random_case(seed, n_keys=2 if seed % 4 == 0 else 6, max_dets=120 if seed % 4 == 0 else 40)
    gt.append(("v0", "0902", 0.1, 0.1, 0.4, 0.4, 1))  # keys[0]: never excluded below
    excluded = [keys[1 + seed % (len(keys) - 1)]] if seed % 3 == 0 else []
    ex = (
        AvaExclusions(
            np.array([e[0] for e in excluded], dtype=str), np.array([e[1] for e in excluded], dtype=str)
        )
        if excluded
        else None
    )
    ours = frame_map(*to_tables(gt, det), LABELMAP, ex, protocol)
    ref_map, ref_per_class = reference_map(gt, det, LABELMAP.ids, protocol, excluded)
    assert ours.mAP == pytest.approx(ref_map, abs=1e-12)
    for c in LABELMAP.ids:
        assert (ours.per_class[c] is None) == (ref_per_class[c] is None)
        if ref_per_class[c] is not None:
            assert ours.per_class[c] == pytest.approx(ref_per_class[c], abs=1e-12)


# ----------------------------------------------------------------------------- properties


@st.composite
def cases(draw):
    seed = draw(st.integers(0, 10**6))
    gt, det, _ = random_case(seed, n_keys=draw(st.sampled_from([2, 4])), max_dets=draw(st.integers(0, 60)))
    gt.append(("v0", "0902", 0.1, 0.1, 0.4, 0.4, 1))
    return gt, det, draw(st.randoms(use_true_random=False))


@settings(max_examples=40, deadline=None)
@given(cases())
def test_row_order_does_not_change_map(case):
    gt, det, rng = case  # scores are distinct, so the 50 cap does not depend on order
    before = frame_map(*to_tables(gt, det), LABELMAP)
    rng.shuffle(gt)
    rng.shuffle(det)
    after = frame_map(*to_tables(gt, det), LABELMAP)
    assert after.mAP == pytest.approx(before.mAP, abs=1e-12)
    for c, ap in before.per_class.items():
        assert (ap is None and after.per_class[c] is None) or after.per_class[c] == pytest.approx(
            ap, abs=1e-12
        )


@settings(max_examples=40, deadline=None)
@given(cases(), st.floats(0.01, 1.0))
def test_perfect_detections_give_one(case, score):
    gt, _, rng = case
    unique = list(dict.fromkeys(gt))  # a box annotated twice with one class cannot be matched twice
    det = [(*row, score) for row in unique if row[6] in LABELMAP.ids]
    rng.shuffle(det)
    r = frame_map(*to_tables(unique, det), LABELMAP)
    assert r.mAP == 1.0
    assert all(ap in (None, 1.0) for ap in r.per_class.values())


@settings(max_examples=40, deadline=None)
@given(cases(), st.sampled_from([1, 2, 4]))
def test_adding_a_lower_scored_false_positive_never_raises_ap(case, cls):
    gt, det, rng = case
    video, ts = rng.choice([(r[0], r[1]) for r in gt])
    lowest = min([r[7] for r in det], default=1.0)
    far = (video, ts, 0.95, 0.95, 0.99, 0.99, cls, lowest / 2)  # no grid box reaches x > 0.9
    before = frame_map(*to_tables(gt, det), LABELMAP)
    after = frame_map(*to_tables(gt, det + [far]), LABELMAP)
    for c, ap in before.per_class.items():
        if ap is not None:
            assert after.per_class[c] <= ap + 1e-12
