"""Shared helpers for the engine and runner tests (no tests here).

`make_tiny_export(root)` saves a seeded `acar_tiny` checkpoint and exports it with the project's
`export_model` (64x64 frames, all parts); conftest's `tiny_export` fixture does it once per session.
Every engine is checked against the eager model loaded from that same checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


def _tiny_frames() -> int:
    from acar_deploy.model.config import get_config

    return int(get_config("acar_tiny").input.num_frames)


CLIP_SHAPE = (3, _tiny_frames(), 64, 64)  # [3, T, H, W] of acar_tiny in the tests


@dataclass(frozen=True)
class TinyExport:
    checkpoint: Path
    export_dir: Path


def sample_feeds(rng: np.random.Generator, batch: int, boxes_per_clip: list[int]) -> dict[str, np.ndarray]:
    """Random normalised clips and well-formed person-like boxes."""
    clips = rng.standard_normal((batch, *CLIP_SHAPE)).astype(np.float32)
    rows = []
    for b, count in enumerate(boxes_per_clip):
        for _ in range(count):
            x1, y1 = rng.uniform(0.0, 0.6, 2)
            w, h = rng.uniform(0.2, 0.4, 2)
            rows.append([b, x1, y1, min(x1 + w, 1.0), min(y1 + h, 1.0)])
    rois = np.asarray(rows, np.float32).reshape(-1, 5)
    return {"clips": clips, "rois": rois}


def write_npz_calibration(folder: Path, count: int, seed: int = 5) -> Path:
    """`count` files of two clips each (2 and 1 boxes): the .npz calibration layout."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        np.savez(folder / f"clip{i:03d}.npz", **sample_feeds(rng, 2, [2, 1]))
    return folder


def make_tiny_export(root: Path, plugin_nodes: bool = False, parts: str = "all") -> TinyExport:
    """A seed-0 acar_tiny checkpoint and its export under `root` (conftest's `tiny_export_factory`
    makes each variant once per session; read-only for tests: copy before modifying)."""
    import torch

    from acar_deploy.export.exporter import ExportSettings, NodeChoice, Parts, export_model
    from acar_deploy.model import build_model, save_checkpoint

    torch.manual_seed(0)
    checkpoint = save_checkpoint(build_model("acar_tiny"), root / "acar_tiny.pt")
    node = NodeChoice.plugin if plugin_nodes else NodeChoice.onnx
    settings = ExportSettings(parts=Parts(parts), input_size=CLIP_SHAPE[2:], roi_align=node, hr2o=node, validate=False)
    out = root / ("acar_tiny_plugin" if plugin_nodes else "acar_tiny")
    export_model(out, checkpoint, None, settings)
    return TinyExport(checkpoint, out)
