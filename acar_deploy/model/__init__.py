"""ACAR-Net in PyTorch: configs, SlowFast + ACAR/linear heads, RoIAlign, checkpoints."""

from acar_deploy.model.acar import ACARModel, build_model
from acar_deploy.model.checkpoint import (
    CheckpointFormat,
    detect_checkpoint_format,
    load_model,
    save_checkpoint,
)
from acar_deploy.model.config import BackboneConfig, HeadConfig, InputConfig, ModelConfig, get_config
from acar_deploy.model.scores import action_scores

__all__ = [
    "ACARModel",
    "BackboneConfig",
    "CheckpointFormat",
    "HeadConfig",
    "InputConfig",
    "ModelConfig",
    "action_scores",
    "build_model",
    "detect_checkpoint_format",
    "get_config",
    "load_model",
    "save_checkpoint",
]
