"""Checkpoint reading (every ACAR-Net layout), strict loading with a key report, and our own format.

Layouts (`detect_checkpoint_format`):
- `official-zoo`: the model-zoo `.pth.tar`, a flat state_dict of the DDP-wrapped official model
  (`module.backbone.module.<SlowFast key>`, `module.head.module.<head key>`).
- `official-training`: `main.py`'s `ckpt_<epoch>.pth.tar`, `{'epoch', 'state_dict', 'optimizer', ...}`
  with the same keys inside `state_dict`.
- `acar-deploy`: this project's file (`save_checkpoint`), `{'format': 'acar-deploy-checkpoint',
  'config': ModelConfig.to_dict(), 'state_dict': ACARModel.state_dict(), ...}`.
- `state-dict`: a bare `ACARModel.state_dict()` (`backbone.*`, `head.*`), optionally inside `state_dict`.
- `kinetics-backbone`: a Kinetics-pretrained SlowFast file (raw SlowFast keys, optionally inside
  `state_dict`); only the backbone is loaded, the head keeps its seeded random init.
Loading is strict (the official loader is not, and silently loads nothing from a wrong layout);
only missing BatchNorm `num_batches_tracked` counters are tolerated, they do not affect outputs.
"""

from __future__ import annotations

import enum
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from acar_deploy.artifacts import atomic_file
from acar_deploy.errors import InputError
from acar_deploy.model.config import BUILTIN_CONFIGS, ModelConfig, get_config

OUR_FORMAT = "acar-deploy-checkpoint"
OUR_FORMAT_VERSION = 1
ZOO_BACKBONE_PREFIX = "module.backbone.module."
ZOO_HEAD_PREFIX = "module.head.module."
_SLOWFAST_MARKERS = ("slow_conv1.weight", "fast_conv1.weight")


class CheckpointFormat(str, enum.Enum):
    ACAR_DEPLOY = "acar-deploy"
    STATE_DICT = "state-dict"
    OFFICIAL_ZOO = "official-zoo"
    OFFICIAL_TRAINING = "official-training"
    KINETICS_BACKBONE = "kinetics-backbone"
    RANDOM_INIT = "random-init"


def read_checkpoint(path: str | os.PathLike) -> Any:
    """torch.load(weights_only=True) on CPU; any failure is a one-line InputError naming the file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = [line.strip() for line in str(exc).splitlines() if "Unsupported global" in line]
        if refused:
            raise InputError(
                f"{path}: checkpoint holds Python objects that safe loading (weights_only) refuses "
                f"({refused[0][:200]}); re-save only its tensors and plain data"
            ) from None
        raise InputError(
            f"{path}: not a readable PyTorch checkpoint, corrupt ({_first_line(exc)}); re-download or re-save it"
        ) from None
    except Exception as exc:  # noqa: BLE001 - torch's unpickler raises anything (IndexError on 1-byte files)
        raise InputError(
            f"{path}: not a readable PyTorch checkpoint, truncated or corrupt ({_first_line(exc)[:200]}); "
            "re-download or re-save it"
        ) from None


def check_finite_weights(state: Mapping[str, Any], source: str) -> None:
    """InputError naming the first floating tensor holding NaN/Inf (e.g. a diverged training run).

    Fails rather than warns: such weights make every score NaN, which the CSV writer would print
    as 0.000, so the run would look successful while every prediction is wrong.
    """
    import torch

    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise InputError(
                f"{source}: weight {key!r} holds {bad} NaN/Inf values of {value.numel()} (a diverged or corrupt "
                "checkpoint); use an earlier checkpoint or retrain with a lower learning rate"
            )


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception message (torch's zip errors run on for several lines)."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    return text.splitlines()[0].split(". ")[0].rstrip(".")


def _is_tensor_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def detect_checkpoint_format(obj: Any) -> CheckpointFormat:
    """Which layout a loaded checkpoint object has; InputError when it is none of them."""
    if isinstance(obj, Mapping) and obj.get("format") == OUR_FORMAT:
        return CheckpointFormat.ACAR_DEPLOY
    if isinstance(obj, Mapping) and _is_tensor_dict(obj.get("state_dict")):
        inner = detect_checkpoint_format(obj["state_dict"])
        if inner == CheckpointFormat.OFFICIAL_ZOO:
            return CheckpointFormat.OFFICIAL_TRAINING
        if inner in (CheckpointFormat.KINETICS_BACKBONE, CheckpointFormat.STATE_DICT):
            return inner
        raise InputError(f"a 'state_dict' checkpoint whose keys are neither official ACAR-Net nor SlowFast "
                         f"keys (first: {next(iter(obj['state_dict']))})")
    if _is_tensor_dict(obj):
        keys = list(obj)
        if any(k.startswith((ZOO_BACKBONE_PREFIX, ZOO_HEAD_PREFIX)) for k in keys):
            return CheckpointFormat.OFFICIAL_ZOO
        if any(k.startswith(("backbone.", "head.")) for k in keys):
            return CheckpointFormat.STATE_DICT
        if any(k in obj for k in _SLOWFAST_MARKERS):
            return CheckpointFormat.KINETICS_BACKBONE
        raise InputError(f"a flat state_dict with unknown key layout (first keys: {', '.join(keys[:3])})")
    kind = type(obj).__name__
    listed = ", ".join(map(str, list(obj)[:5])) if isinstance(obj, Mapping) else ""
    raise InputError(f"not an ACAR-Net checkpoint: a {kind}{' with keys ' + listed if listed else ''}")


def _state_dict_for_model(obj: Any, fmt: CheckpointFormat) -> dict[str, Any]:
    """Rename the checkpoint's keys to ACARModel keys (`backbone.*`, `head.*`)."""
    if fmt == CheckpointFormat.ACAR_DEPLOY:
        return dict(obj["state_dict"])
    flat = obj["state_dict"] if isinstance(obj.get("state_dict"), Mapping) else obj
    if fmt == CheckpointFormat.STATE_DICT:
        return dict(flat)
    if fmt == CheckpointFormat.KINETICS_BACKBONE:
        return {f"backbone.{k}": v for k, v in flat.items()}
    renamed = {}
    for key, value in flat.items():
        if key.startswith(ZOO_BACKBONE_PREFIX):
            key = "backbone." + key[len(ZOO_BACKBONE_PREFIX):]
        elif key.startswith(ZOO_HEAD_PREFIX):
            key = "head." + key[len(ZOO_HEAD_PREFIX):]
        renamed[key] = value
    return renamed


def _check_keys(state: dict[str, Any], expected: dict[str, Any], source: str, fmt: CheckpointFormat,
                config: ModelConfig) -> None:
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {list(state[k].shape)} vs {list(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return

    def few(items: list[str]) -> str:
        return f" ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})" if items else ""

    raise InputError(
        f"{source}: {fmt.value} checkpoint does not fit config {config.name!r}: "
        f"{len(missing)} missing{few(missing)}, {len(unexpected)} unexpected{few(unexpected)}, "
        f"{len(mismatched)} shape-mismatched{few(mismatched)} keys; pick the config that matches the file "
        f"(built-ins: {', '.join(BUILTIN_CONFIGS)})"
    )


def _build_seeded(config: ModelConfig, seed: int):
    import torch

    from acar_deploy.model.acar import ACARModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ACARModel(config)


def resolve_checkpoint(
    checkpoint: str | os.PathLike | Mapping | None,
    config: str | os.PathLike | ModelConfig | None = None,
) -> tuple[Any, CheckpointFormat, ModelConfig, str]:
    """Read and classify a checkpoint and pick its config: (object, format, config, source label)."""
    if checkpoint is None:
        if config is None:
            raise InputError("a random-init model needs a config (a built-in name or a YAML file)")
        return None, CheckpointFormat.RANDOM_INIT, get_config(config), "random init"
    if isinstance(checkpoint, Mapping):
        obj, source = checkpoint, "checkpoint"
    else:
        obj, source = read_checkpoint(checkpoint), str(checkpoint)
    try:
        fmt = detect_checkpoint_format(obj)
    except InputError as exc:
        raise InputError(f"{source}: {exc}") from None
    if config is not None:
        resolved = get_config(config)
    elif fmt == CheckpointFormat.ACAR_DEPLOY:
        resolved = ModelConfig.from_dict(obj["config"], source=f"{source}: embedded config")
    else:
        raise InputError(f"{source}: {fmt.value} checkpoints carry no model config; pass one "
                         f"(--config {' | '.join(BUILTIN_CONFIGS)} | official YAML)")
    return obj, fmt, resolved, source


def load_model(
    checkpoint: str | os.PathLike | Mapping | None,
    config: str | os.PathLike | ModelConfig | None = None,
    *,
    seed: int = 0,
):
    """An `ACARModel` in eval mode from any supported checkpoint layout (or seeded random init).

    `config` is a built-in name, a YAML path or a ModelConfig; it may be None for this project's
    checkpoints, which carry their config.
    """
    return _load_resolved(*resolve_checkpoint(checkpoint, config), seed=seed)


def _load_resolved(obj: Any, fmt: CheckpointFormat, resolved: ModelConfig, source: str, *, seed: int = 0):
    model = _build_seeded(resolved, seed)
    if fmt == CheckpointFormat.RANDOM_INIT:
        return model.eval()
    state = _state_dict_for_model(obj, fmt)
    own = model.state_dict()
    if fmt == CheckpointFormat.KINETICS_BACKBONE:
        expected = {k: v for k, v in own.items() if k.startswith("backbone.")}
    else:
        expected = own
    _check_keys(state, expected, source, fmt, resolved)
    check_finite_weights(state, source)
    state = {**{k: v for k, v in own.items() if k not in state}, **state}
    model.load_state_dict(state, strict=True)
    return model.eval()


def save_checkpoint(model, path: str | os.PathLike, *, force: bool = False, **extra: Any) -> Path:
    """Write `model` in this project's format, atomically; `extra` must be plain data (weights_only)."""
    import torch

    reserved = {"format", "format_version", "config", "state_dict"} & set(extra)
    if reserved:
        raise ValueError(f"save_checkpoint: extra keys {sorted(reserved)} are reserved")
    payload = {
        "format": OUR_FORMAT,
        "format_version": OUR_FORMAT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    path = Path(path)
    with atomic_file(path, force=force) as fh:
        torch.save(payload, fh)
    return path


def summarize_checkpoint(
    checkpoint: str | os.PathLike | None, config: str | os.PathLike | ModelConfig | None = None
) -> dict[str, Any]:
    """What `acar-deploy info` prints: format, architecture, parameter counts, classes, input."""
    obj, fmt, resolved, source = resolve_checkpoint(checkpoint, config)
    model = _load_resolved(obj, fmt, resolved, source)
    backbone = sum(p.numel() for p in model.backbone.parameters())
    head = sum(p.numel() for p in model.head.parameters())
    cfg = resolved
    return {
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "format": fmt.value,
        "config": cfg.name,
        "architecture": {
            "backbone": cfg.backbone.arch,
            "layers": list(cfg.backbone.layers),
            "alpha": cfg.backbone.alpha,
            "beta": cfg.backbone.beta,
            "lateral": f"k{cfg.backbone.fuse_kernel_size} conv" + ("" if cfg.backbone.fuse_only_conv else "+BN+ReLU"),
            "slow_frames": "full span (linspace)" if cfg.backbone.slow_full_span else f"stride {cfg.backbone.alpha}",
            "head": cfg.head.type,
            "hr2o_depth": cfg.head.depth if cfg.head.type == "acar" else None,
            "context_channels": cfg.backbone.context_channels,
        },
        "parameters": {"backbone": backbone, "head": head, "total": backbone + head},
        "num_classes": cfg.head.num_classes,
        "input": {
            "clips": ["B", 3, cfg.input.num_frames, "H", "W"],
            "rois": ["R", 5],
            "short_side": cfg.input.short_side,
            "normalization": {
                "norm_value": cfg.input.norm_value,
                "mean": list(cfg.input.mean),
                "std": list(cfg.input.std),
            },
        },
    }
