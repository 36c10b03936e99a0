"""`acar-deploy bank info`: size, entries, videos and how many entries a window holds."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acar_deploy.bank.window import FeatureBank, window_slice


@dataclass(frozen=True)
class BankInfoSettings:
    path: Path
    half_width: int = 10
    causal: bool = False


@dataclass(frozen=True)
class BankInfo:
    path: Path
    size_bytes: int
    precision: str
    feature_shape: tuple[int, int, int]
    split: str
    boxes: str
    source: dict
    videos: int
    entries: int
    keyframes: int  # distinct (video, timestamp) in the bank
    half_width: int
    causal: bool
    window_entries_min: int
    window_entries_mean: float
    window_entries_max: int
    projection: dict | None = None  # K/V stored by `bank project`: {weights, runner}; None: not stored

    def to_dict(self) -> dict:
        return {**self.__dict__, "path": str(self.path), "feature_shape": list(self.feature_shape)}


def bank_info(settings: BankInfoSettings) -> BankInfo:
    bank = FeatureBank(settings.path)
    counts: list[int] = []
    for record in bank.manifest.videos:
        _, index = bank.arrays(record.video_id)
        timestamps = np.asarray(index["timestamp"])
        for t in np.unique(timestamps):
            rows = window_slice(timestamps, int(t), settings.half_width, settings.causal)
            counts.append(rows.stop - rows.start)
    size = sum(f.stat().st_size for f in Path(settings.path).rglob("*") if f.is_file())
    m = bank.manifest
    return BankInfo(
        path=Path(os.fspath(settings.path)), size_bytes=size, precision=m.precision, feature_shape=m.feature_shape,
        split=m.split, boxes=m.boxes, source=dict(m.source), videos=len(m.videos), entries=m.entries,
        keyframes=len(counts), half_width=settings.half_width, causal=settings.causal,
        window_entries_min=min(counts, default=0), window_entries_mean=float(np.mean(counts)) if counts else 0.0,
        window_entries_max=max(counts, default=0),
        projection=None if m.projection is None else m.projection.to_dict(),
    )


__all__ = ["BankInfo", "BankInfoSettings", "bank_info"]
