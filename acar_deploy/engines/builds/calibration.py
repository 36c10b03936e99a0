"""Calibration sets for INT8: clips with person boxes, one keyframe per sample.

Sources: a folder of `.npz` files (`clips` [3, T, H, W] or [B, 3, T, H, W] normalised float32,
`rois` [R, 5] = (batch_index, x1, y1, x2, y2) normalised, or [R, 4] for a single clip), or a
dataset folder readable by `acar_deploy.data` (synthetic by default: `acar-deploy synth`).
The set's sha256 covers every array in order, so engine.json pins exactly what was seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from acar_deploy.errors import InputError
from acar_deploy.formats import ExportManifest


@dataclass(frozen=True)
class CalibrationSample:
    clips: np.ndarray  # [1, 3, T, H, W]
    rois: np.ndarray  # [R, 5], batch index 0
    source: str = ""  # file it came from, for error messages (not hashed)


@dataclass(frozen=True)
class CalibrationSet:
    samples: tuple[CalibrationSample, ...]
    source: str

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for s in self.samples:
            for a in (s.clips, s.rois):
                h.update(str(a.shape).encode())
                h.update(np.ascontiguousarray(a, np.float32).tobytes())
        return h.hexdigest()

    @property
    def num_rois(self) -> int:
        return int(sum(s.rois.shape[0] for s in self.samples))

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "sha256": self.sha256, "clips": len(self.samples), "rois": self.num_rois}


def _split_clips(clips: np.ndarray, rois: np.ndarray, where: str) -> Iterator[CalibrationSample]:
    clips = np.asarray(clips, np.float32)
    rois = np.asarray(rois, np.float32)
    if clips.ndim == 4:
        clips = clips[None]
    if clips.ndim != 5 or clips.shape[1] != 3:
        raise InputError(f"{where}: 'clips' has shape {list(clips.shape)}; expected [3, T, H, W] or [B, 3, T, H, W]")
    if rois.ndim == 2 and rois.shape[1] == 4 and clips.shape[0] == 1:
        rois = np.concatenate([np.zeros((rois.shape[0], 1), np.float32), rois], axis=1)
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise InputError(f"{where}: 'rois' has shape {list(rois.shape)}; expected [R, 5] (batch_index, x1, y1, x2, y2)")
    for b in range(clips.shape[0]):
        mine = rois[rois[:, 0] == b].copy()
        mine[:, 0] = 0
        if mine.shape[0]:  # a keyframe without boxes never reaches the head; it cannot calibrate it
            yield CalibrationSample(clips[b : b + 1], mine, where)


def npz_samples(folder: Path) -> Iterator[CalibrationSample]:
    files = sorted(folder.glob("*.npz"))
    for path in files:
        try:
            with np.load(path) as data:
                if "clips" not in data or "rois" not in data:
                    raise InputError(f"{path}: needs arrays 'clips' and 'rois' (found {sorted(data.files)})")
                clips, rois = data["clips"], data["rois"]
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable .npz file ({exc})") from None
        yield from _split_clips(clips, rois, str(path))


def dataset_samples(
    folder: Path, manifest: ExportManifest | None, clip_shape: tuple[int, int, int] | None, seed: int
) -> Iterator[CalibrationSample]:
    """Training keyframes (ground truth + person detections) of a dataset folder (`dataset.json`),
    in a seeded random order, cut and normalised as the exported model expects."""
    from acar_deploy.data.clips import ClipSpec
    from acar_deploy.data.dataset import KeyframeDataset, load_dataset, model_class_ids
    from acar_deploy.model.config import ModelConfig

    dataset_folder = load_dataset(folder)
    if manifest is None:
        raise InputError(f"{folder}: reading a dataset for calibration needs the export's manifest config")
    config = ModelConfig.from_dict(manifest.config, source=f"{manifest.path} config")
    overrides: dict[str, Any] = {"fps": dataset_folder.fps}
    if clip_shape is not None:
        overrides["short_side"] = min(clip_shape[1:])
    spec = ClipSpec.from_model_config(config, **overrides)
    keyframes = dataset_folder.train_keyframes()
    dataset = KeyframeDataset(keyframes, dataset_folder.media_dir, model_class_ids(config.head.num_classes), spec,
                              dataset_folder.start_seconds)
    for index in np.random.default_rng(seed).permutation(len(keyframes)):
        item = dataset[int(index)]
        yield from _split_clips(item["clip"].numpy(), item["rois"].numpy(), f"{folder} ({keyframes[index].video_id})")


def default_calibration_set(
    manifest: ExportManifest, clip_shape: tuple[Any, ...] | None, limit: int, seed: int
) -> CalibrationSet:
    """Synthetic clips with their person boxes (`acar_deploy.data.synth`), rendered at the export's
    frame size, when no calibration data is given."""
    import tempfile

    from acar_deploy.data.synth import SynthSettings, synthesize

    static = _static(clip_shape)
    if static is None:
        raise InputError("a dynamic-size export needs --calib-data DIR (clips at the size you deploy)")
    height, width = static[1:]
    scale = 1 if height % 2 == 0 and width % 2 == 0 else 2  # synth writes even sizes; Scale() maps back
    seconds = 4
    videos = max(2, -(-limit // (seconds - 1)) * 4 // 3 + 1)  # 3 keyframes per video; a quarter is val
    with tempfile.TemporaryDirectory(prefix="acar-calib-") as tmp:
        root = Path(tmp) / "synth"
        synthesize(SynthSettings(out_dir=root, videos=videos, seconds=seconds, seed=seed,
                                 width=width * scale, height=height * scale))
        found = load_calibration_set(root, limit, clip_shape, seed, manifest)
    return CalibrationSet(found.samples, f"synthetic (acar-deploy synth: seed {seed}, {videos} videos, {width}x{height})")


def load_calibration_set(
    source: str | Path,
    limit: int,
    clip_shape: tuple[Any, ...] | None = None,
    seed: int = 0,
    manifest: ExportManifest | None = None,
) -> CalibrationSet:
    """Up to `limit` keyframes with at least one box; `clip_shape` = static [3, T, H, W] dims to check."""
    folder = Path(source)
    if not folder.is_dir():
        raise InputError(f"{folder}: calibration data must be a folder of .npz files or a dataset folder (dataset.json)")
    if limit < 1:
        raise InputError(f"--calib-clips {limit}: needs at least 1 clip")
    if any(folder.glob("*.npz")):
        samples_iter: Iterator[CalibrationSample] = npz_samples(folder)
    else:
        samples_iter = dataset_samples(folder, manifest, _static(clip_shape), seed)
    samples: list[CalibrationSample] = []
    for sample in samples_iter:
        _check_shape(sample, clip_shape)
        samples.append(sample)
        if len(samples) >= limit:
            break
    if not samples:
        raise InputError(f"{folder}: no clip with at least one person box; calibration needs boxes")
    return CalibrationSet(tuple(samples), str(folder))


def _static(clip_shape: tuple[Any, ...] | None) -> tuple[int, int, int] | None:
    if clip_shape and len(clip_shape) == 4 and all(isinstance(d, int) for d in clip_shape[1:]):
        return tuple(clip_shape[1:])  # type: ignore[return-value]
    return None


def _check_shape(sample: CalibrationSample, clip_shape: tuple[Any, ...] | None) -> None:
    if not clip_shape:
        return
    got = sample.clips.shape[1:]
    for want, have in zip(clip_shape, got, strict=False):
        if isinstance(want, int) and want != have:
            raise InputError(
                f"{sample.source}: calibration clip shape {list(got)} does not match the export's {list(clip_shape)}; "
                "make clips at the export's input size"
            )
