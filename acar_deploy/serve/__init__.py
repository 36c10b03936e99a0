"""Serving: a Triton Inference Server model repository built from an export (and engines), a local
server for it, a client and a load benchmark.

`build_model_repository` writes the repository; `TritonServerProcess` (`acar-deploy serve`) runs a
Triton server on it; `request_actions` / `infer_pipeline` send clips and boxes to a running server;
`run_load` drives perf_analyzer. tritonclient and onnx are imported only when these are used.
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
    "infer_pipeline": "acar_deploy.serve.triton_client",
    "BankFeeds": "acar_deploy.serve.triton_client",
    "ServeSettings": "acar_deploy.serve.local_triton",
    "TritonServerProcess": "acar_deploy.serve.local_triton",
    "find_runtime": "acar_deploy.serve.local_triton",
    "prepare_bundled": "acar_deploy.serve.local_triton",
    "LoadSettings": "acar_deploy.serve.triton_load",
    "run_load": "acar_deploy.serve.triton_load",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'acar_deploy.serve' has no attribute {name!r}")
