"""Every default of an engine build in one place (the `BuildSettings` fields read them from here)."""

from __future__ import annotations

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
NUM_POSE_CLASSES = 13  # AVA: softmax over the first 13 (pose) classes, sigmoid over the rest
