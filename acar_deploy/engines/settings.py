"""Build settings (one frozen dataclass), every default of a build and of the runners, and what a build returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from acar_deploy.errors import InputError
from acar_deploy.formats.enums import Precision, Runtime
from acar_deploy.jsonout import to_jsonable

# --- ONNX Runtime FP16 -------------------------------------------------------------------------
# Op types kept in fp32 in the fp16 graph. Softmax and the normalisations overflow or lose the
# mean/variance in fp16 (TensorRT#2564, #3101; onnxruntime#10079); a decomposed GroupNorm is a
# ReduceMean/Pow/Sqrt chain, so those stay fp32 too (they are cheap). The attention logits (the
# MatMul/Einsum that feeds each Softmax, through Div/Mul/Where/...) are found structurally, see
# `fp32_islands.attention_logit_nodes`.
FP16_OP_BLOCK_LIST: tuple[str, ...] = (
    "Softmax",
    "GroupNormalization",
    "InstanceNormalization",
    "LayerNormalization",
    "ReduceMean",
    "Pow",
    "Sqrt",
)
FP16_NODE_BLOCK_PATTERNS: tuple[str, ...] = ()  # fnmatch patterns on node name or torch namespace
FP16_KEEP_ATTENTION_LOGITS_FP32 = True
# ORT executes model-local functions by inlining them anyway; inlining first lets the fp32 islands
# land on the Softmax/MatMul/normalisation nodes inside custom ACAR_* nodes. With inlining off, a
# custom-domain node is kept fp32 as a whole.
INLINE_LOCAL_FUNCTIONS = True

# --- INT8 (QDQ) --------------------------------------------------------------------------------
CALIB_CLIPS = 32
CALIB_METHOD = "minmax"  # minmax sometimes wins by a lot over entropy (TensorRT#1411, #3922)
CALIB_PERCENTILE = 99.999
INT8_PER_CHANNEL = True
# The fast 5x7x7 3->8 stem conv took 1.7 s in int8 against ~0.1 s in fp32 on this CPU class
# (deployment-notes.md): keep both stem convs fp32.
INT8_KEEP_STEM_FP32 = True
INT8_KEEP_FP32_ISLANDS = True  # no Q/DQ around softmax, attention logits, normalisation
INT8_EXCLUDE_PATTERNS: tuple[str, ...] = ()
INT8_OP_TYPES: tuple[str, ...] = ("Conv", "MatMul", "Gemm", "Einsum")

# --- TensorRT ----------------------------------------------------------------------------------
ROI_PROFILE = (1, 8, 32)  # min:opt:max boxes per head call; min >= 1 (TensorRT#337), opt = typical
CLIP_PROFILE = (1, 1, 4)  # min:opt:max clips per call
# min:opt:max bank entries M per call (acfb exports: bank_kv and bank_head), summed over the clips of a
# call; opt = a 21 s window of 3 actors. M = 0 runs as one all-masked entry (profiles start at 1).
BANK_PROFILE = (1, 64, 256)
WORKSPACE_GIB = 4.0
ENGINE_CACHE_DIR = "engines/.cache"
TIMING_CACHE_FILE = "engines/.cache/timing.cache"

# --- OpenVINO ----------------------------------------------------------------------------------
OPENVINO_DEVICE = "CPU"
# int8 from our calibrated QDQ graph. NNCF ("nncf") quantizes R50 in 12 s against 357 s for the QDQ
# build, but its int8 head of acar_tiny is far off eager (rel L2 ~1.3; the QDQ head ~0.13): opt-in.
OPENVINO_INT8_METHOD = "qdq"
NNCF_PRESET = "performance"  # symmetric int8 activations and weights: the fastest CPU kernels
NNCF_FAST_BIAS_CORRECTION = True
OPENVINO_PERFORMANCE_HINT = "LATENCY"  # one clip at a time: one stream, all threads on one request
OPENVINO_CACHE_DIR = "cache"  # compiled-model cache, inside the engine folder

# --- Runners -----------------------------------------------------------------------------------
ORT_PROVIDER_PREFERENCE: tuple[str, ...] = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
)
ORT_GRAPH_OPTIMIZATION = "all"


BUILDABLE_RUNTIMES = (Runtime.ORT, Runtime.TRT, Runtime.OPENVINO)
BUILDABLE_PRECISIONS = (Precision.FP32, Precision.FP16, Precision.BF16, Precision.INT8)


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
    def parse(cls, text: str, what: str = "--roi-profile") -> ShapeRange:
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

    op_block_list: tuple[str, ...] = FP16_OP_BLOCK_LIST
    node_block_patterns: tuple[str, ...] = FP16_NODE_BLOCK_PATTERNS
    keep_attention_logits_fp32: bool = FP16_KEEP_ATTENTION_LOGITS_FP32
    inline_local_functions: bool = INLINE_LOCAL_FUNCTIONS


@dataclass(frozen=True)
class Int8Policy:
    """How the QDQ graph is calibrated and which nodes stay fp32."""

    calib_data: Path | None = None
    calib_clips: int = CALIB_CLIPS
    calib_method: CalibMethod = CalibMethod(CALIB_METHOD)
    calib_percentile: float = CALIB_PERCENTILE
    per_channel: bool = INT8_PER_CHANNEL
    keep_stem_fp32: bool = INT8_KEEP_STEM_FP32
    keep_fp32_islands: bool = INT8_KEEP_FP32_ISLANDS
    exclude_patterns: tuple[str, ...] = INT8_EXCLUDE_PATTERNS
    op_types: tuple[str, ...] = INT8_OP_TYPES
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "calib_method", CalibMethod(self.calib_method))
        if self.calib_data is not None:
            object.__setattr__(self, "calib_data", Path(self.calib_data))
        if self.calib_clips < 1:
            raise InputError(f"--calib-clips {self.calib_clips}: needs at least 1 clip")


@dataclass(frozen=True)
class TrtPolicy:
    rois: ShapeRange = ShapeRange(*ROI_PROFILE)
    clips: ShapeRange = ShapeRange(*CLIP_PROFILE)
    bank_entries: ShapeRange = ShapeRange(*BANK_PROFILE)  # M of the bank parts (acfb exports)
    workspace_gib: float = WORKSPACE_GIB
    engine_cache_dir: Path | None = Path(ENGINE_CACHE_DIR)
    timing_cache: Path | None = Path(TIMING_CACHE_FILE)


class OpenVinoInt8Method(str, Enum):
    NNCF = "nncf"  # NNCF post-training quantization of the fp32 graph
    QDQ = "qdq"  # our calibrated ONNX Runtime QDQ graph, read by OpenVINO


@dataclass(frozen=True)
class OpenVinoPolicy:
    """How an OpenVINO engine is made and compiled (CPU, latency: one stream, one request)."""

    int8_method: OpenVinoInt8Method = OpenVinoInt8Method(OPENVINO_INT8_METHOD)
    nncf_preset: str = NNCF_PRESET  # "performance" (symmetric) or "mixed" (asymmetric activations)
    nncf_fast_bias_correction: bool = NNCF_FAST_BIAS_CORRECTION
    device: str = OPENVINO_DEVICE

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
        if self.runtime not in BUILDABLE_RUNTIMES:
            raise InputError(f"runtime {self.runtime.value!r}: builds target {[r.value for r in BUILDABLE_RUNTIMES]}")
        if self.precision not in BUILDABLE_PRECISIONS:
            raise InputError(f"precision {self.precision.value!r}: builds support {[p.value for p in BUILDABLE_PRECISIONS]}")
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
        return to_jsonable(asdict(self))


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
