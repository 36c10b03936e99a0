"""SlowFast with ACAR-Net's settings (res5 stride 1 + dilation 2, configurable lateral fusion).

Module and parameter names follow the official `models/backbones/slowfast.py` exactly
(`slow_conv1`, `fast_res4.0.downsample.0`, `slow_res1.0.downsample_bn`, `Tconv1.0` / `Tconv1`, ...)
so official state dicts load strictly. The slow frames are picked with a constant index buffer and
`index_select`, which exports as one Gather.
"""

from __future__ import annotations

import torch
from torch import nn

from acar_deploy.model.config import BackboneConfig


class Bottleneck(nn.Module):
    """ResNet bottleneck (stride on the 3x3 conv); `head_conv=3` gives conv1 a temporal kernel of 3."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1, head_conv: int = 1):
        super().__init__()
        if head_conv == 1:
            self.conv1 = nn.Conv3d(inplanes, planes, kernel_size=1, bias=False)
        elif head_conv == 3:
            self.conv1 = nn.Conv3d(inplanes, planes, kernel_size=(3, 1, 1), padding=(1, 0, 0), bias=False)
        else:
            raise ValueError(f"head_conv must be 1 or 3, got {head_conv}")
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                               padding=(0, dilation, dilation), dilation=(1, dilation, dilation), bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        if downsample is not None:
            self.downsample_bn = nn.BatchNorm3d(planes * self.expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = self.downsample_bn(self.downsample(x)) if self.downsample is not None else x
        return self.relu(out + shortcut)


def _stage(inplanes: int, planes: int, blocks: int, stride: int, head_conv: int, dilation: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes * Bottleneck.expansion:
        downsample = nn.Sequential(
            nn.Conv3d(inplanes, planes * Bottleneck.expansion, kernel_size=1, stride=(1, stride, stride), bias=False)
        )
    layers = [Bottleneck(inplanes, planes, stride, downsample, dilation=dilation, head_conv=head_conv)]
    layers += [
        Bottleneck(planes * Bottleneck.expansion, planes, dilation=dilation, head_conv=head_conv)
        for _ in range(1, blocks)
    ]
    return nn.Sequential(*layers)


def slow_frame_indices(num_frames: int, alpha: int, full_span: bool) -> torch.Tensor:
    """Frames of the slow pathway: floor(linspace(0, T-1, T//alpha)) or every alpha-th frame."""
    if full_span:
        return torch.linspace(0, num_frames - 1, num_frames // alpha).long()
    return torch.arange(0, num_frames, alpha, dtype=torch.long)


class SlowFast(nn.Module):
    """Input `[B, 3, T, H, W]` -> `[slow [B, 32w, T/alpha, h, w], fast [B, 32w*beta, T, h, w]]` (stride 16)."""

    def __init__(self, config: BackboneConfig, num_frames: int = 32):
        super().__init__()
        self.config = config
        self.num_frames = num_frames
        width, beta, alpha, layers = config.slow_width, config.beta, config.alpha, config.layers

        def fast(c: int) -> int:
            return int(c * width * beta)

        # Fast pathway (planes 1x, 2x, 4x, 8x of width*beta; temporal kernel 3 everywhere).
        self.fast_conv1 = nn.Conv3d(3, fast(1), kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=(2, 3, 3), bias=False)
        self.fast_bn1 = nn.BatchNorm3d(fast(1))
        self.fast_relu = nn.ReLU(inplace=True)
        self.fast_maxpool = nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.fast_res1 = _stage(fast(1), fast(1), layers[0], 1, 3, 1)
        self.fast_res2 = _stage(fast(1) * 4, fast(2), layers[1], 2, 3, 1)
        self.fast_res3 = _stage(fast(2) * 4, fast(4), layers[2], 2, 3, 1)
        self.fast_res4 = _stage(fast(4) * 4, fast(8), layers[3], 1, 3, 2)

        # Slow pathway: each stage input is the slow tensor plus the lateral (2x fast channels).
        def fused(c: int) -> int:
            return c + int(c * beta) * 2

        self.slow_conv1 = nn.Conv3d(3, width, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False)
        self.slow_bn1 = nn.BatchNorm3d(width)
        self.slow_relu = nn.ReLU(inplace=True)
        self.slow_maxpool = nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.slow_res1 = _stage(fused(width), width, layers[0], 1, 1, 1)
        self.slow_res2 = _stage(fused(4 * width), 2 * width, layers[1], 2, 1, 1)
        self.slow_res3 = _stage(fused(8 * width), 4 * width, layers[2], 2, 3, 1)
        self.slow_res4 = _stage(fused(16 * width), 8 * width, layers[3], 1, 3, 2)

        # Lateral fast -> slow connections (temporal stride alpha, channels doubled).
        self.Tconv1 = self._lateral(fast(1), fast(2))
        self.Tconv2 = self._lateral(fast(4), fast(8))
        self.Tconv3 = self._lateral(fast(8), fast(16))
        self.Tconv4 = self._lateral(fast(16), fast(32))

        self.register_buffer(
            "slow_indices", slow_frame_indices(num_frames, alpha, config.slow_full_span), persistent=False
        )

    def _lateral(self, in_channels: int, out_channels: int) -> nn.Module:
        k = self.config.fuse_kernel_size
        conv = nn.Conv3d(in_channels, out_channels, kernel_size=(k, 1, 1), stride=(self.config.alpha, 1, 1),
                         padding=(k // 2, 0, 0), bias=False)
        if self.config.fuse_only_conv:
            return conv
        return nn.Sequential(conv, nn.BatchNorm3d(out_channels), nn.ReLU(inplace=True))

    def forward(self, clips: torch.Tensor) -> list[torch.Tensor]:
        if clips.shape[2] != self.num_frames:
            raise ValueError(f"SlowFast expects {self.num_frames} frames (config input.num_frames), "
                             f"got clips of shape {list(clips.shape)}")
        fast, laterals = self.fast_path(clips)
        slow = self.slow_path(clips.index_select(2, self.slow_indices), laterals)
        return [slow, fast]

    def fast_path(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.fast_maxpool(self.fast_relu(self.fast_bn1(self.fast_conv1(x))))
        laterals = []
        for lateral, stage in ((self.Tconv1, self.fast_res1), (self.Tconv2, self.fast_res2),
                               (self.Tconv3, self.fast_res3), (self.Tconv4, self.fast_res4)):
            laterals.append(lateral(x))
            x = stage(x)
        return x, laterals

    def slow_path(self, x: torch.Tensor, laterals: list[torch.Tensor]) -> torch.Tensor:
        x = self.slow_maxpool(self.slow_relu(self.slow_bn1(self.slow_conv1(x))))
        for lateral, stage in zip(laterals, (self.slow_res1, self.slow_res2, self.slow_res3, self.slow_res4), strict=True):
            x = stage(torch.cat([x, lateral], dim=1))
        return x
