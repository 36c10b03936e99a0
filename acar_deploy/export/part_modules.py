"""The torch modules each part is exported from, and the plugin-emitting twins of RoIAlign and HR2O.

Plugin variants never patch model code: `with_plugin_nodes` deep-copies the model and swaps its
`RoiAlign` modules (and the attention of each HR2O layer) for twins that compute exactly what the
original computes in eager mode and, while `torch.onnx.export` traces them, emit one custom node
(`ACAR_RoIAlign` / `ACAR_HR2O`) instead of the standard-op graph.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from acar_deploy.export.plugin_nodes import CUSTOM_DOMAIN, HR2O_OP, ROI_ALIGN_OP, plugin_attributes

# ---- the exported parts ------------------------------------------------------------------


class BackbonePart(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.model.context(clips)


class HeadPart(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, context: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return self.model.head(context, rois)


class FusedPart(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, clips: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from acar_deploy.model.scores import action_scores

        logits = self.model(clips, rois)
        return logits, action_scores(logits)


class BankKVPart(nn.Module):
    """An acfb head's bank projection: entries -> keys, values of every HR2O layer."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, bank_entries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.head.project_bank(bank_entries)


class BankHeadPart(nn.Module):
    """An acfb head on precomputed bank keys/values (`ACFBHead.forward_projected`)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, context: torch.Tensor, rois: torch.Tensor, bank_keys: torch.Tensor, bank_values: torch.Tensor,
                bank_window: torch.Tensor) -> torch.Tensor:
        return self.model.head.forward_projected(context, rois, bank_keys, bank_values, bank_window)


# ---- plugin twins ------------------------------------------------------------------------------


class PluginRoiAlign(nn.Module):
    """Twin of `acar_deploy.model.roi_align.RoiAlign` that exports as one `ACAR_RoIAlign` node.

    The node takes boxes [R, 4] and int32 batch indices [R] separately, the inputs of TensorRT's
    ROIAlign_TRT; its local ONNX function is the same RoiAlign-16 the standard export writes.
    """

    def __init__(self, original: nn.Module):
        super().__init__()
        self.original = original
        self.output_size = tuple(original.output_size)
        self.spatial_scale = float(original.spatial_scale)
        self.sampling_ratio = int(original.sampling_ratio)
        self.aligned = bool(original.aligned)

    def forward(self, features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        if not torch.onnx.is_in_onnx_export():
            return self.original(features, rois)
        out_h, out_w = self.output_size
        boxes = rois[:, 1:5]
        batch_indices = rois[:, 0].to(torch.int32)
        attrs = {
            "coordinate_transformation_mode": "half_pixel" if self.aligned else "output_half_pixel",
            "mode": "avg",
            "output_height": out_h,
            "output_width": out_w,
            "sampling_ratio": max(self.sampling_ratio, 0),
            "spatial_scale": self.spatial_scale,
            **plugin_attributes(),
        }
        return torch.onnx.ops.symbolic(
            f"{CUSTOM_DOMAIN}::{ROI_ALIGN_OP}",
            (features, boxes, batch_indices),
            attrs,
            dtype=features.dtype,
            shape=(rois.shape[0], features.shape[1], out_h, out_w),
            version=1,
        )


def emit_hr2o_node(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, batch_indices: torch.Tensor, scale: float
) -> torch.Tensor:
    """One `ACAR_HR2O` node: attention over the actors of the same clip, per position."""
    attrs = {"scale": float(scale), **plugin_attributes()}
    return torch.onnx.ops.symbolic(
        f"{CUSTOM_DOMAIN}::{HR2O_OP}",
        (query, key, value, batch_indices.to(torch.int32)),
        attrs,
        dtype=query.dtype,
        shape=tuple(query.shape),
        version=1,
    )


def reference_hr2o_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, batch_indices: torch.Tensor, scale: float
) -> torch.Tensor:
    """Eager math of the ACAR_HR2O node (what its ONNX function and TensorRT kernel compute)."""
    q = query.flatten(2).permute(2, 0, 1)  # [hw, R, C]
    k = key.flatten(2).permute(2, 0, 1)
    v = value.flatten(2).permute(2, 0, 1)
    logits = (q @ k.transpose(1, 2)) * scale  # [hw, R, R]
    same_clip = batch_indices[:, None] == batch_indices[None, :]
    weights = logits.masked_fill(~same_clip, float("-inf")).softmax(-1)
    return (weights @ v).permute(1, 2, 0).reshape(query.shape)


class PluginHR2OAttention(nn.Module):
    """Twin of the model's `ClipMaskedAttention` that exports as one `ACAR_HR2O` node.

    The node takes a per-actor clip label (int32 [R]) rather than the [R, R] mask: the label of actor i
    is the index of the first actor of its clip (argmax of mask row i), so equal labels <=> same clip.
    Eager calls go to the original module unchanged.
    """

    def __init__(self, original: nn.Module):
        super().__init__()
        self.original = original

    def forward(self, query, key, value, same_clip):
        if not torch.onnx.is_in_onnx_export():
            return self.original(query, key, value, same_clip)
        clip_label = same_clip.to(query.dtype).argmax(dim=1)
        channels = getattr(self.original, "hidden_dim", None) or query.shape[1]
        return emit_hr2o_node(query, key, value, clip_label, 1.0 / math.sqrt(channels))


def _is_roi_align(module: nn.Module) -> bool:
    from acar_deploy.model.roi_align import RoiAlign

    return isinstance(module, RoiAlign)


def _is_hr2o_attention(module: nn.Module) -> bool:
    from acar_deploy.model.heads import ClipMaskedAttention

    return isinstance(module, ClipMaskedAttention)


def _replace_modules(root: nn.Module, predicate, factory) -> int:
    """Swap every submodule matching `predicate` for `factory(submodule)`; returns the count."""
    targets = [name for name, module in root.named_modules() if name and predicate(module)]
    for name in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        setattr(parent, attr, factory(getattr(parent, attr)))
    return len(targets)


def with_plugin_nodes(model: nn.Module, roi_align: bool, hr2o: bool) -> tuple[nn.Module, dict[str, int]]:
    """A deep copy of `model` whose RoIAlign / HR2O attention export as custom nodes.

    Returns the copy and how many modules were swapped per custom op (0 where the model has none,
    e.g. no HR2O in a linear head).
    """
    if not (roi_align or hr2o):
        return model, {}
    twin = copy.deepcopy(model)
    swapped: dict[str, int] = {}
    if roi_align:
        swapped[ROI_ALIGN_OP] = _replace_modules(twin, _is_roi_align, PluginRoiAlign)
    if hr2o:
        swapped[HR2O_OP] = _replace_modules(twin, _is_hr2o_attention, PluginHR2OAttention)
    return twin.eval(), swapped
