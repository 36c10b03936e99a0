"""The Actor-Context Feature Bank folder: `bank.json` (BankManifest) and one folder per video.

Layout:
    BANK/bank.json                     manifest: features, source model, one record per video
    BANK/videos/<video>/features.npy   [n, C, h', w'] fp16|fp32, first-order maps, read memory-mapped
    BANK/videos/<video>/index.npy      [n] structured (timestamp int32, box float32[4]), sorted by time
    BANK/videos/<video>/video.json     BankVideo: that video's record, written last (commit marker)

Nobody else parses these JSON files; `acar_deploy.bank` reads the arrays through this module.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acar_deploy.artifacts import write_json
from acar_deploy.errors import InputError

BANK_FORMAT = "acar-deploy-bank"
BANK_FORMAT_VERSION = 1
MANIFEST_NAME = "bank.json"
VIDEO_RECORD_NAME = "video.json"
FEATURES_NAME = "features.npy"
INDEX_NAME = "index.npy"
INDEX_DTYPE = np.dtype([("timestamp", "<i4"), ("box", "<f4", (4,))])
PRECISIONS = {"fp16": np.float16, "fp32": np.float32}


def video_dir(bank: Path, video_id: str) -> Path:
    return Path(bank) / "videos" / video_id


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: not found; is this a feature bank folder (acar-deploy bank extract)?") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not readable JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def _field(data: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    if key not in data:
        raise InputError(f"{path}: field '{key}' is missing")
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InputError(f"{path}: field '{key}' has the wrong type ({type(value).__name__}); rewrite the bank")
    return value


@dataclass(frozen=True)
class BankVideo:
    """One committed video: its entry count, time span and the hashes of its two arrays."""

    video_id: str
    entries: int
    first_timestamp: int | None
    last_timestamp: int | None
    features_sha256: str
    index_sha256: str

    @classmethod
    def load(cls, path: str | os.PathLike) -> BankVideo:
        path = Path(path)
        data = _read_json(path)
        first, last = data.get("first_timestamp"), data.get("last_timestamp")
        for key, value in (("first_timestamp", first), ("last_timestamp", last)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise InputError(f"{path}: field '{key}' must be an integer or null")
        return cls(
            video_id=_field(data, "video_id", str, path),
            entries=_field(data, "entries", int, path),
            first_timestamp=first,
            last_timestamp=last,
            features_sha256=_field(data, "features_sha256", str, path),
            index_sha256=_field(data, "index_sha256", str, path),
        )

    def write(self, path: str | os.PathLike) -> None:
        write_json(path, asdict(self))


@dataclass(frozen=True)
class BankManifest:
    """`bank.json`: what the features are, which model made them, and the committed videos."""

    precision: str  # fp16 | fp32
    feature_shape: tuple[int, int, int]  # (C, h', w') of one entry
    split: str  # train | val
    boxes: str  # which boxes were archived (e.g. "ground truth + proposals >= 0.9")
    source: dict[str, Any] = field(default_factory=dict)  # checkpoint path/sha256, config name
    videos: tuple[BankVideo, ...] = ()
    format_version: int = BANK_FORMAT_VERSION

    @property
    def entries(self) -> int:
        return sum(v.entries for v in self.videos)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(PRECISIONS[self.precision])

    def differences(self, other: BankManifest) -> list[tuple[str, Any, Any]]:
        """(field, ours, theirs) where `other` was started with another model, data split or precision."""
        found = [(key, getattr(self, key), getattr(other, key)) for key in ("precision", "split", "boxes", "feature_shape")
                 if getattr(self, key) != getattr(other, key)]
        keys = sorted(set(self.source) | set(other.source))
        found += [(f"source.{k}", self.source.get(k), other.source.get(k)) for k in keys
                  if self.source.get(k) != other.source.get(k)]
        return found

    def same_extraction(self, other: BankManifest) -> bool:
        """True when `other` was started with the same model, data split and precision (resume check)."""
        return not self.differences(other)

    @classmethod
    def load(cls, bank: str | os.PathLike) -> BankManifest:
        """Read `bank/bank.json`; InputError naming the file and field when it does not validate."""
        path = Path(bank) / MANIFEST_NAME
        data = _read_json(path)
        if data.get("format") != BANK_FORMAT:
            raise InputError(f"{path}: field 'format' must be {BANK_FORMAT!r}; not a feature bank")
        version = _field(data, "format_version", int, path)
        if version != BANK_FORMAT_VERSION:
            raise InputError(f"{path}: format_version {version} is not supported (expected {BANK_FORMAT_VERSION})")
        precision = _field(data, "precision", str, path)
        if precision not in PRECISIONS:
            raise InputError(f"{path}: field 'precision' must be fp16 or fp32, got {precision!r}")
        shape = _field(data, "feature_shape", list, path)
        if len(shape) != 3 or not all(isinstance(v, int) and v > 0 for v in shape):
            raise InputError(f"{path}: field 'feature_shape' must be 3 positive integers (C, h, w), got {shape}")
        videos = []
        for i, raw in enumerate(_field(data, "videos", list, path)):
            if not isinstance(raw, dict):
                raise InputError(f"{path}: field 'videos[{i}]' must be an object")
            try:
                videos.append(BankVideo(
                    video_id=str(raw["video_id"]), entries=int(raw["entries"]),
                    first_timestamp=raw.get("first_timestamp"), last_timestamp=raw.get("last_timestamp"),
                    features_sha256=str(raw["features_sha256"]), index_sha256=str(raw["index_sha256"]),
                ))
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(f"{path}: field 'videos[{i}]' is incomplete ({exc!r})") from None
            name = videos[-1].video_id
            if not name or name.startswith(".") or "/" in name or "\\" in name:
                raise InputError(f"{path}: field 'videos[{i}].video_id' {name!r} is not a folder name under videos/")
        source = data.get("source", {})
        if not isinstance(source, dict):
            raise InputError(f"{path}: field 'source' must be an object")
        return cls(
            precision=precision,
            feature_shape=tuple(shape),  # type: ignore[arg-type]
            split=_field(data, "split", str, path),
            boxes=_field(data, "boxes", str, path),
            source=source,
            videos=tuple(videos),
            format_version=version,
        )

    def write(self, bank: str | os.PathLike) -> None:
        data = {"format": BANK_FORMAT, **asdict(self)}
        data["feature_shape"] = list(self.feature_shape)
        write_json(Path(bank) / MANIFEST_NAME, data)


def write_video_arrays(folder: Path, features: np.ndarray, timestamps: np.ndarray, boxes: np.ndarray) -> None:
    """Write one video's arrays (entries sorted by timestamp) into `folder` (a temporary folder)."""
    order = np.argsort(timestamps, kind="stable")
    index = np.zeros(len(timestamps), INDEX_DTYPE)
    index["timestamp"] = np.asarray(timestamps)[order]
    index["box"] = np.asarray(boxes, np.float32).reshape(-1, 4)[order]
    np.save(folder / FEATURES_NAME, np.ascontiguousarray(features[order]))
    np.save(folder / INDEX_NAME, index)


def _open_array(path: Path) -> np.ndarray:
    """One memory-mapped .npy; a missing, truncated or non-numpy file fails naming it."""
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: cannot read this bank array ({reason}); re-extract the bank") from None


def open_video_arrays(bank: Path, manifest: BankManifest, video_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Memory-mapped (features `[n, C, h, w]`, index `[n]`) of one video, checked against the manifest."""
    folder = video_dir(bank, video_id)
    features, index = (_open_array(folder / name) for name in (FEATURES_NAME, INDEX_NAME))
    if features.dtype != manifest.dtype or tuple(features.shape[1:]) != tuple(manifest.feature_shape):
        raise InputError(f"{folder / FEATURES_NAME}: dtype/shape {features.dtype}{list(features.shape)} does not "
                         f"match {MANIFEST_NAME} ({manifest.precision}, {list(manifest.feature_shape)})")
    if index.dtype != INDEX_DTYPE or len(index) != len(features):
        raise InputError(f"{folder / INDEX_NAME}: expected {len(features)} (timestamp, box) rows")
    return features, index


__all__ = ["BankManifest", "BankVideo", "INDEX_DTYPE", "PRECISIONS", "open_video_arrays", "video_dir",
           "write_video_arrays"]
