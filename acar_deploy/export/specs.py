"""One spec per exported part (backbone, head, fused; bank_kv and bank_head for acfb heads), read by
both the exporter and the validator.

A spec says what the graph's inputs and outputs are (names, dtypes, static and dynamic dims), which
torch callable it is exported from, how to make realistic inputs for it (a random normalised clip;
person-sized boxes spread over the clips of the batch), and how closely ONNX Runtime must match eager
for each output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from acar_deploy.errors import InputError
from acar_deploy.formats.manifest import NUM_FRAMES, PART_NAMES, ExportGeometry, Normalization

if TYPE_CHECKING:  # pragma: no cover
    import torch

PART_FILES = {"backbone": "backbone.onnx", "head": "head.onnx", "fused": "acar.onnx",
              "bank_kv": "bank_kv.onnx", "bank_head": "bank.onnx"}
EXAMPLE_ENTRIES = 5  # bank entries M of the export-time example (never 0 or 1: torch.export specialises those)


@dataclass(frozen=True)
class Tolerance:
    """ORT output `a` matches eager `b` when |a - b| <= atol + rtol * |b| everywhere."""

    atol: float
    rtol: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {"atol": self.atol, "rtol": self.rtol}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


# ---- realistic inputs --------------------------------------------------------------------------


def random_clips(
    rng: np.random.Generator, batch: int, frame_size: tuple[int, int], norm: Normalization,
    num_frames: int = NUM_FRAMES,
) -> np.ndarray:
    """[B, 3, T, H, W] float32 (T = 32 by default): random 8-bit pixels, normalised like real clips."""
    height, width = frame_size
    pixels = rng.integers(0, 256, size=(batch, 3, num_frames, height, width)).astype(np.float32)
    mean = np.asarray(norm.mean, np.float32).reshape(1, 3, 1, 1, 1)
    std = np.asarray(norm.std, np.float32).reshape(1, 3, 1, 1, 1)
    return ((pixels / np.float32(norm.norm_value) - mean) / std).astype(np.float32)


def random_rois(rng: np.random.Generator, count: int, batch: int) -> np.ndarray:
    """[R, 5] float32 (batch_index, x1, y1, x2, y2) normalised: person-shaped boxes, every clip used.

    Boxes are 8-50% of the frame wide and 20-90% high (AVA person boxes), sorted by clip as the
    model emits them; R >= B gives every clip at least one box, so relations run within clips.
    """
    clip = np.sort(np.arange(count) % batch)
    width = rng.uniform(0.08, 0.5, count)
    height = rng.uniform(0.2, 0.9, count)
    x1 = rng.uniform(0.0, 1.0 - width)
    y1 = rng.uniform(0.0, 1.0 - height)
    return np.stack([clip, x1, y1, x1 + width, y1 + height], axis=1).astype(np.float32)


def random_context(rng: np.random.Generator, batch: int, channels: int, size: tuple[int, int]) -> np.ndarray:
    """[B, C, h, w] float32, non-negative and skewed like temporally pooled post-ReLU features."""
    return rng.exponential(0.5, size=(batch, channels, *size)).astype(np.float32)


def random_bank_entries(rng: np.random.Generator, count: int, shape: tuple[int, int, int]) -> np.ndarray:
    """[M, C, h', w'] float32: non-negative like the post-ReLU, max-pooled maps a bank stores, fp16-rounded."""
    return rng.exponential(0.5, size=(count, *shape)).astype(np.float16).astype(np.float32)


def random_bank_window(rng: np.random.Generator, rois: np.ndarray, count: int, batch: int) -> np.ndarray:
    """[R, M] bool: entry j belongs to one clip's window, box i attends the entries of its own clip.

    With B >= 2 the last clip has no entry (a keyframe whose window is empty), so its boxes see none.
    """
    entry_clip = np.sort(np.arange(count) % max(batch - 1, 1))
    return rois[:, :1].astype(np.int64) == entry_clip[None, :]


# ---- part specs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartSpec:
    """Base: what a part's graph looks like, how to feed it, and how exact it must be."""

    part: ClassVar[str] = ""
    geometry: ExportGeometry
    tolerances: Mapping[str, Tolerance] = field(default_factory=dict)

    @property
    def file(self) -> str:
        return PART_FILES[self.part]

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _frame_dims(self) -> tuple[int | str, int | str]:
        if self.geometry.dynamic_size:
            return ("H", "W")
        return self.geometry.input_size

    def _context_dims(self) -> tuple[int | str, int | str]:
        if self.geometry.dynamic_size:
            return ("h", "w")
        return self.geometry.context_size

    def clips_spec(self) -> TensorSpec:
        return TensorSpec("clips", ("B", 3, self.geometry.num_frames, *self._frame_dims()))

    def context_spec(self) -> TensorSpec:
        return TensorSpec("context", ("B", self.geometry.context_channels, *self._context_dims()))

    def rois_spec(self) -> TensorSpec:
        return TensorSpec("rois", ("R", 5))

    def logits_spec(self, name: str = "logits") -> TensorSpec:
        return TensorSpec(name, ("R", self.geometry.num_classes))

    def tolerance(self, output: str) -> Tolerance:
        return self.tolerances.get(output, DEFAULT_TOLERANCE)

    def dynamic_shapes(self) -> dict[str, dict[int, Any]]:
        """torch.export dynamic-shape spec keyed by input name (the part module's argument names).

        `Dim.DYNAMIC` lets torch.export derive each dim's valid range from the model's guards; the
        exporter then checks that every dynamic axis is still symbolic in the written graph.
        """
        import torch

        return {s.name: {axis: torch.export.Dim.DYNAMIC for axis in s.dynamic_axes} for s in self.inputs}

    def example_inputs(
        self, rng: np.random.Generator, batch: int, rois: int, frame_size: tuple[int, int] | None = None
    ) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def module(self, model: torch.nn.Module) -> torch.nn.Module:  # pragma: no cover - abstract
        """The torch module whose forward(*inputs in spec order) this part's graph computes."""
        raise NotImplementedError

    def to_manifest(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "tolerances": {s.name: self.tolerance(s.name).to_dict() for s in self.outputs},
        }


DEFAULT_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-4)


@dataclass(frozen=True)
class BackboneSpec(PartSpec):
    """clips [B,3,32,H,W] -> context [B,C,h,w] (temporal mean of each pathway, slow then fast)."""

    part: ClassVar[str] = "backbone"

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (self.clips_spec(),)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return (self.context_spec(),)

    def example_inputs(self, rng, batch, rois, frame_size=None):
        size = frame_size or self.geometry.input_size
        return {"clips": random_clips(rng, batch, size, self.geometry.normalization, self.geometry.num_frames)}

    def module(self, model):
        from acar_deploy.export.part_modules import BackbonePart

        return BackbonePart(model)


@dataclass(frozen=True)
class HeadSpec(PartSpec):
    """context [B,C,h,w] + rois [R,5] -> logits [R,num_classes]."""

    part: ClassVar[str] = "head"

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (self.context_spec(), self.rois_spec())

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return (self.logits_spec(),)

    def example_inputs(self, rng, batch, rois, frame_size=None):
        size = self.geometry.context_size_for(frame_size) if frame_size else self.geometry.context_size
        return {
            "context": random_context(rng, batch, self.geometry.context_channels, size),
            "rois": random_rois(rng, rois, batch),
        }

    def module(self, model):
        from acar_deploy.export.part_modules import HeadPart

        return HeadPart(model)


@dataclass(frozen=True)
class FusedSpec(PartSpec):
    """clips [B,3,32,H,W] + rois [R,5] -> logits [R,num_classes] and scores (= action_scores(logits))."""

    part: ClassVar[str] = "fused"

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (self.clips_spec(), self.rois_spec())

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return (self.logits_spec(), self.logits_spec("scores"))

    def example_inputs(self, rng, batch, rois, frame_size=None):
        size = frame_size or self.geometry.input_size
        return {
            "clips": random_clips(rng, batch, size, self.geometry.normalization, self.geometry.num_frames),
            "rois": random_rois(rng, rois, batch),
        }

    def module(self, model):
        from acar_deploy.export.part_modules import FusedPart

        return FusedPart(model)


@dataclass(frozen=True)
class BankSpec(PartSpec):
    """Base of the acfb parts: the bank's tensors (entries, and K/V per HR2O layer), dynamic in M."""

    @property
    def bank(self):
        if self.geometry.bank is None:
            raise InputError(f"the {self.part} part exists for acfb heads only (config head.type: acfb)")
        return self.geometry.bank

    def entries_spec(self) -> TensorSpec:
        return TensorSpec("bank_entries", ("M", self.bank.channels, *self.bank.size))

    def kv_specs(self) -> tuple[TensorSpec, TensorSpec]:
        shape = (self.bank.depth, "M", self.bank.channels, *self.bank.size)
        return TensorSpec("bank_keys", shape), TensorSpec("bank_values", shape)


@dataclass(frozen=True)
class BankKVSpec(BankSpec):
    """bank_entries [M,C,h',w'] -> bank_keys, bank_values [depth,M,C,h',w'] (once per entry, not per keyframe)."""

    part: ClassVar[str] = "bank_kv"

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (self.entries_spec(),)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.kv_specs()

    def example_inputs(self, rng, batch, rois, frame_size=None, entries=EXAMPLE_ENTRIES):
        return {"bank_entries": random_bank_entries(rng, entries, (self.bank.channels, *self.bank.size))}

    def module(self, model):
        from acar_deploy.export.part_modules import BankKVPart

        return BankKVPart(model)


@dataclass(frozen=True)
class BankHeadSpec(BankSpec):
    """context [B,C,h,w] + rois [R,5] + bank_keys/values [depth,M,...] + bank_window [R,M] -> logits."""

    part: ClassVar[str] = "bank_head"

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (self.context_spec(), self.rois_spec(), *self.kv_specs(), TensorSpec("bank_window", ("R", "M"), "bool"))

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return (self.logits_spec(),)

    def example_inputs(self, rng, batch, rois, frame_size=None, entries=EXAMPLE_ENTRIES):
        size = self.geometry.context_size_for(frame_size) if frame_size else self.geometry.context_size
        boxes = random_rois(rng, rois, batch)
        kv_shape = (self.bank.depth, entries, self.bank.channels, *self.bank.size)
        return {
            "context": random_context(rng, batch, self.geometry.context_channels, size),
            "rois": boxes,
            "bank_keys": rng.normal(0.0, 0.5, kv_shape).astype(np.float32),
            "bank_values": rng.normal(0.0, 0.5, kv_shape).astype(np.float32),
            "bank_window": random_bank_window(rng, boxes, entries, batch),
        }

    def module(self, model):
        from acar_deploy.export.part_modules import BankHeadPart

        return BankHeadPart(model)


SPEC_CLASSES: dict[str, type[PartSpec]] = {"backbone": BackboneSpec, "head": HeadSpec, "fused": FusedSpec,
                                           "bank_kv": BankKVSpec, "bank_head": BankHeadSpec}

# Declared per part and output: ORT vs eager in fp32 on CPU. Scores are squashed logits, so tighter.
PART_TOLERANCES: dict[str, dict[str, Tolerance]] = {
    "backbone": {"context": Tolerance(atol=1e-4, rtol=1e-4)},
    "head": {"logits": Tolerance(atol=1e-4, rtol=1e-4)},
    "fused": {"logits": Tolerance(atol=1e-4, rtol=1e-4), "scores": Tolerance(atol=2e-5, rtol=1e-4)},
    "bank_kv": {"bank_keys": Tolerance(atol=1e-4, rtol=1e-4), "bank_values": Tolerance(atol=1e-4, rtol=1e-4)},
    "bank_head": {"logits": Tolerance(atol=1e-4, rtol=1e-4)},
}


def make_spec(part: str, geometry: ExportGeometry) -> PartSpec:
    if part not in SPEC_CLASSES:
        raise InputError(f"unknown export part {part!r}: use one of {', '.join(PART_NAMES)}")
    return SPEC_CLASSES[part](geometry=geometry, tolerances=PART_TOLERANCES[part])
