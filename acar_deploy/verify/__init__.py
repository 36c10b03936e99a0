"""Parity of an engine with eager PyTorch: numeric comparison, thresholds, and the frame-mAP gate.

`check_parity(ParitySettings(...)) -> ParityReport` runs eager and the engine on the same keyframes.
Submodules import torch/onnxruntime inside functions; names here resolve on first use.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "ParitySettings": "acar_deploy.verify.parity",
    "ParityReport": "acar_deploy.verify.parity",
    "ParityGateFailed": "acar_deploy.verify.parity",
    "check_parity": "acar_deploy.verify.parity",
    "ParityThresholds": "acar_deploy.verify.thresholds",
    "compare_output": "acar_deploy.verify.compare",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'acar_deploy.verify' has no attribute {name!r}")
