"""Keyframe samples (clip + person boxes + multi-hot targets) over AVA annotations and proposals.

Training keyframes are the ground-truth boxes plus person proposals scoring >= 0.9 (the official
`ava_train_v2.2_with_fair_0.9` set); a proposal takes the labels of the ground-truth box it overlaps
with IoU >= 0.5 (else it is a negative). Inference keyframes are the proposals scoring >= 0.85.

Augmentation follows the official code: a random horizontal flip of the whole clip and, per box,
a jitter of each coordinate by U(-0.075, 0.075) x box width/height with the official one-sided clamp
(x1 >= 0, y1 <= 1, x2 >= 0, y2 <= 1), then clipping to the frame, dropping boxes whose clipped
area is <= 0 (the neck's `aug_threshold` 0 test, also applied at inference), mirroring on flip.
Random draws come from a generator seeded by (seed, epoch, index), so an item is the same in any
worker process and after a resume.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acar_deploy.data.clips import ClipSpec, FrameSource, find_video, load_clip, open_frames

TRAIN_PROPOSAL_SCORE = 0.9
INFERENCE_PROPOSAL_SCORE = 0.85
LABEL_IOU = 0.5
OPEN_SOURCES = 16  # frame sources a dataset keeps open per process (bounds decoded-video memory)


@dataclass(frozen=True)
class Keyframe:
    """The boxes of one keyframe; `labels[i]` are the AVA action ids of box i (empty for negatives)."""

    video_id: str
    timestamp: int
    boxes: np.ndarray  # [N, 4] float32 (x1, y1, x2, y2) normalised to the frame
    labels: tuple[tuple[int, ...], ...] = ()
    scores: np.ndarray | None = None  # proposal scores, [N]


@dataclass(frozen=True)
class Augmentation:
    """Training-time randomness (official defaults)."""

    flip: bool = True
    jitter_scale: float = 0.075


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of (x1, y1, x2, y2) boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _group(rows: Iterable[tuple]) -> dict[tuple[str, int], list[tuple]]:
    out: dict[tuple[str, int], list[tuple]] = {}
    for row in rows:
        out.setdefault((str(row[0]), int(row[1])), []).append(row)
    return out


def ground_truth_keyframes(annotations: Iterable[Sequence]) -> dict[tuple[str, int], Keyframe]:
    """Rows (video, timestamp, x1, y1, x2, y2, action_id, ...) -> one Keyframe per (video, timestamp).

    Rows with the same box (and person id when given) are one person with several actions.
    """
    keyframes = {}
    for key, rows in _group(annotations).items():
        people: dict[tuple, list[int]] = {}
        for row in rows:
            box = tuple(round(float(v), 6) for v in row[2:6])
            person = (box, row[7] if len(row) > 7 else None)
            people.setdefault(person, [])
            if row[6] is not None and int(row[6]) not in people[person]:
                people[person].append(int(row[6]))
        boxes = np.array([p[0] for p in people], np.float32).reshape(-1, 4)
        labels = tuple(tuple(sorted(v)) for v in people.values())
        keyframes[key] = Keyframe(key[0], key[1], boxes, labels)
    return keyframes


def proposal_keyframes(proposals: Iterable[Sequence], min_score: float) -> dict[tuple[str, int], Keyframe]:
    """Rows (video, timestamp, x1, y1, x2, y2, score) with score >= min_score, per keyframe."""
    keyframes = {}
    for key, rows in _group(p for p in proposals if float(p[6]) >= min_score).items():
        boxes = np.array([[float(v) for v in r[2:6]] for r in rows], np.float32).reshape(-1, 4)
        scores = np.array([float(r[6]) for r in rows], np.float32)
        keyframes[key] = Keyframe(key[0], key[1], boxes, tuple(() for _ in rows), scores)
    return keyframes


def _labels_from(gt: Keyframe | None, boxes: np.ndarray) -> tuple[tuple[int, ...], ...]:
    if gt is None or len(gt.boxes) == 0 or len(boxes) == 0:
        return tuple(() for _ in range(len(boxes)))
    iou = box_iou(boxes, gt.boxes)
    best = iou.argmax(1)
    return tuple(gt.labels[j] if iou[i, j] >= LABEL_IOU else () for i, j in enumerate(best))


def training_keyframes(
    annotations: Iterable[Sequence], proposals: Iterable[Sequence] = (), min_score: float = TRAIN_PROPOSAL_SCORE
) -> list[Keyframe]:
    """Ground-truth boxes plus proposals >= min_score (labelled by IoU >= 0.5 with the ground truth)."""
    gt = ground_truth_keyframes(annotations)
    props = proposal_keyframes(proposals, min_score)
    out = []
    for key in sorted(set(gt) | set(props)):
        g, p = gt.get(key), props.get(key)
        boxes = [g.boxes] if g else []
        labels: tuple[tuple[int, ...], ...] = g.labels if g else ()
        if p is not None:
            boxes.append(p.boxes)
            labels = labels + _labels_from(g, p.boxes)
        out.append(Keyframe(key[0], key[1], np.concatenate(boxes, 0).astype(np.float32), labels))
    return out


def inference_keyframes(
    proposals: Iterable[Sequence],
    min_score: float = INFERENCE_PROPOSAL_SCORE,
    annotations: Iterable[Sequence] | None = None,
) -> list[Keyframe]:
    """Proposals >= min_score per keyframe; labels from the ground truth when given (else empty)."""
    props = proposal_keyframes(proposals, min_score)
    gt = ground_truth_keyframes(annotations) if annotations is not None else {}
    return [
        Keyframe(k[0], k[1], p.boxes, _labels_from(gt.get(k), p.boxes), p.scores) for k, p in sorted(props.items())
    ]


def jitter_boxes(boxes: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Official bbox_jitter (num=1): shift by U(-scale, scale) x width/height, one-sided clamp."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    out = np.empty_like(boxes)
    for i in range(len(boxes)):  # one draw of 4 values per box, in box order, as the official loop
        d = rng.uniform(-scale, scale, 4)
        out[i] = (
            max(boxes[i, 0] + d[0] * w[i], 0.0),
            min(boxes[i, 1] + d[1] * h[i], 1.0),
            max(boxes[i, 2] + d[2] * w[i], 0.0),
            min(boxes[i, 3] + d[3] * h[i], 1.0),
        )
    return out


def boxes_after_augmentation(boxes: np.ndarray, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Clip to the frame, keep boxes with clipped area > 0, mirror x when flipped -> (rois, kept mask)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    left, right = np.clip(boxes[:, 0], 0, 1), np.clip(boxes[:, 2], 0, 1)
    top, bottom = np.clip(boxes[:, 1], 0, 1), np.clip(boxes[:, 3], 0, 1)
    keep = (bottom - top) * (right - left) > 0
    out = np.stack([left, top, right, bottom], 1)
    if flip:
        out = np.stack([1.0 - out[:, 2], out[:, 1], 1.0 - out[:, 0], out[:, 3]], 1)
    return out[keep].astype(np.float32), keep


def multi_hot(labels: Sequence[Sequence[int]], class_ids: Sequence[int]) -> np.ndarray:
    """[N, len(class_ids)] targets; column j is the j-th id of the model's label map (official idx_to_class)."""
    index = {int(c): j for j, c in enumerate(class_ids)}
    out = np.zeros((len(labels), len(class_ids)), np.float32)
    for i, ids in enumerate(labels):
        for a in ids:
            if int(a) in index:
                out[i, index[int(a)]] = 1.0
    return out


@dataclass
class KeyframeDataset:
    """A torch-style map dataset of keyframe clips; decoding happens in DataLoader workers."""

    keyframes: list[Keyframe]
    media_root: Path
    class_ids: Sequence[int]
    spec: ClipSpec = field(default_factory=ClipSpec)
    start_seconds: float = 0.0
    augmentation: Augmentation | None = None  # None: evaluation (no flip, no jitter)
    seed: int = 0
    epoch: int = 0
    _sources: dict[str, FrameSource] = field(default_factory=dict, repr=False)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.keyframes)

    def source(self, video_id: str) -> FrameSource:
        """Open sources, least recently used dropped beyond OPEN_SOURCES (short videos keep decoded frames)."""
        src = self._sources.pop(video_id, None)
        if src is None:
            src = open_frames(find_video(self.media_root, video_id), fps=self.spec.fps)
        self._sources[video_id] = src  # most recently used last
        while len(self._sources) > OPEN_SOURCES:
            self._sources.pop(next(iter(self._sources)))
        return src

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.sample(index)

    def sample(self, index: int, decode: bool = True) -> dict[str, Any]:
        """The item; with `decode=False` everything but the clip (and its frame size), so a caller that
        keeps the clip's backbone output (frozen-backbone training) skips the decoding."""
        import torch

        kf = self.keyframes[index]
        boxes = kf.boxes
        flip = False
        if self.augmentation is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            flip = bool(self.augmentation.flip and rng.random() < 0.5)
            if self.augmentation.jitter_scale > 0:
                boxes = jitter_boxes(boxes, self.augmentation.jitter_scale, rng)
        rois, keep = boxes_after_augmentation(boxes, flip)
        labels = [lab for lab, k in zip(kf.labels, keep, strict=True) if k] if kf.labels else [()] * int(keep.sum())
        item = {
            "rois": torch.from_numpy(rois),
            "targets": torch.from_numpy(multi_hot(labels, self.class_ids)),
            "video_id": kf.video_id,
            "timestamp": kf.timestamp,
            "boxes": kf.boxes[keep],
            "scores": kf.scores[keep] if kf.scores is not None else None,
            "flip": flip,
        }
        if decode:
            item["clip"], item["frame_size"] = self.clip(index, flip)
        return item

    def clip(self, index: int, flip: bool) -> tuple[Any, tuple[int, int]]:
        """Keyframe `index`'s decoded clip `[3, T, H, W]` (mirrored when `flip`) and its frame size."""
        import torch

        kf = self.keyframes[index]
        clip, size = load_clip(self.source(kf.video_id), kf.timestamp, self.spec, self.start_seconds, flip=flip)
        return torch.from_numpy(clip), size


def collate_keyframes(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Zero-pad clips to the batch max; rois `[R, 5]` (sample index, box / pad ratio), sample then box order."""
    import torch

    from acar_deploy.data.clips import pad_batch

    clips, ratios = pad_batch([it["clip"] for it in items])
    rois, targets = [], []
    for b, (it, (rw, rh)) in enumerate(zip(items, ratios, strict=True)):
        r = it["rois"].reshape(-1, 4) / torch.tensor([rw, rh, rw, rh], dtype=torch.float32)
        rois.append(torch.cat([torch.full((len(r), 1), float(b)), r], 1))
        targets.append(it["targets"])
    return {
        "clips": clips,
        "rois": torch.cat(rois, 0),
        "targets": torch.cat(targets, 0),
        "box_counts": [len(it["rois"]) for it in items],
        "video_ids": [it["video_id"] for it in items],
        "timestamps": [it["timestamp"] for it in items],
        "boxes": [it["boxes"] for it in items],
        "scores": [it["scores"] for it in items],
        "pad_ratios": ratios,
    }


def make_loader(
    dataset: KeyframeDataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    drop_last: bool = False,
    collate: Any = None,
) -> Any:
    """A DataLoader over a DistributedSampler (also for one process, so the order depends only on seed/epoch).

    `collate` replaces `collate_keyframes` (e.g. the feature bank's, which adds each clip's window)."""
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    sampler = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    return DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate or collate_keyframes,
        drop_last=drop_last,
        persistent_workers=False,
        multiprocessing_context="spawn" if num_workers and torch.cuda.is_available() else None,
    )


def default_workers() -> int:
    """Decoding workers: leave one core to the model."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


# --- class order ------------------------------------------------------------------------------------


def model_class_ids(num_classes: int) -> list[int]:
    """Action id of each logit. The official `idx_to_class` maps logit i to the i-th class of the
    60-class AVA label map (ids 1, 3, 4, ..., 80 in file order), not to id i + 1; other class counts
    (custom heads) map logit i to id i + 1."""
    if num_classes == 60:
        from acar_deploy.data.labelmap import read_labelmap

        return list(read_labelmap(None).ids)
    return list(range(1, num_classes + 1))


# --- AVA tables -> rows -------------------------------------------------------------------------------


def annotation_rows(table: Any) -> list[tuple]:
    """AvaAnnotations -> (video, timestamp, x1, y1, x2, y2, action_id, person_id) rows with a box."""
    keep = np.flatnonzero(table.has_box)
    return [
        (str(table.video_id[i]), int(float(table.timestamp[i])), *(float(v) for v in table.boxes[i]),
         int(table.action_id[i]), int(table.person_id[i]))
        for i in keep
    ]


def proposal_rows(table: Any) -> list[tuple]:
    """AvaProposals -> (video, timestamp, x1, y1, x2, y2, score) rows."""
    return [
        (str(table.video_id[i]), int(float(table.timestamp[i])), *(float(v) for v in table.boxes[i]),
         float(table.score[i]))
        for i in range(len(table))
    ]


# --- dataset folders ----------------------------------------------------------------------------------

DATASET_FORMAT = "acar-deploy-dataset"
DATASET_FILES = ("labelmap", "train_annotations", "val_annotations", "train_proposals", "val_proposals",
                 "val_exclusions", "config", "parity_thresholds")


@dataclass(frozen=True)
class DatasetFolder:
    """A folder described by `dataset.json` (what `acar-deploy synth` writes; write one by hand for AVA).

    dataset.json: {"format": "acar-deploy-dataset", "media_dir": "videos" (video files <id>.mp4 or
    frame folders <id>/<id>_%06d.jpg), "fps": 30, "start_seconds": 0 (900 for AVA frame folders),
    "files": {"labelmap", "train_annotations", "val_annotations", "train_proposals", "val_proposals",
    "val_exclusions", "config", "parity_thresholds"}: paths relative to the folder; any may be null}.
    """

    root: Path
    media_dir: Path
    fps: int = 30
    start_seconds: float = 0.0
    files: dict[str, str | None] = field(default_factory=dict)

    def path(self, key: str) -> Path | None:
        name = self.files.get(key)
        return self.root / name if name else None

    @property
    def has_val(self) -> bool:
        return self.path("val_annotations") is not None and self.path("val_proposals") is not None

    def train_keyframes(self, min_score: float = TRAIN_PROPOSAL_SCORE) -> list[Keyframe]:
        from acar_deploy.data.ava_csv import read_annotations, read_proposals
        from acar_deploy.errors import InputError

        ann = self.path("train_annotations")
        if ann is None:
            raise InputError(f"{self.root / 'dataset.json'}: files.train_annotations is not set")
        props = self.path("train_proposals")
        return training_keyframes(annotation_rows(read_annotations(ann)),
                                  proposal_rows(read_proposals(props)) if props else (), min_score)

    def val_keyframes(self, min_score: float = INFERENCE_PROPOSAL_SCORE) -> list[Keyframe]:
        from acar_deploy.data.ava_csv import read_annotations, read_proposals

        gt = annotation_rows(read_annotations(self.path("val_annotations")))  # type: ignore[arg-type]
        return inference_keyframes(proposal_rows(read_proposals(self.path("val_proposals"))), min_score, gt)  # type: ignore[arg-type]


def load_dataset(root: str | os.PathLike) -> DatasetFolder:
    """Read `root/dataset.json`; InputError naming the file when it is missing or malformed."""
    import json

    from acar_deploy.errors import InputError

    root = Path(root)
    meta_path = root / "dataset.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{meta_path}: not found; --data must be a dataset folder "
                         "(make one with `acar-deploy synth DIR`)") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{meta_path}: not readable JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(meta, dict) or meta.get("format") != DATASET_FORMAT:
        raise InputError(f"{meta_path}: 'format' must be {DATASET_FORMAT!r}")
    files = meta.get("files") or {}
    unknown = sorted(set(files) - set(DATASET_FILES))
    if unknown:
        raise InputError(f"{meta_path}: unknown files entries {', '.join(unknown)}; known: {', '.join(DATASET_FILES)}")
    for key, name in files.items():
        if name and not (root / name).exists():
            raise InputError(f"{meta_path}: files.{key} points to {root / name}, which does not exist")
    media = root / str(meta.get("media_dir", "videos"))
    if not media.is_dir():
        raise InputError(f"{meta_path}: media_dir {media} is not a folder")
    try:
        return DatasetFolder(root, media, int(meta.get("fps", 30)), float(meta.get("start_seconds", 0)), dict(files))
    except (TypeError, ValueError) as exc:
        raise InputError(f"{meta_path}: bad fps/start_seconds ({exc})") from None
