"""ACAR and linear heads on the temporally pooled context map, batched over clips and RoIs.

The official ACAR head loops over clips in Python (one relation problem per clip). Here every RoI
gathers its own clip's context map by batch index, and HR2O attention runs over all RoIs at once
with a mask that keeps relations inside a clip; the result equals the per-clip loop, and the graph
exports with dynamic numbers of clips and RoIs (a clip with no RoIs simply contributes none;
R == 0 gives `[0, num_classes]`). Parameter names match the official `models/heads/acar.py` and
`linear.py` (`conv_reduce`, `conv1`, `conv2`, `hr2o.N.conv_q/conv_k/conv_v/conv/norm`, `fc1`, `fc2`;
linear: `fc`). Differences kept on purpose: the caller's rois are never modified in place, and the
context crop for padded batches (`sizes_before_padding`) is not modelled: clips in one batch share
one unpadded size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from acar_deploy.model.config import HeadConfig
from acar_deploy.model.roi_align import RoiAlign


def scale_rois_to_feature(rois: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
    """Normalised (b, x1, y1, x2, y2) -> feature cells, using the actual map width/height; a new tensor."""
    height, width = feature.shape[-2], feature.shape[-1]
    return torch.cat(
        [rois[:, 0:1], rois[:, 1:2] * width, rois[:, 2:3] * height, rois[:, 3:4] * width, rois[:, 4:5] * height],
        dim=1,
    ).detach()


def same_clip_mask(rois: torch.Tensor) -> torch.Tensor:
    """[R, R] bool: True where two RoIs belong to the same clip (relations never cross clips)."""
    batch_index = rois[:, 0]
    return batch_index[:, None] == batch_index[None, :]


class ClipMaskedAttention(nn.Module):
    """HR2O attention: per position, softmax over the actors j of actor i's clip of <q_i, k_j>/sqrt(C).

    Kept as its own parameter-free module so an exporter can emit it as one (plugin) node.
    Inputs q, k, v `[R, C, H, W]`, same_clip `[R, R]` bool; output `[R, C, H, W]` = sum_j a_ij v_j.
    """

    def __init__(self, hidden_dim: int):
        super().__init__()
        self.hidden_dim = hidden_dim

    def extra_repr(self) -> str:
        return f"hidden_dim={self.hidden_dim}"

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                same_clip: torch.Tensor) -> torch.Tensor:
        q = query.flatten(2).permute(2, 0, 1)  # [HW, R, C]
        k = key.flatten(2).permute(2, 1, 0)  # [HW, C, R]
        v = value.flatten(2).permute(2, 0, 1)  # [HW, R, C]
        logits = torch.matmul(q, k) / math.sqrt(self.hidden_dim)  # [HW, R, R]
        logits = logits.masked_fill(~same_clip.unsqueeze(0), float("-inf"))
        attention = torch.softmax(logits, dim=-1)
        return torch.matmul(attention, v).permute(1, 2, 0).reshape(query.shape)


class HR2OLayer(nn.Module):
    """One High-order Relation Reasoning Operator layer (official `HR2O_NL`), residual."""

    def __init__(self, hidden_dim: int = 512, kernel_size: int = 3, mlp_1x1: bool = False):
        super().__init__()
        padding = kernel_size // 2
        self.conv_q = nn.Conv2d(hidden_dim, hidden_dim, kernel_size, padding=padding, bias=False)
        self.conv_k = nn.Conv2d(hidden_dim, hidden_dim, kernel_size, padding=padding, bias=False)
        self.conv_v = nn.Conv2d(hidden_dim, hidden_dim, kernel_size, padding=padding, bias=False)
        self.attention = ClipMaskedAttention(hidden_dim)
        self.conv = nn.Conv2d(hidden_dim, hidden_dim, 1 if mlp_1x1 else kernel_size,
                              padding=0 if mlp_1x1 else padding, bias=False)
        self.norm = nn.GroupNorm(1, hidden_dim, affine=True)
        self.dp = nn.Dropout(0.2)

    def forward(self, x: torch.Tensor, same_clip: torch.Tensor) -> torch.Tensor:
        virtual = self.attention(self.conv_q(x), self.conv_k(x), self.conv_v(x), same_clip)
        virtual = self.dp(self.conv(torch.relu(self.norm(virtual))))
        return x + virtual


class ACARHead(nn.Module):
    """context `[B, width, h, w]`, rois `[R, 5]` normalised -> logits `[R, num_classes]`."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        reduce_dim, hidden_dim = config.reduce_dim, config.hidden_dim
        self.roi_align = RoiAlign(config.roi_spatial, spatial_scale=1.0, sampling_ratio=-1, aligned=False)
        self.roi_maxpool = nn.MaxPool2d(config.roi_spatial)
        self.conv_reduce = nn.Conv2d(config.width, reduce_dim, 1, bias=False)
        self.conv1 = nn.Conv2d(reduce_dim * 2, hidden_dim, 1, bias=False)
        self.conv2 = nn.Conv2d(hidden_dim, hidden_dim, 3, bias=False)
        if config.downsample == "max2x2":  # the official name; it is a 3x3 max pool, stride 2, pad 1
            self.downsample = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.downsample = nn.Identity()
        self.hr2o = nn.ModuleList(
            HR2OLayer(hidden_dim, config.kernel_size, config.mlp_1x1) for _ in range(config.depth)
        )
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(reduce_dim, hidden_dim, bias=False)
        self.fc2 = nn.Linear(hidden_dim * 2, config.num_classes, bias=config.bias)
        self.dp = nn.Dropout(config.dropout) if config.dropout > 0 else None

    def actor_features(self, reduced: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """RoIAlign 7x7 + max pool on the reduced context -> `[R, reduce_dim]`."""
        pooled = self.roi_align(reduced, scale_rois_to_feature(rois, reduced))
        return self.roi_maxpool(pooled).flatten(1)

    def first_order_features(self, reduced: torch.Tensor, actors: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """Actor-context encoder: the first-order relation maps F_i HR2O takes, `[R, hidden_dim, h', w']`."""
        context = reduced.index_select(0, rois[:, 0].to(torch.int64))  # each RoI's clip context
        tiled = actors[:, :, None, None].expand_as(context)
        x = torch.relu(self.conv1(torch.cat([context, tiled], dim=1)))
        return self.downsample(torch.relu(self.conv2(x)))

    def relation_features(self, reduced: torch.Tensor, actors: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """Actor-context encoder + HR2O over the actors of each clip -> `[R, hidden_dim]`."""
        x = self.first_order_features(reduced, actors, rois)
        same_clip = same_clip_mask(rois)
        for layer in self.hr2o:
            x = layer(x, same_clip)
        return self.gap(x).flatten(1)

    def forward(self, context: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        reduced = self.conv_reduce(context)
        actors = self.actor_features(reduced, rois)
        relations = self.relation_features(reduced, actors, rois)
        outputs = torch.cat([torch.relu(self.fc1(actors)), relations], dim=1)
        if self.dp is not None:
            outputs = self.dp(outputs)
        return self.fc2(outputs)


class LinearHead(nn.Module):
    """Baseline: RoIAlign + max pool per channel of the context map -> linear classifier.

    The official head aligns each pathway's map separately; RoIAlign and max pool act per channel,
    so aligning the concatenated (slow, fast) context map gives identical features.
    """

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        self.roi_align = RoiAlign(config.roi_spatial, spatial_scale=1.0, sampling_ratio=-1, aligned=False)
        self.roi_maxpool = nn.MaxPool2d(config.roi_spatial)
        self.fc = nn.Linear(config.width, config.num_classes, bias=config.bias)
        self.dp = nn.Dropout(config.dropout) if config.dropout > 0 else None

    def forward(self, context: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        pooled = self.roi_maxpool(self.roi_align(context, scale_rois_to_feature(rois, context))).flatten(1)
        if self.dp is not None:
            pooled = self.dp(pooled)
        return self.fc(pooled)


def build_head(config: HeadConfig) -> nn.Module:
    return ACARHead(config) if config.type == "acar" else LinearHead(config)
