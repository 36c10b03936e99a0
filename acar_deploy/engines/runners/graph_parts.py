"""Runners that execute an export's ONNX parts one session per part (ONNX Runtime, OpenVINO).

The part plumbing (backbone -> head, the fused graph, the head alone, the acfb bank head with its
per-entry K/V cache) is the same whatever executes a part; a subclass only says how to run one part
(`_run`) and how to open and close its sessions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from acar_deploy.engines.runners.bank_cache import BankProjectionCache
from acar_deploy.engines.runners.base import ExportedPartsLayout, Runner, timed
from acar_deploy.errors import InputError


class GraphPartRunner(ExportedPartsLayout, Runner):
    """Base of OrtRunner and OpenVinoRunner: `path`, `_split` and `_bank` are set by the subclass."""

    path: Path
    bank_cache: BankProjectionCache

    def forget_bank_projections(self) -> None:
        self.bank_cache.clear()

    def _run(self, part: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def _infer_split(self, clips: np.ndarray, rois: np.ndarray) -> dict[str, np.ndarray]:
        if self._bank:
            raise InputError(f"{self.path}: an acfb model needs each keyframe's bank window "
                             "(feeds bank_entries, bank_window; detect/parity --bank BANK)")
        stages: dict[str, float] = {}
        context = timed(stages, "backbone", self._run, "backbone", {"clips": clips})["context"]
        outputs = timed(stages, "head", self._run, "head", {"context": context, "rois": rois})
        self.last_stage_times = stages
        return outputs

    def _infer_head(self, context: np.ndarray, rois: np.ndarray) -> dict[str, np.ndarray]:
        stages: dict[str, float] = {}
        outputs = timed(stages, "head", self._run, "head", {"context": context, "rois": rois})
        self.last_stage_times = stages
        return outputs

    def _infer_fused(self, clips: np.ndarray, rois: np.ndarray) -> dict[str, np.ndarray]:
        stages: dict[str, float] = {}
        outputs = timed(stages, "fused", self._run, "fused", {"clips": clips, "rois": rois})
        self.last_stage_times = stages
        return outputs

    def _project_bank(self, entries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = self._run("bank_kv", {"bank_entries": entries})
        return outputs["bank_keys"], outputs["bank_values"]

    def _infer_bank(self, clips: np.ndarray, rois: np.ndarray, entries: np.ndarray,
                    window: np.ndarray) -> dict[str, np.ndarray]:
        """backbone -> bank_head, with K/V from bank_kv for the entries new to this window only."""
        stages: dict[str, float] = {}
        context = timed(stages, "backbone", self._run, "backbone", {"clips": clips})["context"]
        keys, values = timed(stages, "bank_kv", self.bank_cache.keys_values, entries, self._project_bank)
        return self._bank_head(stages, context, rois, keys, values, window)

    def _infer_bank_projected(self, clips: np.ndarray, rois: np.ndarray, keys: np.ndarray, values: np.ndarray,
                              window: np.ndarray) -> dict[str, np.ndarray]:
        """backbone -> bank_head on K/V stored in the bank: bank_kv does not run."""
        stages: dict[str, float] = {}
        context = timed(stages, "backbone", self._run, "backbone", {"clips": clips})["context"]
        return self._bank_head(stages, context, rois, keys, values, window)

    def _bank_head(self, stages: dict[str, float], context: np.ndarray, rois: np.ndarray, keys: np.ndarray,
                   values: np.ndarray, window: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {"context": context, "rois": rois, "bank_keys": keys, "bank_values": values, "bank_window": window}
        outputs = timed(stages, "head", self._run, "bank_head", feeds)
        self.last_stage_times = stages
        return outputs
