"""Runners (eager, ONNX Runtime, TensorRT) behind one interface, and engine builds.

`open_runner(path)` opens an export folder, an engine folder or `eager:CKPT:CONFIG`;
`build_engine(BuildSettings(...))` turns an export folder into an engine folder.
"""

from acar_deploy.engines.build import build_engine
from acar_deploy.engines.eager import EagerRunner
from acar_deploy.engines.open_runner import open_runner
from acar_deploy.engines.ort import OrtRunner, OrtSessionSettings
from acar_deploy.engines.runner import Runner
from acar_deploy.engines.settings import (
    BuildSettings,
    CalibMethod,
    EngineInfo,
    Fp16Policy,
    Int8Policy,
    Precision,
    Runtime,
    ShapeRange,
    TrtPolicy,
)


def __getattr__(name: str):
    if name == "TrtRunner":  # imported lazily: TensorRT is an optional extra
        from acar_deploy.engines.trt import TrtRunner

        return TrtRunner
    raise AttributeError(name)


__all__ = [
    "BuildSettings",
    "CalibMethod",
    "EagerRunner",
    "EngineInfo",
    "Fp16Policy",
    "Int8Policy",
    "OrtRunner",
    "OrtSessionSettings",
    "Precision",
    "Runner",
    "Runtime",
    "ShapeRange",
    "TrtPolicy",
    "build_engine",
    "open_runner",
]
