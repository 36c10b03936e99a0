"""Eager PyTorch under CPU bf16 autocast: what a user gets without any engine, at bf16.

A reference row for the benchmark, not an engine: convs, matmuls and linears run in bf16 (autocast's
CPU list), everything else in fp32; the logits come back as fp32. `channels_last` converts the
conv weights to channels-last (3D) memory format, which oneDNN's bf16 convs often prefer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from acar_deploy.engines.runners.base import RunnerOptions
from acar_deploy.engines.runners.eager import EagerRunner
from acar_deploy.formats.enums import Precision


class EagerBf16Runner(EagerRunner):
    """`EagerBf16Runner(model, options=RunnerOptions(threads=2))`; runtime `eager`, precision `bf16`."""

    def __init__(self, model: Any, name: str = "eager-bf16", options: RunnerOptions = RunnerOptions(),
                 channels_last: bool = False):
        super().__init__(model, name=name, options=options)
        self._precision = Precision.BF16
        self.channels_last = channels_last
        self.metadata.update({"precision": "bf16", "autocast": "torch.autocast('cpu', dtype=torch.bfloat16)",
                              "channels_last": channels_last})

    def _activate(self) -> None:
        import torch

        super()._activate()
        if self.channels_last:  # conv weights only: other parameters have no channels-last layout
            for module in self.model.modules():
                if isinstance(module, torch.nn.Conv3d):
                    module.to(memory_format=torch.channels_last_3d)
                elif isinstance(module, torch.nn.Conv2d):
                    module.to(memory_format=torch.channels_last)

    def _autocast(self) -> Any:
        import torch

        return torch.autocast("cpu", dtype=torch.bfloat16)

    def _infer_split(self, clips: np.ndarray, rois: np.ndarray) -> dict[str, np.ndarray]:
        with self._autocast():
            return super()._infer_split(clips, rois)

    def _infer_head(self, context: np.ndarray, rois: np.ndarray) -> dict[str, np.ndarray]:
        with self._autocast():
            return super()._infer_head(context, rois)
