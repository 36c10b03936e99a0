"""Build settings (one frozen dataclass) and what a build returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from acar_deploy.engines import defaults
from acar_deploy.errors import InputError


class Runtime(str, Enum):
    ORT = "ort"
    TRT = "trt"
    OPENVINO = "openvino"


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"  # OpenVINO only: an inference-precision hint on the fp32 graph
    INT8 = "int8"


class CalibMethod(str, Enum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


@dataclass(frozen=True)
class ShapeRange:
    """min:opt:max of one dynamic dimension in a TensorRT optimization profile."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise InputError(f"shape range {self.min}:{self.opt}:{self.max} needs 1 <= min <= opt <= max")

    @classmethod
    def parse(cls, text: str, what: str = "--rois") -> ShapeRange:
        parts = str(text).split(":")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
        if len(values) != 3:
            raise InputError(f"{what} {text!r}: expected MIN:OPT:MAX integers, e.g. 1:8:32")
        return cls(*values)

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


@dataclass(frozen=True)
class Fp16Policy:
    """Which parts of the graph stay fp32 when the rest is converted to fp16."""

    op_block_list: tuple[str, ...] = defaults.FP16_OP_BLOCK_LIST
    node_block_patterns: tuple[str, ...] = defaults.FP16_NODE_BLOCK_PATTERNS
    keep_attention_logits_fp32: bool = defaults.FP16_KEEP_ATTENTION_LOGITS_FP32
    inline_local_functions: bool = defaults.INLINE_LOCAL_FUNCTIONS


@dataclass(frozen=True)
class Int8Policy:
    """How the QDQ graph is calibrated and which nodes stay fp32."""

    calib_data: Path | None = None
    calib_clips: int = defaults.CALIB_CLIPS
    calib_method: CalibMethod = CalibMethod(defaults.CALIB_METHOD)
    calib_percentile: float = defaults.CALIB_PERCENTILE
    per_channel: bool = defaults.INT8_PER_CHANNEL
    keep_stem_fp32: bool = defaults.INT8_KEEP_STEM_FP32
    keep_fp32_islands: bool = defaults.INT8_KEEP_FP32_ISLANDS
    exclude_patterns: tuple[str, ...] = defaults.INT8_EXCLUDE_PATTERNS
    op_types: tuple[str, ...] = defaults.INT8_OP_TYPES
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "calib_method", CalibMethod(self.calib_method))
        if self.calib_data is not None:
            object.__setattr__(self, "calib_data", Path(self.calib_data))
        if self.calib_clips < 1:
            raise InputError(f"--calib-clips {self.calib_clips}: needs at least 1 clip")


@dataclass(frozen=True)
class TrtPolicy:
    rois: ShapeRange = ShapeRange(*defaults.ROI_PROFILE)
    clips: ShapeRange = ShapeRange(*defaults.CLIP_PROFILE)
    workspace_gib: float = defaults.WORKSPACE_GIB
    engine_cache_dir: Path | None = Path(defaults.ENGINE_CACHE_DIR)
    timing_cache: Path | None = Path(defaults.TIMING_CACHE_FILE)


class OpenVinoInt8Method(str, Enum):
    NNCF = "nncf"  # NNCF post-training quantization of the fp32 graph
    QDQ = "qdq"  # our calibrated ONNX Runtime QDQ graph, read by OpenVINO


@dataclass(frozen=True)
class OpenVinoPolicy:
    """How an OpenVINO engine is made and compiled (CPU, latency: one stream, one request)."""

    int8_method: OpenVinoInt8Method = OpenVinoInt8Method(defaults.OPENVINO_INT8_METHOD)
    nncf_preset: str = defaults.NNCF_PRESET  # "performance" (symmetric) or "mixed" (asymmetric activations)
    nncf_fast_bias_correction: bool = defaults.NNCF_FAST_BIAS_CORRECTION
    device: str = defaults.OPENVINO_DEVICE

    def __post_init__(self) -> None:
        object.__setattr__(self, "int8_method", OpenVinoInt8Method(self.int8_method))
        if self.nncf_preset not in ("performance", "mixed"):
            raise InputError(f"NNCF preset {self.nncf_preset!r}: use performance or mixed")


@dataclass(frozen=True)
class BuildSettings:
    """Everything `build_engine` needs; the CLI fills it from its options."""

    export_dir: Path
    runtime: Runtime = Runtime.ORT
    precision: Precision = Precision.FP32
    out_dir: Path | None = None  # default engines/<export name>-<runtime>-<precision>
    force: bool = False
    fp16: Fp16Policy = field(default_factory=Fp16Policy)
    int8: Int8Policy = field(default_factory=Int8Policy)
    trt: TrtPolicy = field(default_factory=TrtPolicy)
    openvino: OpenVinoPolicy = field(default_factory=OpenVinoPolicy)

    def __post_init__(self) -> None:
        object.__setattr__(self, "export_dir", Path(self.export_dir))
        object.__setattr__(self, "runtime", Runtime(self.runtime))
        object.__setattr__(self, "precision", Precision(self.precision))
        if self.precision == Precision.BF16 and self.runtime != Runtime.OPENVINO:
            raise InputError(f"--precision bf16 is an OpenVINO precision; for --runtime {self.runtime.value} use fp16")
        if self.precision == Precision.FP16 and self.runtime == Runtime.OPENVINO:
            raise InputError("--runtime openvino on a CPU: use --precision fp32, bf16 or int8 (fp16 is a GPU precision)")
        if self.out_dir is not None:
            object.__setattr__(self, "out_dir", Path(self.out_dir))

    @property
    def resolved_out_dir(self) -> Path:
        if self.out_dir is not None:
            return self.out_dir
        name = self.export_dir.resolve().name
        return Path("engines") / f"{name}-{self.runtime.value}-{self.precision.value}"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (enums as values, paths as strings) for engine.json and cache keys."""
        return _jsonable(asdict(self))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class EngineInfo:
    """What `build_engine` produced."""

    path: Path
    runtime: Runtime
    precision: Precision
    parts: dict[str, Path]
    engine_json: dict[str, Any]
    build_seconds: float
    cache_hits: dict[str, bool] = field(default_factory=dict)  # TensorRT plan cache, per part

    def summary(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "runtime": self.runtime.value,
            "precision": self.precision.value,
            "parts": {k: str(v) for k, v in self.parts.items()},
            "build_seconds": round(self.build_seconds, 3),
            "cache_hits": self.cache_hits,
            "fp32_nodes": {k: len(v.get("fp32_nodes") or []) for k, v in self.engine_json["parts"].items()},
            "calibration": self.engine_json.get("calibration"),
        }
