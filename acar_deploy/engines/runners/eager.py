"""Eager PyTorch runner: the reference every engine is compared against (fp32, inference mode)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from acar_deploy.engines.runners.base import Runner, RunnerOptions
from acar_deploy.formats.enums import Precision, Runtime


class EagerRunner(Runner):
    """Wraps an `ACARModel` (or anything with `context(clips)` and `head(context, rois)`).

    `EagerRunner.from_checkpoint("runs/tiny/ckpt_6.pt")`, or `EagerRunner(model)`. On a CUDA model the
    stages are synchronised and H2D / D2H are timed apart, as for TensorRT.
    """

    def __init__(self, model: Any, name: str = "eager", options: RunnerOptions = RunnerOptions()):
        super().__init__(name, int(model.config.head.num_classes), Runtime.EAGER, Precision.FP32)
        self.model = model
        self.options = options
        self.metadata.update({"provider": "eager", "device": options.device or "cpu"})

    @property
    def supports_stored_kv(self) -> bool:
        return hasattr(self.model.head, "project_bank")  # an acfb head

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | Path | None, config: str | Path | None = None, options: RunnerOptions = RunnerOptions()
    ) -> EagerRunner:
        from acar_deploy.model import load_model

        label = Path(checkpoint).name if checkpoint else "random-init"
        return cls(load_model(checkpoint, config), name=f"eager:{label}", options=options)

    def _activate(self) -> None:
        import torch

        if self.options.threads:
            torch.set_num_threads(self.options.threads)
        self.model = self.model.eval().float()
        if self.options.device:
            self.model = self.model.to(self.options.device)
        self._device = next(self.model.parameters()).device
        self.metadata["device"] = str(self._device)
        self.metadata["versions"]["torch"] = torch.__version__

    def _close(self) -> None:
        pass

    def _stage(self, stages: dict[str, float], name: str, fn: Any, *args: Any) -> Any:
        import torch

        cuda = self._device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self._device)
        start = time.perf_counter()
        result = fn(*args)
        if cuda:
            torch.cuda.synchronize(self._device)
        stages[name] = time.perf_counter() - start
        return result

    def _to_device(self, *arrays: np.ndarray) -> list[Any]:
        import torch

        return [torch.from_numpy(a.copy()).to(self._device) for a in arrays]  # copy: the head scales rois in place

    def _infer_split(self, clips: np.ndarray, rois: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        stages: dict[str, float] = {}
        with torch.inference_mode():
            clips_t, rois_t = self._stage(stages, "h2d", self._to_device, clips, rois)
            context = self._stage(stages, "backbone", self.model.context, clips_t)
            logits = self._stage(stages, "head", self.model.head, context, rois_t)
            out = self._stage(stages, "d2h", lambda t: t.float().cpu().numpy(), logits)
        self.last_stage_times = stages if self._device.type == "cuda" else {k: stages[k] for k in ("backbone", "head")}
        return {"logits": out}

    def _infer_bank(self, clips: np.ndarray, rois: np.ndarray, entries: np.ndarray,
                    window: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        stages: dict[str, float] = {}
        with torch.inference_mode():
            clips_t, rois_t = self._to_device(clips, rois)
            bank = (torch.from_numpy(entries).to(self._device), torch.from_numpy(window).to(self._device))
            context = self._stage(stages, "backbone", self.model.context, clips_t)
            logits = self._stage(stages, "head", self.model.head, context, rois_t, *bank)
        self.last_stage_times = stages
        return {"logits": logits.float().cpu().numpy()}

    def _infer_bank_projected(self, clips: np.ndarray, rois: np.ndarray, keys: np.ndarray, values: np.ndarray,
                              window: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        stages: dict[str, float] = {}
        with torch.inference_mode():
            clips_t, rois_t = self._to_device(clips, rois)
            bank = [torch.from_numpy(a).to(self._device) for a in (keys, values, window)]
            context = self._stage(stages, "backbone", self.model.context, clips_t)
            logits = self._stage(stages, "head", self.model.head.forward_projected, context, rois_t, *bank)
        self.last_stage_times = stages
        return {"logits": logits.float().cpu().numpy()}

    def _project_bank(self, entries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.inference_mode():
            keys, values = self.model.head.project_bank(torch.from_numpy(entries).to(self._device))
        return keys.float().cpu().numpy(), values.float().cpu().numpy()

    def _infer_head(self, context: np.ndarray, rois: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        stages: dict[str, float] = {}
        with torch.inference_mode():
            context_t, rois_t = self._stage(stages, "h2d", self._to_device, context, rois)
            logits = self._stage(stages, "head", self.model.head, context_t, rois_t)
            out = self._stage(stages, "d2h", lambda t: t.float().cpu().numpy(), logits)
        self.last_stage_times = stages if self._device.type == "cuda" else {"head": stages["head"]}
        return {"logits": out}
