"""The runtime and precision names shared by engine.json, runners, benchmarks and the CLI."""

from __future__ import annotations

from enum import Enum


class Runtime(str, Enum):
    """What executes the graphs; the values are what engine.json and runner metadata record."""

    EAGER = "eager"
    ORT = "ort"
    TRT = "trt"
    OPENVINO = "openvino"


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"
