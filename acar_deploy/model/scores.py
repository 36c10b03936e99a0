"""Logits -> AVA action scores as the official `ava_criterion(pose_softmax=True)` activates them."""

from __future__ import annotations

from typing import Any

import numpy as np

NUM_POSE_CLASSES = 13  # the first 13 classes of the 60-class AVA map are mutually exclusive poses


def action_scores(logits: Any) -> Any:
    """Softmax over the 13 pose logits, sigmoid over the rest, clamped to [0, 1].

    Accepts a torch tensor (returns a tensor) or anything array-like (returns a numpy array).
    """
    if isinstance(logits, np.ndarray) or not hasattr(logits, "softmax"):
        values = np.asarray(logits)
        dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float32
        values = values.astype(dtype, copy=False)
        pose = values[..., :NUM_POSE_CLASSES]
        pose = np.exp(pose - pose.max(axis=-1, keepdims=True))
        pose = pose / pose.sum(axis=-1, keepdims=True)
        rest = 0.5 * (1.0 + np.tanh(0.5 * values[..., NUM_POSE_CLASSES:]))  # sigmoid without overflow
        return np.clip(np.concatenate([pose, rest], axis=-1), 0.0, 1.0).astype(dtype, copy=False)
    import torch

    pose = torch.softmax(logits[..., :NUM_POSE_CLASSES], dim=-1)
    rest = torch.sigmoid(logits[..., NUM_POSE_CLASSES:])
    return torch.cat([pose, rest], dim=-1).clamp(0.0, 1.0)
