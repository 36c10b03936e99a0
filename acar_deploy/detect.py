"""Action detection on a video: person boxes in, AVA predictions (and rendered keyframes) out.

`detect` runs the eager model (through its runner, `predict_split`) over every keyframe that has proposals scoring >= the threshold
(0.85, as the official evaluation), with the official clip pipeline, and writes one AVA prediction
row per box and class (`video,timestamp,x1,y1,x2,y2,action_id,score`, all 60 classes, like the
official `val_epoch`). `render_keyframe` draws boxes and the top actions onto a frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acar_deploy.engines.runners.base import Runner, RunnerOptions
from acar_deploy.engines.runners.eager import EagerRunner
from acar_deploy.errors import InputError

DEFAULT_SCORE_THRESHOLD = 0.85


@dataclass(frozen=True)
class DetectSettings:
    checkpoint: Path
    media: Path  # a video file or a frame folder
    boxes: Path  # person proposals CSV (video,timestamp,x1,y1,x2,y2,[action],score)
    out: Path  # AVA predictions CSV
    config: str | None = None  # None: the config stored in an acar-deploy checkpoint
    render_dir: Path | None = None
    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    video_id: str | None = None  # None: the file/folder name, or the only video in the CSV
    start_seconds: float = 0.0  # second the frames start at (900 for AVA frame folders)
    labelmap: Path | None = None  # classes to draw (e.g. a reduced map); None: all
    top_k: int = 3
    device: str = "cpu"
    force: bool = False
    progress: bool = True  # a progress bar on a terminal
    bank: Path | None = None  # acfb models: a feature bank holding this video (acar-deploy bank extract)


@dataclass
class DetectResult:
    out: Path
    video_id: str
    keyframes: int
    boxes: int
    rendered: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class BoxScores:
    """Scores of one box of one keyframe, in the model's class order."""

    video_id: str
    timestamp: int
    box: np.ndarray  # original (x1, y1, x2, y2), normalised
    scores: np.ndarray  # [num_classes]
    logits: np.ndarray  # [num_classes]


def predict_split(runner: Runner, dataset: Any, workers: int = 0, progress: Any = None,
                  collate: Any = None, stored_kv: bool = True) -> list[BoxScores]:
    """Run a runner over every keyframe of a `KeyframeDataset` (one keyframe per call): one BoxScores per
    box, keyframe then box order. The one "predict a split" loop of detect, parity and validation.

    An acfb model's batches carry the bank window; when they also carry the K/V stored in the bank,
    the runner gets those (its bank_kv part is skipped) unless `stored_kv` is False or it cannot
    take them, then the entries (K/V projected on the fly)."""
    from acar_deploy.data.dataset import make_loader

    runner.activate()
    results = []
    for batch in make_loader(dataset, 1, shuffle=False, num_workers=workers, collate=collate):
        if progress is not None:
            progress()
        rois = batch["rois"].numpy()
        if rois.shape[0] == 0:
            continue
        feeds = {"clips": batch["clips"].numpy(), "rois": rois}
        if "bank_entries" in batch:  # an acfb model: the keyframe's bank window, and which entries each box sees
            from acar_deploy.bank.dataset import bank_inputs

            entries, window = bank_inputs(batch, "cpu")
            feeds.update(bank_entries=entries.numpy(), bank_window=window.numpy())
            if stored_kv and "bank_keys" in batch and runner.supports_stored_kv:
                del feeds["bank_entries"]
                feeds.update(bank_keys=batch["bank_keys"].numpy(), bank_values=batch["bank_values"].numpy())
        outputs = runner.infer(feeds)
        (video_id,), (timestamp,), (boxes,) = batch["video_ids"], batch["timestamps"], batch["boxes"]
        for box, scores, logits in zip(boxes, outputs["scores"], outputs["logits"], strict=True):
            results.append(BoxScores(video_id, int(timestamp), np.asarray(box, np.float32), scores, logits))
    return results


def predictions_table(results: Sequence[BoxScores], class_ids: Sequence[int]) -> Any:
    """AvaPredictions with every class of every box (the official val_epoch writes all of them)."""
    from acar_deploy.data.ava_csv import AvaPredictions

    n, c = len(results), len(class_ids)
    boxes = np.repeat(np.stack([r.box for r in results]).astype(np.float64), c, 0) if n else np.zeros((0, 4))
    return AvaPredictions(
        video_id=np.repeat(np.array([r.video_id for r in results], dtype=object), c),
        timestamp=np.repeat(np.array([str(r.timestamp) for r in results], dtype=object), c),
        boxes=boxes,
        action_id=np.tile(np.asarray(class_ids, np.int64), n),
        score=np.concatenate([r.scores for r in results]).astype(np.float64) if n else np.zeros(0),
    )


@dataclass(frozen=True)
class SplitEvaluation:
    mAP: float
    per_class: dict[int, float]
    predictions: Path


def evaluate_split(
    model: Any, data: Any, spec: Any, device: Any, predictions_out: Path, workers: int = 0,
    min_score: float = DEFAULT_SCORE_THRESHOLD, bank: Any = None,
) -> SplitEvaluation:
    """Predict the val split of a dataset folder, write the CSV, and score it with the AVA frame-mAP.

    `bank` (a `FeatureBank` of the val split) is required by, and only used with, an acfb model."""
    import torch

    from acar_deploy.data.ava_csv import (
        read_annotations,
        read_exclusions,
        read_predictions,
        write_predictions,
    )
    from acar_deploy.data.dataset import KeyframeDataset, model_class_ids
    from acar_deploy.data.labelmap import read_labelmap
    from acar_deploy.eval import frame_map

    class_ids = model_class_ids(model.config.head.num_classes)
    dataset = KeyframeDataset(data.val_keyframes(min_score), data.media_dir, class_ids, spec=spec,
                              start_seconds=data.start_seconds)
    from acar_deploy.bank.dataset import with_bank

    dataset, collate = with_bank(dataset, model.config, bank)
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # validation must not move the training RNG streams
        results = predict_split(EagerRunner(model, name="eager:validation"), dataset, workers, collate=collate)
    write_predictions(predictions_table(results, class_ids), predictions_out)
    gt = read_annotations(data.path("val_annotations"))
    exclusions = read_exclusions(data.path("val_exclusions")) if data.path("val_exclusions") else None
    labelmap = read_labelmap(data.path("labelmap")) if data.path("labelmap") else None
    # score what was written (3 decimals), exactly as `acar-deploy evaluate` would
    result = frame_map(gt, read_predictions(predictions_out), labelmap=labelmap, exclusions=exclusions)
    return SplitEvaluation(float(result.mAP), dict(result.per_class), predictions_out)


def _proposals_for_video(boxes_csv: Path, video_id: str | None, media: Path) -> tuple[str, list[tuple]]:
    from acar_deploy.data.ava_csv import read_proposals
    from acar_deploy.data.dataset import proposal_rows

    rows = proposal_rows(read_proposals(boxes_csv))
    videos = sorted({str(r[0]) for r in rows})
    if video_id is None:
        stem = media.stem if media.is_file() else media.name
        if stem in videos:
            video_id = stem
        elif len(videos) == 1:
            video_id = videos[0]
        else:
            raise InputError(
                f"{boxes_csv}: holds boxes of {len(videos)} videos and none is named {stem!r}; "
                "pass --video-id to pick one"
            )
    selected = [r for r in rows if str(r[0]) == video_id]
    if not selected:
        raise InputError(f"{boxes_csv}: no boxes for video {video_id!r}; check --video-id or the CSV")
    return video_id, selected


def detect(settings: DetectSettings) -> DetectResult:
    """Predictions CSV (and optional rendered keyframes) for one video."""
    import torch

    from acar_deploy.artifacts import atomic_file, check_can_write
    from acar_deploy.data.ava_csv import write_predictions
    from acar_deploy.data.clips import ClipSpec, keyframe_index, open_frames
    from acar_deploy.data.dataset import KeyframeDataset, inference_keyframes, model_class_ids

    check_can_write(Path(settings.out), settings.force, kind="file")
    render_kind = "file" if settings.render_dir is not None and Path(settings.render_dir).suffix.lower() == ".mp4" \
        else "folder"
    if settings.render_dir is not None:
        check_can_write(Path(settings.render_dir), settings.force, kind=render_kind)
    if settings.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device on this machine; use --device cpu")
    device = torch.device(settings.device)
    media = Path(settings.media)
    source = open_frames(media)
    video_id, rows = _proposals_for_video(Path(settings.boxes), settings.video_id, media)
    keyframes = inference_keyframes(rows, settings.score_threshold)
    runner = EagerRunner.from_checkpoint(settings.checkpoint, settings.config, RunnerOptions(device=str(device)))
    model = runner.model
    spec = ClipSpec.from_model_config(model.config)
    _check_keyframes_inside(keyframes, source.frame_count(), spec, settings, media)
    class_ids = model_class_ids(model.config.head.num_classes)
    dataset = KeyframeDataset(keyframes, media.parent, class_ids, spec=spec, start_seconds=settings.start_seconds)
    dataset._sources[video_id] = source  # the given file/folder, whatever its name (the only video)
    from acar_deploy.bank.dataset import open_bank_for, with_bank

    bank = open_bank_for(settings.bank, model.config, None) if settings.bank is not None else None
    if bank is not None:  # K/V stored by `bank project` with these weights are read, not recomputed
        from acar_deploy.engines.bank_projection import eager_projection_weights

        bank.use_stored_kv(eager_projection_weights(settings.checkpoint, model.config))
        bank.check_arrays()
    dataset, collate = with_bank(dataset, model.config, bank)
    from acar_deploy.progress import progress_bar

    with runner, progress_bar(settings.progress) as progress:
        task = progress.add_task(f"detecting {video_id}", total=len(dataset))
        results = predict_split(runner, dataset, 0, lambda: progress.advance(task), collate)
    rendered: list[Path] = []
    # The CSV and the renders are one output: the CSV is committed only after the renders succeed,
    # so a failed --render leaves nothing behind and a rerun needs no --force.
    with atomic_file(Path(settings.out), force=settings.force, mode="w") as csv_fh:
        write_predictions(predictions_table(results, class_ids), csv_fh)
        if settings.render_dir is not None:
            names = _class_names(settings.labelmap)
            by_time: dict[int, list[BoxScores]] = {}
            for r in results:
                by_time.setdefault(r.timestamp, []).append(r)
            images = {}
            for ts, items in sorted(by_time.items()):
                index = min(keyframe_index(ts, spec.fps, settings.start_seconds), source.frame_count())
                (frame,) = source.read([index])
                images[ts] = render_keyframe(
                    frame, np.stack([r.box for r in items]), np.stack([r.scores for r in items]),
                    class_ids, names, top_k=settings.top_k, title=f"{video_id} @ {ts}s",
                )
            rendered = _write_renders(Path(settings.render_dir), video_id, images, settings.force)
    return DetectResult(Path(settings.out), video_id, len(keyframes), len(results), rendered)


def _check_keyframes_inside(keyframes: Sequence[Any], frame_count: int, spec: Any, settings: DetectSettings,
                            media: Path) -> None:
    """InputError naming the boxes CSV line and the video when a keyframe lies outside the video's frames."""
    from acar_deploy.data.clips import keyframe_index

    for kf in keyframes:
        mid = keyframe_index(kf.timestamp, spec.fps, settings.start_seconds)
        if max(1, mid - spec.window_half) > min(frame_count, mid + spec.window_half):
            seconds = frame_count / spec.fps
            raise InputError(
                f"{settings.boxes}:{_csv_line_of(Path(settings.boxes), kf.video_id, kf.timestamp)}: timestamp "
                f"{kf.timestamp} lies outside video {media} ({frame_count} frames = {settings.start_seconds:g}.."
                f"{settings.start_seconds + seconds:g} s); check the timestamp or --start-seconds"
            )


def _csv_line_of(path: Path, video_id: str, timestamp: int) -> str:
    """1-based line of the first `video_id,timestamp,...` row of a CSV ('?' if not found)."""
    with open(path, encoding="utf-8-sig") as fh:
        for number, line in enumerate(fh, 1):
            cells = line.split(",")
            try:
                if len(cells) > 1 and cells[0].strip() == video_id and float(cells[1]) == timestamp:
                    return str(number)
            except ValueError:
                continue
    return "?"


def _write_renders(target: Path, video_id: str, images: dict[int, Any], force: bool) -> list[Path]:
    """PNGs `<video>_<timestamp>.png` in a folder, or one MP4 showing each keyframe for a second."""
    from acar_deploy.artifacts import atomic_dir, atomic_file

    if target.suffix.lower() == ".mp4":
        import av

        if not images:
            raise InputError(f"{target}: no keyframe had boxes above the threshold; nothing to render")
        first = next(iter(images.values()))
        width, height = first.width - first.width % 2, first.height - first.height % 2
        with atomic_file(target, force=force) as fh, av.open(fh, mode="w", format="mp4") as container:
            stream = container.add_stream("mpeg4", rate=1, options={"qscale": "2"})
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for i, image in enumerate(images.values()):
                frame = av.VideoFrame.from_image(image.resize((width, height)))
                frame.pts = i
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        return [target]
    with atomic_dir(target, force=force) as tmp:
        for ts, image in images.items():
            image.save(tmp / f"{video_id}_{ts:04d}.png")
    return [target / f"{video_id}_{ts:04d}.png" for ts in images]


def _class_names(labelmap: Path | None) -> dict[int, str]:
    from acar_deploy.data.labelmap import read_labelmap

    path = labelmap if labelmap is not None else Path(__file__).parent / "data" / "ava_action_list_v2.1.pbtxt"
    return read_labelmap(path).as_dict()


BOX_COLOURS = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
               (70, 240, 240), (240, 50, 230))


def render_keyframe(
    frame: Any,
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: Sequence[int],
    class_names: Mapping[int, str],
    top_k: int = 3,
    min_score: float = 0.0,
    min_height: int = 360,
    title: str | None = None,
) -> Any:
    """The frame (upscaled to >= min_height) with each box and its top-k actions (name and score).

    Only classes in `class_names` are drawn, so a reduced label map limits the labels to its classes.
    """
    from PIL import Image, ImageDraw, ImageFont

    image = frame.convert("RGB") if isinstance(frame, Image.Image) else Image.fromarray(np.asarray(frame, np.uint8))
    if image.height < min_height:
        scale = min_height / image.height
        image = image.resize((round(image.width * scale), min_height), Image.BILINEAR)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    w, h = image.size
    allowed = [j for j, c in enumerate(class_ids) if int(c) in class_names]
    for i, (box, sc) in enumerate(zip(np.asarray(boxes).reshape(-1, 4), np.asarray(scores), strict=True)):
        colour = BOX_COLOURS[i % len(BOX_COLOURS)]
        x1, y1, x2, y2 = (float(box[0]) * w, float(box[1]) * h, float(box[2]) * w, float(box[3]) * h)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=max(2, h // 180))
        order = sorted(allowed, key=lambda j: -float(sc[j]))[:top_k]
        lines = [f"{class_names[int(class_ids[j])]} {float(sc[j]):.2f}" for j in order if float(sc[j]) >= min_score]
        heights = [draw.textbbox((0, 0), line, font=font)[3] + 3 for line in lines]
        y = max(0.0, y1 - sum(heights) - 2)  # above the box, so the actor stays visible
        for line, step in zip(lines, heights, strict=True):
            left, top, right, bottom = draw.textbbox((x1 + 2, y), line, font=font)
            draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=(0, 0, 0))
            draw.text((x1 + 2, y), line, fill=colour, font=font)
            y += step
    if title:
        draw.text((4, 4), title, fill=(255, 255, 255), font=font)
    return image


__all__ = [
    "DetectSettings", "DetectResult", "BoxScores", "detect", "render_keyframe", "predict_split",
    "predictions_table", "evaluate_split",
]
