"""AVA frame-mAP, computing exactly what ActivityNet `Evaluation/get_ava_performance.py` computes.

Two protocols:

- ``head`` (ActivityNet HEAD 82304fa): keyframes keyed `video,%.6f` of the timestamp; 2-column
  `video_id,timestamp` ground-truth rows mark annotated keyframes without actions; detections on
  keyframes absent from the ground truth are ignored. There is no exclusions file at HEAD; when one is
  given, its keyframes are removed from the ground truth (as if their rows were deleted), so their
  detections are ignored too.
- ``2019`` (3fee089, what ACAR-Net's and PySlowFast's `calc_mAP` run): keys `video,%04d` of the
  integer timestamp; excluded keyframes are dropped from ground truth and detections; detections on
  keyframes without ground truth count as false positives; 2-column rows are an error there.

Common to both (read from the official code, and reproduced bit for bit):

- rows whose class is not in the label map are dropped before anything else; a ground-truth keyframe
  whose rows are all dropped still counts as annotated (its detections are false positives);
- at most 50 detections per keyframe, kept with the official min-heap: a row enters a full heap only
  with a score strictly greater than the heap's smallest score, and evicts the smallest
  `(score, action_id, y1, x1, y2, x2)` tuple, so which of tied rows survive depends on file order;
- detections with y2 <= y1 or x2 <= x1 are then dropped (they still took a place in the 50);
- per keyframe and class, detections in descending score (ties in heap order) take the ground-truth
  box of highest IoU (`argmax`: the first of equal IoUs in heap order); a detection is a true positive
  when that IoU >= 0.5 and the box is not taken yet, else a false positive. No box is difficult or
  group-of in AVA, so nothing is ignored;
- per class, all detections are sorted with `np.argsort(scores)[::-1]` over the official concatenation
  order (keyframes in order of first appearance in the detection file), so ties in score are broken
  exactly as the official code breaks them with the same numpy; AP is PASCAL VOC all-point AP;
- the mAP is the mean AP over label-map classes with at least one ground-truth box; others are None.

Most work is vectorised over all rows; only keyframes where the heap's internal order can change the
result (a score tie at the 50th place, or two rows of one class with equal scores) replay the heap in
Python, as do keyframes where a detection has equal IoU with two different ground-truth boxes.
"""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass
from enum import Enum

import numpy as np

from acar_deploy.data.ava_csv import (
    AvaAnnotations,
    AvaExclusions,
    AvaPredictions,
    read_annotations,
    read_exclusions,
    read_predictions,
)
from acar_deploy.data.labelmap import LabelMap, read_labelmap
from acar_deploy.errors import InputError

DETECTIONS_PER_KEYFRAME = 50
IOU_THRESHOLD = 0.5


class Protocol(str, Enum):
    head = "head"
    v2019 = "2019"


@dataclass(frozen=True)
class FrameMapResult:
    """mAP over classes with ground truth; per_class maps every label-map id to its AP or None."""

    mAP: float
    per_class: dict[int, float | None]
    protocol: str = "head"

    def to_json(self) -> dict:
        return {"mAP": self.mAP, "per_class": {str(k): v for k, v in self.per_class.items()}}


# ----------------------------------------------------------------------------- keyframe keys


def _lexsort(keys: tuple[np.ndarray, ...]) -> np.ndarray:
    """np.lexsort (last key primary, stable) as successive stable argsorts, several times faster."""
    order = np.argsort(keys[0], kind="stable")
    for key in keys[1:]:
        order = order[np.argsort(key[order], kind="stable")]
    return order


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run starts and lengths of equal neighbours: AVA files list rows keyframe by keyframe,
    so strings are compared and looked up once per run instead of once per row."""
    if len(values) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    return starts, np.diff(np.r_[starts, len(values)])


class _KeyframeIndex:
    """Shared integer ids for (video, timestamp key) across the files of one evaluation."""

    def __init__(self, protocol: Protocol, tables: list):
        self.protocol = protocol
        self.tables = tables
        video_heads = [t.video_id[_runs(t.video_id)[0]] for t in tables]
        stamp_heads = [t.timestamp[_runs(t.timestamp)[0]] for t in tables]
        self.videos = np.unique(np.concatenate(video_heads))
        self.stamp_strings = np.unique(np.concatenate(stamp_heads))
        keys = [self._stamp_key(stamp) for stamp in self.stamp_strings.tolist()]
        key_values, self.stamp_code = np.unique(np.array(keys, dtype=str), return_inverse=True)
        self.num_keys = max(len(key_values), 1)

    def _stamp_key(self, stamp: str) -> str:
        if self.protocol is Protocol.head:
            return f"{float(stamp):.6f}"  # the official "%.6f" % Decimal(ts) formats via float
        try:
            return f"{int(stamp):04d}"
        except ValueError:
            source = next((t.source for t in self.tables if stamp in set(t.timestamp.tolist())), "?")
            raise InputError(
                f"{source}: timestamp {stamp!r} is not an integer, which the 2019 protocol keys as %04d; "
                "use --protocol head"
            ) from None

    def ids(self, table) -> np.ndarray:
        v_starts, v_lengths = _runs(table.video_id)
        t_starts, t_lengths = _runs(table.timestamp)
        v = np.repeat(np.searchsorted(self.videos, table.video_id[v_starts]), v_lengths)
        t = np.repeat(
            self.stamp_code[np.searchsorted(self.stamp_strings, table.timestamp[t_starts])], t_lengths
        )
        return v.astype(np.int64) * self.num_keys + t.astype(np.int64)


# ----------------------------------------------------------------------------- the 50-per-keyframe heap


def _heap_keep(rows: list[tuple], capacity: int) -> list[tuple]:
    """The official per-keyframe heap; returns the kept tuples in descending score, ties in heap order."""
    heap: list[tuple] = []
    for row in rows:
        if capacity < 1 or len(heap) < capacity:
            heapq.heappush(heap, row)
        elif row[0] > heap[0][0]:
            heapq.heapreplace(heap, row)
    return sorted(heap, key=lambda r: -r[0])


@dataclass(frozen=True, eq=False)
class _Detections:
    key: np.ndarray  # keyframe id
    order: np.ndarray  # rank of the keyframe by first appearance in the detection file
    position: np.ndarray  # place within its keyframe (descending score, ties in heap order)
    action: np.ndarray
    score: np.ndarray
    yx: np.ndarray  # [N, 4] y1, x1, y2, x2 as the official code holds them


def _cap_detections(key: np.ndarray, action: np.ndarray, score: np.ndarray, boxes: np.ndarray) -> _Detections:
    n = len(key)
    yx = boxes[:, [1, 0, 3, 2]]
    uniq, first, kidx = np.unique(key, return_index=True, return_inverse=True)
    order_of_key = np.empty(len(uniq), dtype=np.int64)
    order_of_key[np.argsort(first, kind="stable")] = np.arange(len(uniq))

    # Sort by keyframe, descending score, file order (lexsort is stable); rank within each keyframe.
    srt = _lexsort((-score, kidx))
    k_sorted = kidx[srt]
    starts = np.flatnonzero(np.r_[True, k_sorted[1:] != k_sorted[:-1]]) if n else np.zeros(0, np.int64)
    counts = np.diff(np.r_[starts, n])
    rank = np.arange(n) - np.repeat(starts, counts)
    s_sorted = score[srt]

    # Keyframes whose outcome depends on heap internals: a score tie across the 50th place ...
    over = np.flatnonzero(counts > DETECTIONS_PER_KEYFRAME)
    tie_cut = over[
        s_sorted[starts[over] + DETECTIONS_PER_KEYFRAME]
        == s_sorted[starts[over] + DETECTIONS_PER_KEYFRAME - 1]
    ]
    kept = rank < DETECTIONS_PER_KEYFRAME
    # ... or two kept rows of one class with equal scores (their relative order is heap order).
    # Equal scores of one keyframe are neighbours in `srt`; only those rows need sorting by class.
    tie = (k_sorted[1:] == k_sorted[:-1]) & (s_sorted[1:] == s_sorted[:-1]) & kept[1:]
    in_tie = np.zeros(n, dtype=bool)
    in_tie[1:] |= tie
    in_tie[:-1] |= tie
    tied_rows = srt[in_tie]
    kr = tied_rows[_lexsort((action[tied_rows], -score[tied_rows], kidx[tied_rows]))]
    same = (
        (kidx[kr][1:] == kidx[kr][:-1])
        & (action[kr][1:] == action[kr][:-1])
        & (score[kr][1:] == score[kr][:-1])
    )
    replay = np.zeros(len(uniq), dtype=bool)
    replay[k_sorted[starts[tie_cut]]] = True
    replay[kidx[kr][1:][same]] = True

    fast = kept & ~replay[k_sorted]
    rows = srt[fast]
    parts = [(kidx[rows], rank[fast], action[rows], score[rows], yx[rows])]
    if replay.any():
        parts.append(_replay_heap(np.flatnonzero(replay), kidx, action, score, yx))
    k = np.concatenate([p[0] for p in parts])
    return _Detections(
        key=uniq[k],
        order=order_of_key[k],
        position=np.concatenate([p[1] for p in parts]),
        action=np.concatenate([p[2] for p in parts]),
        score=np.concatenate([p[3] for p in parts]),
        yx=np.concatenate([p[4] for p in parts]).reshape(-1, 4),
    )


def _replay_heap(keyframes: np.ndarray, kidx, action, score, yx):
    """Run the official heap on the given keyframes' rows, in file order."""
    rows_of = np.flatnonzero(np.isin(kidx, keyframes))
    by_key: dict[int, list[tuple]] = {}
    columns = (
        kidx[rows_of].tolist(),
        action[rows_of].tolist(),
        score[rows_of].tolist(),
        yx[rows_of].tolist(),
    )
    for k, a, s, (y1, x1, y2, x2) in zip(*columns, strict=True):
        by_key.setdefault(k, []).append((s, a, y1, x1, y2, x2))
    ks, pos, acts, scs, boxes = [], [], [], [], []
    for k, rows in by_key.items():
        for p, (s, a, y1, x1, y2, x2) in enumerate(_heap_keep(rows, DETECTIONS_PER_KEYFRAME)):
            ks.append(k)
            pos.append(p)
            acts.append(a)
            scs.append(s)
            boxes.append((y1, x1, y2, x2))
    return (
        np.array(ks, dtype=np.int64),
        np.array(pos, dtype=np.int64),
        np.array(acts, dtype=np.int64),
        np.array(scs, dtype=np.float64),
        np.array(boxes, dtype=np.float64).reshape(-1, 4),
    )


# ----------------------------------------------------------------------------- matching


def _run_starts(values: np.ndarray) -> np.ndarray:
    """Mask of the first element of each run of equal values in a sorted array."""
    return np.r_[True, values[1:] != values[:-1]] if len(values) else np.zeros(0, dtype=bool)


def _iou(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Pairwise IoU of matched rows, with the official operation order ([y1, x1, y2, x2], no +1)."""
    heights = np.maximum(0.0, np.minimum(det[:, 2], gt[:, 2]) - np.maximum(det[:, 0], gt[:, 0]))
    widths = np.maximum(0.0, np.minimum(det[:, 3], gt[:, 3]) - np.maximum(det[:, 1], gt[:, 1]))
    inter = heights * widths
    area_det = (det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1])
    area_gt = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (area_det + area_gt - inter)


def _gt_heap_rank(gt_key, gt_action, gt_yx, keyframes: np.ndarray, rank: np.ndarray) -> None:
    """Replace file order by the official heap order for ground truth of the given keyframes."""
    for k in keyframes.tolist():
        rows = np.flatnonzero(gt_key == k)
        tuples = [(1.0, int(a), *map(float, b)) for a, b in zip(gt_action[rows], gt_yx[rows], strict=True)]
        slots: dict[tuple, list[int]] = {}
        for r, t in zip(rows.tolist(), tuples, strict=True):
            slots.setdefault(t, []).append(r)
        for place, t in enumerate(_heap_keep(tuples, 0)):
            rank[slots[t].pop(0)] = place


def _true_positives(det: _Detections, gt_key, gt_action, gt_yx) -> np.ndarray:
    n_cls = int(max(det.action.max(initial=0), gt_action.max(initial=0))) + 1
    det_group = det.key * n_cls + det.action
    gt_group = gt_key * n_cls + gt_action
    gt_sort = np.argsort(gt_group, kind="stable")
    g_sorted = gt_group[gt_sort]
    lo = np.searchsorted(g_sorted, det_group, side="left")
    hi = np.searchsorted(g_sorted, det_group, side="right")
    counts = hi - lo
    tp = np.zeros(len(det_group), dtype=bool)
    if counts.sum() == 0:
        return tp
    pair_det = np.repeat(np.arange(len(det_group)), counts)
    pair_gt = gt_sort[
        np.repeat(lo, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    ]
    iou = _iou(det.yx[pair_det], gt_yx[pair_gt])

    gt_rank = np.arange(len(gt_key))  # file order stands in for heap order unless IoU ties make it matter
    best = np.full(len(det_group), -np.inf)
    np.maximum.at(best, pair_det, np.nan_to_num(iou, nan=-np.inf))
    at_best = (np.nan_to_num(iou, nan=-np.inf) == best[pair_det]) & (best[pair_det] >= IOU_THRESHOLD)
    tied = np.bincount(pair_det[at_best], minlength=len(det_group)) > 1
    if tied.any():
        tie_pairs = at_best & tied[pair_det]
        boxes = gt_yx[pair_gt[tie_pairs]]
        owner = pair_det[tie_pairs]
        # Identical boxes are interchangeable; only distinct boxes with equal IoU need the heap order.
        first_box = np.full((len(det_group), 4), np.nan)
        first_box[owner[::-1]] = boxes[::-1]
        distinct = (boxes != first_box[owner]).any(axis=1)
        if distinct.any():
            _gt_heap_rank(gt_key, gt_action, gt_yx, np.unique(det.key[owner[distinct]]), gt_rank)

    # argmax per detection: highest IoU, then earliest ground truth in heap order.
    iou_key = np.nan_to_num(iou, nan=-np.inf)
    srt = _lexsort((gt_rank[pair_gt], -iou_key, pair_det))
    first = srt[_run_starts(pair_det[srt])]
    hit = iou_key[first] >= IOU_THRESHOLD
    cand_det = pair_det[first][hit]
    cand_gt = pair_gt[first][hit]
    # A ground-truth box goes to the first detection (in keyframe order) that targets it.
    claim = _lexsort((det.position[cand_det], cand_gt))
    winners = claim[_run_starts(cand_gt[claim])]
    tp[cand_det[winners]] = True
    return tp


# ----------------------------------------------------------------------------- AP


def _average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """metrics.compute_precision_recall + compute_average_precision, same operations."""
    if scores.size == 0:
        return 0.0
    labels = tp[np.argsort(scores)[::-1]].astype(int)
    cum_tp = np.cumsum(labels)
    cum_fp = np.cumsum(1 - labels)
    precision = cum_tp.astype(float) / (cum_tp + cum_fp)
    recall = cum_tp.astype(float) / num_gt
    recall = np.concatenate([[0], recall, [1]])
    precision = np.concatenate([[0], precision, [0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    indices = np.where(recall[1:] != recall[:-1])[0] + 1
    return float(np.sum((recall[indices] - recall[indices - 1]) * precision[indices]))


# ----------------------------------------------------------------------------- entry point


def frame_map(
    gt: AvaAnnotations | str | os.PathLike,
    pred: AvaPredictions | str | os.PathLike,
    labelmap: LabelMap | str | os.PathLike | None = None,
    exclusions: AvaExclusions | str | os.PathLike | None = None,
    protocol: Protocol | str = Protocol.head,
) -> FrameMapResult:
    """AVA frame-mAP@0.5 as the official evaluator computes it; paths or loaded tables."""
    try:
        protocol = Protocol(protocol)
    except ValueError:
        raise InputError(f"unknown protocol {protocol!r}: use 'head' or '2019'") from None
    if not isinstance(gt, AvaAnnotations):
        gt = read_annotations(gt)
    if not isinstance(pred, AvaPredictions):
        pred = read_predictions(pred)
    if not isinstance(labelmap, LabelMap):
        labelmap = read_labelmap(labelmap)
    if exclusions is not None and not isinstance(exclusions, AvaExclusions):
        exclusions = read_exclusions(exclusions)
    if protocol is Protocol.v2019:
        for table in (gt, pred):
            if (~table.has_box).any():
                line = int(np.argmax(~table.has_box))
                raise InputError(
                    f"{table.source}: row {line + 1} has only video_id,timestamp, which the 2019 protocol rejects; "
                    "use --protocol head"
                )

    tables = [gt, pred] + ([exclusions] if exclusions is not None else [])
    index = _KeyframeIndex(protocol, tables)
    classes = np.array(labelmap.ids, dtype=np.int64)

    gt_key_all = index.ids(gt)
    excluded = index.ids(exclusions) if exclusions is not None else np.zeros(0, np.int64)
    annotated = np.setdiff1d(np.unique(gt_key_all), excluded)
    gt_keep = gt.has_box & np.isin(gt.action_id, classes) & ~np.isin(gt_key_all, excluded)
    gt_key = gt_key_all[gt_keep]
    gt_action = gt.action_id[gt_keep]
    gt_yx = gt.boxes[gt_keep][:, [1, 0, 3, 2]]
    num_gt = {c: 0 for c in labelmap.ids}
    for c, n in zip(*np.unique(gt_action, return_counts=True), strict=True):
        num_gt[int(c)] = int(n)
    if not any(num_gt.values()):
        raise InputError(f"{gt.source}: no ground-truth box has a class of the label map {labelmap.source}")

    p_keep = pred.has_box & np.isin(pred.action_id, classes)
    det = _cap_detections(
        index.ids(pred)[p_keep], pred.action_id[p_keep], pred.score[p_keep], pred.boxes[p_keep]
    )
    if protocol is Protocol.head:
        use = np.isin(det.key, annotated)
    else:
        use = ~np.isin(det.key, excluded)
    use &= (det.yx[:, 0] < det.yx[:, 2]) & (det.yx[:, 1] < det.yx[:, 3])
    det = _Detections(*(getattr(det, f)[use] for f in det.__dataclass_fields__))
    tp = _true_positives(det, gt_key, gt_action, gt_yx)

    # Official concatenation order per class: keyframes by first appearance, then place in keyframe.
    srt = _lexsort((det.position, det.order, det.action))
    cls_sorted = det.action[srt]
    per_class: dict[int, float | None] = {}
    for c in labelmap.ids:
        if num_gt[c] == 0:
            per_class[c] = None
            continue
        lo, hi = np.searchsorted(cls_sorted, [c, c + 1])
        rows = srt[lo:hi]
        per_class[c] = _average_precision(det.score[rows], tp[rows], num_gt[c])
    # np.nanmean over ids 1..max id, as the official code averages (same summation order).
    by_index = np.full(max(labelmap.ids), np.nan)
    for c, ap in per_class.items():
        if ap is not None:
            by_index[c - 1] = ap
    mean = float(np.nanmean(by_index))
    return FrameMapResult(mAP=mean, per_class=per_class, protocol=protocol.value)
