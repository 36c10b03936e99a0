"""The official learning-rate schedule: linear warm-up per iteration, then steps at epoch milestones.

Stateless: the lr is a function of the global iteration, so resuming needs only the iteration.
"""

from __future__ import annotations

from bisect import bisect_right

from acar_deploy.train.config import SchedulerConfig


def learning_rate(iteration: int, steps_per_epoch: int, config: SchedulerConfig) -> float:
    """lr for 0-based `iteration`; milestones and warm-up length are `int(epochs * steps_per_epoch)`."""
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    if warmup_steps > 0 and iteration < warmup_steps:
        return config.base_lr + iteration / warmup_steps * (config.warmup_lr - config.base_lr)
    milestones = [int(m * steps_per_epoch) for m in config.milestone_epochs]
    lr = config.warmup_lr
    for mult in config.lr_mults[: bisect_right(milestones, iteration)]:
        lr *= mult
    return lr
