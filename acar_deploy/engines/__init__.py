"""Engines in two parts: runners (eager, ONNX Runtime, TensorRT behind one interface) and builds.

`open_runner(path, RunnerOptions(...))` opens an export folder, an engine folder or `eager:CKPT:CONFIG`;
`build_engine(BuildSettings(...))` turns an export folder into an engine folder.
"""

from acar_deploy.engines.build import build_engine
from acar_deploy.engines.runners.base import Runner, RunnerOptions
from acar_deploy.engines.runners.eager import EagerRunner
from acar_deploy.engines.runners.open import open_runner
from acar_deploy.engines.runners.ort import OrtRunner
from acar_deploy.engines.settings import (
    BuildSettings,
    CalibMethod,
    EngineInfo,
    Fp16Policy,
    Int8Policy,
    ShapeRange,
    TrtPolicy,
)
from acar_deploy.formats.enums import Precision, Runtime


def __getattr__(name: str):
    if name == "TrtRunner":  # imported lazily: TensorRT is an optional extra
        from acar_deploy.engines.runners.trt import TrtRunner

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
    "Precision",
    "Runner",
    "RunnerOptions",
    "Runtime",
    "ShapeRange",
    "TrtPolicy",
    "build_engine",
    "open_runner",
]
