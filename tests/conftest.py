"""Shared fixtures and the `gpu` marker: GPU tests skip with a reason on machines without CUDA."""

from __future__ import annotations

import pytest


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch is a core dependency
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (and TensorRT for trt tests); none on this machine")
    for item in items:
        if "gpu" in item.keywords or "trt" in item.keywords:
            item.add_marker(skip)
