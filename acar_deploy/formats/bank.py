"""The Actor-Context Feature Bank folder: `bank.json` (BankManifest) and one folder per video.

Layout:
    BANK/bank.json                     manifest: features, source model, one record per video
    BANK/videos/<video>/features.npy   [n, C, h', w'] fp16|fp32, first-order maps, read memory-mapped
    BANK/videos/<video>/index.npy      [n] structured (timestamp int32, box float32[4]), sorted by time
    BANK/videos/<video>/video.json     BankVideo: that video's record, written last (commit marker)
    BANK/videos/<video>/kv/            optional (format_version 2, `acar-deploy bank project`): the
        keys.npy, values.npy           bank_kv outputs [depth, n, C, h', w'] in the bank's precision,
        kv.json                        BankVideoKV: which weights projected them, sha256 of both arrays

`bank.json`'s `projection` (BankProjection) says which weights projected the K/V of every video; a
video's `kv/` folder is renamed into place complete, so it is either absent or whole.

Nobody else parses these JSON files; `acar_deploy.bank` reads the arrays through this module.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acar_deploy.artifacts import sha256_file, write_json
from acar_deploy.errors import InputError
from acar_deploy.formats.manifest import ExportManifest

BANK_FORMAT = "acar-deploy-bank"
BANK_FORMAT_VERSION = 2  # 2 added the optional `projection` and videos/<id>/kv/; 1 still loads
SUPPORTED_FORMAT_VERSIONS = (1, 2)
MANIFEST_NAME = "bank.json"
VIDEO_RECORD_NAME = "video.json"
FEATURES_NAME = "features.npy"
INDEX_NAME = "index.npy"
KV_DIR_NAME = "kv"
KV_RECORD_NAME = "kv.json"
KEYS_NAME = "keys.npy"
VALUES_NAME = "values.npy"
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
class ProjectionWeights:
    """Which weights a bank's keys/values were projected with: K/V are a function of an entry and these.

    `checkpoint_sha256` identifies trained weights; a seeded random init (no checkpoint) is identified
    by `seed` instead. `config` and `depth` (HR2O layers = the K/V's first axis) make the mismatch
    message readable and catch a config change.
    """

    checkpoint_sha256: str | None
    seed: int | None
    config: str
    depth: int

    def describe(self) -> str:
        weights = f"checkpoint sha256 {self.checkpoint_sha256[:12]}" if self.checkpoint_sha256 else \
            f"random init seed {self.seed}"
        return f"{weights}, config {self.config}, depth {self.depth}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of_export(cls, manifest: ExportManifest) -> ProjectionWeights:
        """The weights an export folder's (or an engine folder's copied) manifest.json was exported from."""
        geometry = manifest.geometry().bank
        if geometry is None:
            raise InputError(f"{manifest.path}: model {manifest.model_name!r} has no feature-bank head (head.type "
                             "acfb); project the bank with an acfb export or engine")
        seed = manifest.source.get("seed", 0) if manifest.checkpoint_sha256 is None else None
        return cls(manifest.checkpoint_sha256, seed, manifest.model_name, geometry.depth)

    @classmethod
    def read(cls, raw: Any, path: Path, key: str) -> ProjectionWeights:
        if not isinstance(raw, dict):
            raise InputError(f"{path}: field '{key}' must be an object; rerun acar-deploy bank project --force")
        checkpoint, seed = raw.get("checkpoint_sha256"), raw.get("seed")
        if checkpoint is not None and not isinstance(checkpoint, str):
            raise InputError(f"{path}: field '{key}.checkpoint_sha256' must be a string or null")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise InputError(f"{path}: field '{key}.seed' must be an integer or null")
        depth = raw.get("depth")
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise InputError(f"{path}: field '{key}.depth' must be a positive integer")
        config = raw.get("config")
        if not isinstance(config, str):
            raise InputError(f"{path}: field '{key}.config' must be a string")
        return cls(checkpoint, seed, config, depth)


@dataclass(frozen=True)
class BankProjection:
    """`bank.json`'s `projection`: every video's `kv/` holds K/V of these weights (written when all are done)."""

    weights: ProjectionWeights
    runner: str  # what ran bank_kv, e.g. "ort-fp32:acfb_tiny" (informational: same weights, other runtime = same K/V)

    def to_dict(self) -> dict[str, Any]:
        return {"weights": self.weights.to_dict(), "runner": self.runner}

    @classmethod
    def read(cls, raw: Any, path: Path) -> BankProjection:
        if not isinstance(raw, dict):
            raise InputError(f"{path}: field 'projection' must be an object or null; rerun acar-deploy bank project")
        runner = raw.get("runner", "")
        return cls(ProjectionWeights.read(raw.get("weights"), path, "projection.weights"), str(runner))


@dataclass(frozen=True)
class BankVideoKV:
    """`videos/<id>/kv/kv.json`: the stored keys/values of one video and the weights that made them."""

    video_id: str
    entries: int
    weights: ProjectionWeights
    keys_sha256: str
    values_sha256: str

    @classmethod
    def load(cls, path: str | os.PathLike) -> BankVideoKV:
        path = Path(path)
        data = _read_json(path)
        return cls(
            video_id=_field(data, "video_id", str, path),
            entries=_field(data, "entries", int, path),
            weights=ProjectionWeights.read(data.get("weights"), path, "weights"),
            keys_sha256=_field(data, "keys_sha256", str, path),
            values_sha256=_field(data, "values_sha256", str, path),
        )

    def write(self, path: str | os.PathLike) -> None:
        write_json(path, {**asdict(self), "weights": self.weights.to_dict()})


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
    projection: BankProjection | None = None  # set by `bank project` once every video has its kv/

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
        if version not in SUPPORTED_FORMAT_VERSIONS:
            raise InputError(f"{path}: format_version {version} is not supported (expected one of "
                             f"{list(SUPPORTED_FORMAT_VERSIONS)}); upgrade acar-deploy or re-extract the bank")
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
            projection=None if data.get("projection") is None else BankProjection.read(data["projection"], path),
        )

    def write(self, bank: str | os.PathLike) -> None:
        data = {"format": BANK_FORMAT, **asdict(self)}
        data["feature_shape"] = list(self.feature_shape)
        data["projection"] = None if self.projection is None else self.projection.to_dict()
        if self.projection is None and self.format_version == 1:
            del data["projection"]  # a version-1 bank stays byte-compatible with version-1 readers
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


def kv_dir(bank: Path, video_id: str) -> Path:
    return video_dir(bank, video_id) / KV_DIR_NAME


def kv_shape(manifest: BankManifest, depth: int, entries: int) -> tuple[int, ...]:
    """Shape of one video's keys (= values): `[depth, n, C, h', w']` (the bank_kv part's output)."""
    return (depth, entries, *manifest.feature_shape)


def open_kv_arrays(bank: Path, manifest: BankManifest, video_id: str, entries: int) -> tuple[np.ndarray, np.ndarray]:
    """Memory-mapped (keys, values) `[depth, n, C, h, w]` of one video; InputError when they do not match
    `bank.json` (projection weights, dtype, shape): a run of `bank project` was interrupted or the files changed."""
    if manifest.projection is None:
        raise InputError(f"{Path(bank) / MANIFEST_NAME}: field 'projection' is null: the bank stores no keys/values; "
                         "run acar-deploy bank project")
    folder = kv_dir(bank, video_id)
    record = BankVideoKV.load(folder / KV_RECORD_NAME)
    if record.weights != manifest.projection.weights:
        raise InputError(f"{folder / KV_RECORD_NAME}: field 'weights' ({record.weights.describe()}) differs from "
                         f"{MANIFEST_NAME}'s projection ({manifest.projection.weights.describe()}): a `bank project` "
                         "run was interrupted; rerun it to finish")
    weights = manifest.projection.weights
    want = kv_shape(manifest, weights.depth, entries)
    arrays = tuple(_open_array(folder / name) for name in (KEYS_NAME, VALUES_NAME))
    for name, array in zip((KEYS_NAME, VALUES_NAME), arrays, strict=True):
        if array.dtype != manifest.dtype or tuple(array.shape) != want:
            raise InputError(f"{folder / name}: dtype/shape {array.dtype}{list(array.shape)} does not match "
                             f"{MANIFEST_NAME} ({manifest.precision}, {list(want)}); rerun acar-deploy bank project --force")
    return arrays  # type: ignore[return-value]


def create_kv_arrays(folder: Path, manifest: BankManifest, depth: int, entries: int) -> tuple[np.ndarray, np.ndarray]:
    """Writable memory-mapped keys.npy, values.npy `[depth, n, C, h, w]` (bank precision) in `folder` (a
    temporary folder): the projection fills them in chunks, so a long video never sits in memory."""
    shape = kv_shape(manifest, depth, entries)
    if entries == 0:  # an empty file cannot be memory-mapped for writing
        for name in (KEYS_NAME, VALUES_NAME):
            np.save(folder / name, np.zeros(shape, manifest.dtype))
        return np.zeros(shape, manifest.dtype), np.zeros(shape, manifest.dtype)
    return tuple(np.lib.format.open_memmap(folder / name, mode="w+", dtype=manifest.dtype, shape=shape)  # type: ignore[return-value]
                 for name in (KEYS_NAME, VALUES_NAME))


def commit_kv_record(folder: Path, video_id: str, entries: int, weights: ProjectionWeights) -> BankVideoKV:
    """Hash the (flushed) keys/values in `folder` and write kv.json last: the folder is complete."""
    record = BankVideoKV(video_id, entries, weights, sha256_file(folder / KEYS_NAME), sha256_file(folder / VALUES_NAME))
    record.write(folder / KV_RECORD_NAME)
    return record


def stored_kv_record(bank: Path, video_id: str) -> BankVideoKV | None:
    """The video's kv.json, or None when it has no (complete) kv/ folder."""
    path = kv_dir(bank, video_id) / KV_RECORD_NAME
    return BankVideoKV.load(path) if path.is_file() else None


__all__ = ["BankManifest", "BankProjection", "BankVideo", "BankVideoKV", "INDEX_DTYPE", "PRECISIONS",
           "ProjectionWeights", "commit_kv_record", "create_kv_arrays", "kv_dir", "kv_shape", "open_kv_arrays",
           "open_video_arrays", "stored_kv_record", "video_dir", "write_video_arrays"]
