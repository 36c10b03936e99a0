"""Training settings as frozen dataclasses, read from the official YAML `train:` section when present.

Defaults are the official R50 recipe (configs/AVA/SLOWFAST_R50_ACAR_HR2O.yaml): SGD with Nesterov
momentum 0.9 and weight decay 1e-7, lr warmed up linearly per iteration from 0.008 to 0.064 over the
first epoch, then x0.1 at epochs 5.6 and 5.8 of 6; one clip per process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from acar_deploy.errors import InputError


@dataclass(frozen=True)
class OptimizerConfig:
    type: str = "SGD"
    momentum: float = 0.9
    weight_decay: float = 1e-7
    nesterov: bool = True


@dataclass(frozen=True)
class SchedulerConfig:
    """Official `step` schedule: warm-up per iteration, then multiply by `lr_mults` at the milestones."""

    type: str = "step"
    base_lr: float = 0.008
    warmup_lr: float = 0.064
    warmup_epochs: float = 1.0
    milestone_epochs: tuple[float, ...] = (5.6, 5.8)
    lr_mults: tuple[float, ...] = (0.1, 0.1)


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 1  # clips per process
    n_epochs: int = 6
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    freeze_bn: bool = True  # backbone BatchNorm in eval mode (statistics frozen, affine params train)
    flip: bool = True
    jitter_scale: float = 0.075
    # head-only fine-tuning: backbone weights fixed (eval mode, no gradient); see train/context_cache.py
    freeze_backbone: bool = False
    context_cache_mib: int = 4096  # frozen backbone: keep every clip's context map in memory if all fit


def train_config_from_dict(data: dict[str, Any] | None, source: str = "config") -> TrainConfig:
    """The official `train:` section (batch_size, n_epochs, optimizer.kwargs, scheduler) -> TrainConfig."""
    if not data:
        return TrainConfig()
    if not isinstance(data, dict):
        raise InputError(f"{source}: 'train' must be a mapping")
    base = TrainConfig()
    try:
        opt = data.get("optimizer") or {}
        kwargs = opt.get("kwargs") or {}
        optimizer = OptimizerConfig(
            type=str(opt.get("type", "SGD")),
            momentum=float(kwargs.get("momentum", base.optimizer.momentum)),
            weight_decay=float(kwargs.get("weight_decay", base.optimizer.weight_decay)),
            nesterov=bool(kwargs.get("nesterov", base.optimizer.nesterov)),
        )
        sch = data.get("scheduler") or {}
        d = base.scheduler
        scheduler = SchedulerConfig(
            type=str(sch.get("type", d.type)),
            base_lr=float(sch.get("base_lr", d.base_lr)),
            warmup_lr=float(sch.get("warmup_lr", d.warmup_lr)),
            warmup_epochs=float(sch.get("warmup_epochs", d.warmup_epochs)),
            milestone_epochs=tuple(float(v) for v in sch.get("milestone_epochs", d.milestone_epochs)),
            lr_mults=tuple(float(v) for v in sch.get("lr_mults", d.lr_mults)),
        )
        jitter = (data.get("bbox_jitter") or {}).get("scale", base.jitter_scale)
        config = TrainConfig(
            batch_size=int(data.get("batch_size", base.batch_size)),
            n_epochs=int(data.get("n_epochs", base.n_epochs)),
            optimizer=optimizer,
            scheduler=scheduler,
            freeze_bn=bool(data.get("freeze_bn", base.freeze_bn)),
            flip=bool(data.get("flip", base.flip)),
            jitter_scale=float(jitter),
            freeze_backbone=bool(data.get("freeze_backbone", base.freeze_backbone)),
            context_cache_mib=int(data.get("context_cache_mib", base.context_cache_mib)),
        )
    except (TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{source}: malformed 'train' section ({exc}); see the official ACAR-Net YAML layout") from None
    return validate_train_config(config, source)


def validate_train_config(config: TrainConfig, source: str = "config") -> TrainConfig:
    if config.optimizer.type != "SGD":
        raise InputError(f"{source}: train.optimizer.type {config.optimizer.type!r} is not supported; use SGD")
    if config.scheduler.type != "step":
        raise InputError(f"{source}: train.scheduler.type {config.scheduler.type!r} is not supported; use step")
    s = config.scheduler
    if len(s.milestone_epochs) != len(s.lr_mults):
        raise InputError(f"{source}: train.scheduler needs as many lr_mults as milestone_epochs")
    if list(s.milestone_epochs) != sorted(s.milestone_epochs):
        raise InputError(f"{source}: train.scheduler.milestone_epochs must increase")
    if config.context_cache_mib < 0:
        raise InputError(f"{source}: train.context_cache_mib must be >= 0 (0: never keep context maps)")
    if config.batch_size < 1 or config.n_epochs < 1:
        raise InputError(f"{source}: train.batch_size and train.n_epochs must be >= 1")
    return config


def load_train_config(path: str | os.PathLike | None) -> TrainConfig:
    """The `train:` section of a YAML config file (official layout or ours); defaults when absent."""
    if path is None:
        return TrainConfig()
    import yaml

    path = Path(path)
    if not path.is_file():  # a built-in model config name: official defaults
        return TrainConfig()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read the config ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        return TrainConfig()
    section = dict(data.get("train") or {})
    # official places: model.freeze_bn, model.neck.kwargs.bbox_jitter, train.augmentation.spatial
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    if "freeze_bn" in model and "freeze_bn" not in section:
        section["freeze_bn"] = model["freeze_bn"]
    neck_kwargs = ((model.get("neck") or {}).get("kwargs") or {}) if isinstance(model.get("neck"), dict) else {}
    if "bbox_jitter" in neck_kwargs and "bbox_jitter" not in section:
        section["bbox_jitter"] = neck_kwargs["bbox_jitter"] or {"scale": 0.0}
    spatial = (section.get("augmentation") or {}).get("spatial") if isinstance(section.get("augmentation"), dict) else None
    if spatial and "flip" not in section:
        section["flip"] = any(isinstance(t, dict) and t.get("type") == "RandomHorizontalFlip" for t in spatial)
    return train_config_from_dict(section, str(path))


def with_overrides(config: TrainConfig, **values: Any) -> TrainConfig:
    """Replace the given fields, ignoring None values (CLI options not given)."""
    return replace(config, **{k: v for k, v in values.items() if v is not None})
