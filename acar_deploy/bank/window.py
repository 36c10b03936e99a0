"""Window lookup in a feature bank: the entries of [t - w, t + w] (or [t - w, t]) of one video.

Entries are sorted by timestamp on disk, so a window is one contiguous slice found by binary search;
at a video's edges the window simply holds fewer seconds. Arrays stay memory-mapped until sliced.
A bank whose keys/values were stored by `acar-deploy bank project` also returns the window's K/V,
once a caller has checked they come from its weights (`use_stored_kv`): training never does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acar_deploy.errors import InputError
from acar_deploy.formats.bank import (
    MANIFEST_NAME,
    BankManifest,
    ProjectionWeights,
    open_kv_arrays,
    open_video_arrays,
)


def window_slice(timestamps: np.ndarray, timestamp: int, half_width: int, causal: bool = False) -> slice:
    """Rows of sorted `timestamps` inside [t - w, t + w] (causal: [t - w, t])."""
    lo = int(np.searchsorted(timestamps, timestamp - half_width, side="left"))
    hi = int(np.searchsorted(timestamps, timestamp if causal else timestamp + half_width, side="right"))
    return slice(lo, max(lo, hi))


@dataclass(frozen=True)
class BankWindow:
    """The entries one keyframe may attend (in-memory copies): features `[m, C, h, w]`, timestamps, boxes,
    and, when the bank stores them and `use_stored_kv` accepted them, keys/values `[depth, m, C, h, w]`."""

    features: np.ndarray
    timestamps: np.ndarray
    boxes: np.ndarray
    keys: np.ndarray | None = None
    values: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.timestamps)


class FeatureBank:
    """A bank folder opened for reading; videos are memory-mapped on first use."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.manifest = BankManifest.load(self.path)
        self.video_ids = {v.video_id for v in self.manifest.videos}
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._kv: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.stored_kv = False  # windows carry keys/values (set by use_stored_kv)

    def __getstate__(self) -> dict:  # decoding workers re-open the memory maps instead of copying them
        return {**self.__dict__, "_arrays": {}, "_kv": {}}

    @property
    def has_kv(self) -> bool:
        """True when `bank project` stored keys/values for every video (bank.json's `projection`)."""
        return self.manifest.projection is not None

    def use_stored_kv(self, weights: ProjectionWeights) -> bool:
        """Make windows carry the stored K/V when the bank has them; False (entries only) when it has none.

        InputError when they were projected by other weights than `weights` (the model about to use
        them): K/V of other weights would silently give other logits."""
        projection = self.manifest.projection
        if projection is None:
            self.stored_kv = False
            return False
        if projection.weights != weights:
            raise InputError(f"{self.path / MANIFEST_NAME}: field 'projection.weights' ({projection.weights.describe()}) "
                             f"is not this model's ({weights.describe()}); rerun acar-deploy bank project "
                             f"{self.path} with this model (--engine DIR or --checkpoint CKPT) --force")
        self.stored_kv = True
        return True

    def kv_arrays(self, video_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Memory-mapped keys, values `[depth, n, C, h, w]` of one video (InputError when not stored)."""
        if video_id not in self._kv:
            features, _ = self.arrays(video_id)
            self._kv[video_id] = open_kv_arrays(self.path, self.manifest, video_id, len(features))
        return self._kv[video_id]

    def arrays(self, video_id: str) -> tuple[np.ndarray, np.ndarray]:
        if video_id not in self._arrays:
            if video_id not in self.video_ids:
                raise InputError(f"{self.path}: the bank has no video {video_id!r} "
                                 f"(extracted split: {self.manifest.split}); extract the bank for that split")
            self._arrays[video_id] = open_video_arrays(self.path, self.manifest, video_id)
        return self._arrays[video_id]

    def check_arrays(self) -> None:
        """Open every video's arrays now (headers and sizes only: memory-mapped), so that a missing or
        truncated file fails in one line before training or inference starts, not in the middle."""
        for video_id in sorted(self.video_ids):
            self.arrays(video_id)
            if self.stored_kv:
                self.kv_arrays(video_id)

    def window(self, video_id: str, timestamp: int, half_width: int, causal: bool = False) -> BankWindow:
        features, index = self.arrays(video_id)
        rows = window_slice(index["timestamp"], timestamp, half_width, causal)
        # np.array copies: the window is read from disk here, not lazily by whoever uses it
        window = BankWindow(np.array(features[rows]), np.array(index["timestamp"][rows]), np.array(index["box"][rows]))
        if not self.stored_kv:
            return window
        keys, values = self.kv_arrays(video_id)
        return BankWindow(window.features, window.timestamps, window.boxes, np.array(keys[:, rows]),
                          np.array(values[:, rows]))


__all__ = ["BankWindow", "FeatureBank", "window_slice"]
