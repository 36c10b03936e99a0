"""`acar-deploy bank extract`: archive the first-order relation maps of every actor of every keyframe.

A no-bank ACAR model (or an ACFB model: same encoder) runs on each keyframe clip of one split and
stores `ACARHead.first_order_features` per box. The bank is built in a staging folder beside the
output (`.<name>.partial`); each video is written to a temporary folder and renamed into
`videos/<id>` when complete (its commit), so an interrupted run loses at most one video and
`--resume` continues with the others; the finished staging folder is renamed onto the output.
Under torchrun the videos are split by rank (rank r takes videos r, r + world, ...); rank 0 writes
the manifest after a barrier.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acar_deploy.artifacts import check_output_path, remove_stale_temporaries, sha256_file, swap_into_place
from acar_deploy.bank.process_group import barrier, rank_world
from acar_deploy.errors import InputError, OutputExistsError
from acar_deploy.formats.bank import (
    FEATURES_NAME,
    INDEX_NAME,
    MANIFEST_NAME,
    PRECISIONS,
    VIDEO_RECORD_NAME,
    BankManifest,
    BankVideo,
    video_dir,
    write_video_arrays,
)

SPLIT_BOXES = {"train": "ground truth + proposals >= 0.9", "val": "proposals >= 0.85"}


@dataclass(frozen=True)
class ExtractSettings:
    checkpoint: Path
    data: Path
    out: Path
    config: str | None = None
    split: str = "train"
    precision: str = "fp16"
    resume: bool = False
    force: bool = False
    device: str = "cpu"
    progress: bool = True


@dataclass(frozen=True)
class ExtractResult:
    out: Path
    manifest: BankManifest
    extracted: list[str]  # videos this run (this rank) computed
    resumed: list[str]  # videos found committed from an interrupted run


def staging_dir(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial")


def extract_bank(settings: ExtractSettings, on_video: Callable[[str], None] | None = None) -> ExtractResult:
    """Run the extraction; `on_video(video_id)` is called after each video commits."""
    import torch
    from rich.progress import Progress

    from acar_deploy.data.clips import ClipSpec
    from acar_deploy.data.dataset import KeyframeDataset, load_dataset, model_class_ids
    from acar_deploy.model.checkpoint import load_model

    if settings.split not in SPLIT_BOXES:
        raise InputError(f"--split {settings.split!r}: must be train or val")
    if settings.precision not in PRECISIONS:
        raise InputError(f"--precision {settings.precision!r}: must be fp16 or fp32")
    out = check_output_path(settings.out, "folder")  # a file in the way: one line before any work
    staging = staging_dir(out)
    rank, world = rank_world()
    if rank == 0:
        remove_stale_temporaries(out)  # a run killed between the two renames of `swap_into_place` (the staging stays)
    barrier(world)
    if out.exists() and not settings.force:
        raise OutputExistsError(f"{out} already exists: pass --force to replace it")

    model = load_model(settings.checkpoint, settings.config).to(settings.device).eval()
    head = model.head
    if not hasattr(head, "first_order_features"):
        raise InputError(f"{settings.checkpoint}: head type {model.config.head.type!r} has no actor-context "
                         "relation features; extract the bank with an acar (or acfb) checkpoint")
    data = load_dataset(settings.data)
    if settings.split == "val" and not data.has_val:
        raise InputError(f"{settings.data / 'dataset.json'}: no val annotations/proposals to extract --split val from")
    keyframes = data.train_keyframes() if settings.split == "train" else data.val_keyframes()
    spec = ClipSpec.from_model_config(model.config, fps=data.fps)
    dataset = KeyframeDataset(keyframes, data.media_dir, model_class_ids(model.config.head.num_classes), spec=spec,
                              start_seconds=data.start_seconds)
    by_video: dict[str, list[int]] = {}
    for i, kf in enumerate(keyframes):
        by_video.setdefault(kf.video_id, []).append(i)
    video_ids = sorted(by_video)
    dtype = PRECISIONS[settings.precision]

    @torch.no_grad()
    def first_order(index: int) -> tuple[np.ndarray, np.ndarray, int]:
        item = dataset[index]
        clip = item["clip"][None].to(settings.device)
        rois = torch.cat([torch.zeros(len(item["rois"]), 1), item["rois"].reshape(-1, 4)], 1).to(settings.device)
        reduced = head.conv_reduce(model.context(clip))
        maps = head.first_order_features(reduced, head.actor_features(reduced, rois), rois)
        return maps.float().cpu().numpy().astype(dtype), np.asarray(item["boxes"], np.float32), item["timestamp"]

    if not keyframes:
        raise InputError(f"{settings.data}: split {settings.split} has no keyframes to extract")
    sample = first_order(0)[0]
    started = BankManifest(
        precision=settings.precision,
        feature_shape=tuple(int(v) for v in sample.shape[1:]),  # type: ignore[arg-type]
        split=settings.split,
        boxes=SPLIT_BOXES[settings.split],
        source={"checkpoint": Path(settings.checkpoint).name, "checkpoint_sha256": sha256_file(settings.checkpoint),
                "config": model.config.name, "head": model.config.head.type},
    )
    if rank == 0:
        _prepare_staging(staging, started, settings)
    barrier(world)

    mine = video_ids[rank::world]
    committed = {v for v in mine if (video_dir(staging, v) / VIDEO_RECORD_NAME).exists()}
    extracted: list[str] = []
    with Progress(transient=True, disable=not settings.progress) as progress:
        task = progress.add_task(f"bank extract ({settings.split})", total=len(mine), completed=len(committed))
        for vid in mine:
            if vid in committed:
                continue
            _extract_video(staging, vid, [first_order(i) for i in by_video[vid]], started)
            extracted.append(vid)
            progress.advance(task)
            if on_video is not None:
                on_video(vid)
    barrier(world)
    if rank == 0:
        records = tuple(BankVideo.load(video_dir(staging, v) / VIDEO_RECORD_NAME) for v in video_ids)
        manifest = BankManifest(**{**started.__dict__, "videos": records})
        manifest.write(staging)
        swap_into_place(staging, out)
    else:
        manifest = started
    barrier(world)
    if rank != 0:
        manifest = BankManifest.load(out)
    return ExtractResult(out, manifest, extracted, sorted(committed))


def _prepare_staging(staging: Path, started: BankManifest, settings: ExtractSettings) -> None:
    if staging.exists():
        if settings.resume:
            previous = BankManifest.load(staging)
            differs = previous.differences(started)
            if differs:
                key, was, now = differs[0]
                raise InputError(f"{staging / MANIFEST_NAME}: field '{key}' of the interrupted extraction is {was!r} but "
                                 f"this run's is {now!r} (another checkpoint, split or precision); pass --force instead "
                                 "of --resume to start over")
            for tmp in (staging / "videos").glob(".tmp-*"):  # a video that was being written: redo it
                shutil.rmtree(tmp, ignore_errors=True)
            return
        if not settings.force:
            raise InputError(f"{staging}: an interrupted extraction is there; pass --resume to continue it "
                             "or --force to start over")
        shutil.rmtree(staging)
    (staging / "videos").mkdir(parents=True)
    started.write(staging)


def _extract_video(staging: Path, video_id: str, parts: list[tuple[np.ndarray, np.ndarray, int]],
                   started: BankManifest) -> None:
    """Write one video into a temporary folder, then rename it into place (the video's commit)."""
    tmp = staging / "videos" / f".tmp-{video_id}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    features = np.concatenate([p[0] for p in parts], 0) if parts else np.zeros((0, *started.feature_shape))
    timestamps = np.concatenate([np.full(len(p[0]), p[2], np.int32) for p in parts])
    boxes = np.concatenate([p[1].reshape(-1, 4) for p in parts], 0)
    write_video_arrays(tmp, features.astype(started.dtype), timestamps, boxes)
    BankVideo(
        video_id=video_id,
        entries=len(timestamps),
        first_timestamp=int(timestamps.min()) if len(timestamps) else None,
        last_timestamp=int(timestamps.max()) if len(timestamps) else None,
        features_sha256=sha256_file(tmp / FEATURES_NAME),
        index_sha256=sha256_file(tmp / INDEX_NAME),
    ).write(tmp / VIDEO_RECORD_NAME)
    final = video_dir(staging, video_id)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


__all__ = ["ExtractSettings", "ExtractResult", "extract_bank", "staging_dir"]
