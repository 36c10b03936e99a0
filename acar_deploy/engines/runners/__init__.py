"""Runners: one interface (`Runner`, opened with `RunnerOptions`) over eager PyTorch, ONNX Runtime and TensorRT."""

from acar_deploy.engines.runners.base import Runner, RunnerOptions
from acar_deploy.engines.runners.open import open_runner

__all__ = ["Runner", "RunnerOptions", "open_runner"]
