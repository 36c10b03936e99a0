"""Shared fixtures and the `gpu` marker: GPU tests skip with a reason on machines without CUDA."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_export_factory(tmp_path_factory):
    """`factory(plugin_nodes=False, parts="all") -> TinyExport`: each variant exported once per session."""
    from engine_support import make_tiny_export

    made = {}

    def factory(plugin_nodes: bool = False, parts: str = "all"):
        key = (plugin_nodes, parts)
        if key not in made:
            made[key] = make_tiny_export(tmp_path_factory.mktemp("tiny-export"), plugin_nodes, parts)
        return made[key]

    return factory


@pytest.fixture(scope="session")
def tiny_export(tiny_export_factory):
    """The seed-0 acar_tiny checkpoint and its export (64x64 frames, all parts); read-only."""
    return tiny_export_factory()


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
