"""ONNX export of ACAR-Net: one spec per part, plugin-node variants, validation against eager.

`export_model(out, checkpoint, config, ExportSettings(...)) -> ExportResult` and
`validate_export(path) -> ValidationReport`; `prepare_for_tensorrt` / `strip_local_functions` give the
engine build the graph TensorRT must parse. Submodules import torch/onnx; this package imports them
only when one of these names is first used.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "export_model": "acar_deploy.export.exporter",
    "ExportSettings": "acar_deploy.export.exporter",
    "ExportResult": "acar_deploy.export.exporter",
    "ExportError": "acar_deploy.export.exporter",
    "Parts": "acar_deploy.export.exporter",
    "NodeChoice": "acar_deploy.export.exporter",
    "validate_export": "acar_deploy.export.validate",
    "ValidationReport": "acar_deploy.export.validate",
    "ValidationSettings": "acar_deploy.export.validate",
    "ValidationError": "acar_deploy.export.validate",
    "BackboneSpec": "acar_deploy.export.specs",
    "HeadSpec": "acar_deploy.export.specs",
    "FusedSpec": "acar_deploy.export.specs",
    "ExportGeometry": "acar_deploy.export.specs",
    "make_spec": "acar_deploy.export.specs",
    "strip_local_functions": "acar_deploy.export.plugin_nodes",
    "prepare_for_tensorrt": "acar_deploy.export.plugin_nodes",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'acar_deploy.export' has no attribute {name!r}")
