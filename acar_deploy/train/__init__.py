"""Training the eager ACAR model: `train(TrainSettings) -> TrainResult`."""

from __future__ import annotations

from acar_deploy.train.config import OptimizerConfig, SchedulerConfig, TrainConfig, load_train_config
from acar_deploy.train.loop import EpochRecord, TrainResult, TrainSettings, train

__all__ = [
    "EpochRecord", "OptimizerConfig", "SchedulerConfig", "TrainConfig", "TrainResult", "TrainSettings",
    "load_train_config", "train",
]
