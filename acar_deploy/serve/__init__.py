"""Serving: a Triton Inference Server model repository built from an export (and engines), and a client.

`build_model_repository` writes the repository; `request_actions` sends one clip and its boxes to a
running server. tritonclient and onnx are imported only when these are used.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "build_model_repository": "acar_deploy.serve.triton",
    "TritonSettings": "acar_deploy.serve.triton",
    "InstanceKind": "acar_deploy.serve.triton",
    "TritonRepository": "acar_deploy.serve.triton",
    "request_actions": "acar_deploy.serve.triton_client",
    "TritonProtocol": "acar_deploy.serve.triton_client",
    "BoxActions": "acar_deploy.serve.triton_client",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'acar_deploy.serve' has no attribute {name!r}")
