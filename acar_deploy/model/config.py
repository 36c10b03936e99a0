"""Model settings as frozen dataclasses, the built-in configs, and the official YAML reader.

The built-ins mirror the official ACAR-Net configs (Siyu-C/ACAR-Net `configs/AVA/`); the `*_tiny`
configs keep every code path of `acar_r50` (lateral conv+BN, full-span slow frames, HR2O depth 2
with 3x3 output conv) at widths small enough for tests and the CPU demo. An official YAML file
(`model.backbone.arch/kwargs`, `model.head.type/kwargs`, `val.augmentation.spatial`) resolves to
the same dataclasses, with the official code's defaults for every kwarg it omits.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from acar_deploy.errors import InputError

# Official SlowFast depths (models/backbones/slowfast.py): blocks per stage res2..res5.
ARCH_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "slowfast50": (3, 4, 6, 3),
    "slowfast101": (3, 4, 23, 3),
    "slowfast152": (3, 8, 36, 3),
    "slowfast200": (3, 24, 36, 3),
}
HEAD_TYPES = ("acar", "linear", "acfb")
BANK_PRECISIONS = ("fp16", "fp32")
BANK_KEYS = ("bank_window", "bank_causal", "bank_precision")
DOWNSAMPLE_TYPES = ("max2x2", "none")


@dataclass(frozen=True)
class BackboneConfig:
    """SlowFast settings; defaults are those of the official `SlowFast.__init__` except `layers`."""

    arch: str = "slowfast50"
    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    slow_width: int = 64  # slow stem channels; stage planes are 1x, 2x, 4x, 8x this
    alpha: int = 8  # slow/fast frame-rate ratio (and lateral temporal stride)
    beta: float = 0.125  # fast/slow channel ratio
    fuse_only_conv: bool = True  # lateral: conv only (True) or conv + BN + ReLU (False)
    fuse_kernel_size: int = 5
    slow_full_span: bool = False  # slow frames: floor(linspace(0, T-1, T//alpha)) vs every alpha-th

    @property
    def slow_channels(self) -> int:
        return 8 * self.slow_width * 4

    @property
    def fast_channels(self) -> int:
        return int(8 * self.slow_width * self.beta) * 4

    @property
    def context_channels(self) -> int:
        return self.slow_channels + self.fast_channels


@dataclass(frozen=True)
class HeadConfig:
    """Head settings; defaults are those of the official `ACARHead` / `LinearHead`."""

    type: str = "acar"
    width: int = 2304
    roi_spatial: int = 7
    num_classes: int = 60
    dropout: float = 0.0
    bias: bool = False
    reduce_dim: int = 1024
    hidden_dim: int = 512
    downsample: str = "max2x2"
    depth: int = 2
    kernel_size: int = 3
    mlp_1x1: bool = False
    # acfb only (Actor-Context Feature Bank): window [t - w, t + w] seconds (2w + 1 = 21 s in the
    # paper), [t - w, t] when causal; the precision the bank stores its features in.
    bank_window: int = 10
    bank_causal: bool = False
    bank_precision: str = "fp16"


@dataclass(frozen=True)
class InputConfig:
    """How frames become the clip tensor: `(pixels / norm_value - mean) / std`, RGB."""

    norm_value: float = 255.0
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    num_frames: int = 32
    short_side: int = 256


@dataclass(frozen=True)
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    input: InputConfig = field(default_factory=InputConfig)
    # The name labels the config; two configs describing the same model compare equal.
    name: str = field(default="custom", compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-safe dict (tuples become lists) for checkpoints and manifests.

        The bank settings are written for acfb heads only, so other configs serialise as before."""
        data = _plain(asdict(self))
        if self.head.type != "acfb":
            for key in BANK_KEYS:
                del data["head"][key]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> ModelConfig:
        if not isinstance(data, dict):
            raise InputError(f"{source}: a model config must be a mapping, got {type(data).__name__}")
        return ModelConfig(
            backbone=_dataclass_from(BackboneConfig, data.get("backbone", {}), f"{source}: backbone"),
            head=_dataclass_from(HeadConfig, data.get("head", {}), f"{source}: head"),
            input=_dataclass_from(InputConfig, data.get("input", {}), f"{source}: input"),
            name=str(data.get("name", "custom")),
        ).validated(source)

    def validated(self, source: str = "config") -> ModelConfig:
        """Check the cross-field constraints the model code relies on; return self."""
        b, h = self.backbone, self.head
        if len(b.layers) != 4 or min(b.layers) < 1:
            raise InputError(f"{source}: backbone.layers must be 4 positive block counts, got {list(b.layers)}")
        if h.type not in HEAD_TYPES:
            raise InputError(f"{source}: head.type must be one of {', '.join(HEAD_TYPES)}, got {h.type!r}")
        if h.bank_window < 0:
            raise InputError(f"{source}: head.bank_window must be >= 0 seconds, got {h.bank_window}")
        if h.bank_precision not in BANK_PRECISIONS:
            raise InputError(f"{source}: head.bank_precision must be fp16 or fp32, got {h.bank_precision!r}")
        if h.downsample not in DOWNSAMPLE_TYPES:
            raise InputError(f"{source}: head.downsample must be max2x2 or none, got {h.downsample!r}")
        if h.width != b.context_channels:
            raise InputError(
                f"{source}: head.width is {h.width} but the backbone gives {b.context_channels} context "
                "channels (slow + fast); fix head width or the backbone widths"
            )
        if self.input.num_frames % b.alpha:
            raise InputError(f"{source}: input.num_frames {self.input.num_frames} is not a multiple of alpha {b.alpha}")
        return self


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _dataclass_from(cls: type, data: Any, source: str) -> Any:
    if not isinstance(data, dict):
        raise InputError(f"{source} must be a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise InputError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    values = {}
    for key, raw in data.items():
        default = getattr(cls(), key)
        values[key] = _coerce(raw, default, f"{source}.{key}")
    return cls(**values)


def _coerce(raw: Any, default: Any, source: str) -> Any:
    try:
        if isinstance(default, bool):
            if not isinstance(raw, bool):
                raise TypeError
            return raw
        if isinstance(default, tuple):
            return tuple(type(default[0])(v) for v in raw)
        return type(default)(raw)
    except (TypeError, ValueError):
        raise InputError(f"{source}: expected {type(default).__name__}, got {raw!r}") from None


R50_BACKBONE = BackboneConfig(
    arch="slowfast50", layers=(3, 4, 6, 3), alpha=4, beta=0.125,
    fuse_only_conv=False, fuse_kernel_size=7, slow_full_span=True,
)
R101_BACKBONE = BackboneConfig(arch="slowfast101", layers=(3, 4, 23, 3), alpha=4, beta=0.125)
R50_INPUT = InputConfig(norm_value=255.0, mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225))
R101_INPUT = InputConfig(
    norm_value=1.0,
    mean=(110.63666788, 103.16065604, 96.29023126),
    std=(38.7568578, 37.88248729, 40.02898126),
)
TINY_BACKBONE = replace(R50_BACKBONE, arch="slowfast_tiny", layers=(1, 1, 1, 1), slow_width=8, beta=0.25)

BUILTIN_CONFIGS: dict[str, ModelConfig] = {
    "acar_r50": ModelConfig(R50_BACKBONE, HeadConfig(type="acar", width=2304, depth=2), R50_INPUT, "acar_r50"),
    "acar_r101": ModelConfig(
        R101_BACKBONE, HeadConfig(type="acar", width=2304, depth=1, mlp_1x1=True), R101_INPUT, "acar_r101"
    ),
    "linear_r50": ModelConfig(R50_BACKBONE, HeadConfig(type="linear", width=2304), R50_INPUT, "linear_r50"),
    "acar_tiny": ModelConfig(
        TINY_BACKBONE,
        HeadConfig(type="acar", width=TINY_BACKBONE.context_channels, reduce_dim=32, hidden_dim=16, depth=2),
        R50_INPUT,
        "acar_tiny",
    ),
    "linear_tiny": ModelConfig(
        TINY_BACKBONE, HeadConfig(type="linear", width=TINY_BACKBONE.context_channels), R50_INPUT, "linear_tiny"
    ),
    "acfb_tiny": ModelConfig(
        TINY_BACKBONE,
        HeadConfig(type="acfb", width=TINY_BACKBONE.context_channels, reduce_dim=32, hidden_dim=16, depth=2),
        R50_INPUT,
        "acfb_tiny",
    ),
}


def get_config(name_or_path: str | os.PathLike | ModelConfig) -> ModelConfig:
    """A built-in name, an official ACAR-Net YAML file, or a YAML file of `ModelConfig.to_dict()`."""
    if isinstance(name_or_path, ModelConfig):
        return name_or_path.validated(name_or_path.name)
    text = str(name_or_path)
    if text in BUILTIN_CONFIGS:
        return BUILTIN_CONFIGS[text]
    path = Path(text)
    if path.suffix.lower() not in (".yaml", ".yml") and not path.exists():
        raise InputError(
            f"unknown model config {text!r}: use one of {', '.join(BUILTIN_CONFIGS)} or a YAML file path"
        )
    return load_yaml_config(path)


def load_yaml_config(path: str | os.PathLike) -> ModelConfig:
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found; give a built-in name ({', '.join(BUILTIN_CONFIGS)}) "
                         "or an existing YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read config file ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{where}: invalid YAML ({problem}); fix the file") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a YAML mapping with a 'model' section (official ACAR-Net layout)")
    if "model" in data:
        return _from_official(data, path)
    if "backbone" in data and "head" in data:
        return ModelConfig.from_dict({"name": path.stem, **data}, source=str(path))
    raise InputError(f"{path}: no 'model' section (official ACAR-Net layout) and no backbone/head keys")


def _section(data: Any, key: str, path: Path, where: str) -> dict[str, Any]:
    value = data.get(key) if isinstance(data, dict) else None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{path}: {where}{key} must be a mapping")
    return value


def _from_official(data: dict[str, Any], path: Path) -> ModelConfig:
    model = _section(data, "model", path, "")
    backbone = _section(model, "backbone", path, "model.")
    head = _section(model, "head", path, "model.")
    arch = backbone.get("arch")
    if arch not in ARCH_LAYERS:
        raise InputError(f"{path}: model.backbone.arch must be one of {', '.join(ARCH_LAYERS)}, got {arch!r}")
    bb_kwargs = dict(_section(backbone, "kwargs", path, "model.backbone."))
    bb_kwargs.update(arch=arch, layers=ARCH_LAYERS[arch])
    backbone_cfg = _dataclass_from(BackboneConfig, bb_kwargs, f"{path}: model.backbone.kwargs")
    head_kwargs = dict(_section(head, "kwargs", path, "model.head."))
    head_kwargs["type"] = head.get("type")
    head_cfg = _dataclass_from(HeadConfig, head_kwargs, f"{path}: model.head.kwargs")
    return ModelConfig(backbone_cfg, head_cfg, _official_input(data, path), path.stem).validated(str(path))


def _official_input(data: dict[str, Any], path: Path) -> InputConfig:
    """Read ToTensor/Normalize of the val (else train) spatial augmentation."""
    for split in ("val", "train"):
        spatial = _section(_section(data, split, path, ""), "augmentation", path, f"{split}.").get("spatial")
        if not spatial:
            continue
        norm_value, mean, std = 255.0, None, None  # official ToTensor default norm_value is 255
        for step in spatial:
            kwargs = (step or {}).get("kwargs") or {}
            if step.get("type") == "ToTensor":
                norm_value = float(kwargs.get("norm_value", 255.0))
            elif step.get("type") == "Normalize":
                mean, std = kwargs.get("mean"), kwargs.get("std")
        if mean is None or std is None or len(mean) != 3 or len(std) != 3:
            raise InputError(f"{path}: {split}.augmentation.spatial needs a Normalize step with 3 mean and 3 std values")
        return InputConfig(
            norm_value=norm_value,
            mean=tuple(float(v) for v in mean),
            std=tuple(float(v) for v in std),
        )
    raise InputError(f"{path}: no val.augmentation.spatial (or train.augmentation.spatial) section to read "
                     "the input normalisation from")
