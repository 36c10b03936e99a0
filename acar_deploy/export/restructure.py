"""Export-time twins that compute what the faithful model computes, in fewer FLOPs or faster ops.

`restructured(model)` deep-copies an eval-mode `ACARModel` and swaps in:

- `ContextSplitACARHead`: conv1 on `[context, actor tiled]` is `W_ctx * context + W_act * actor`, so
  the context half runs once per clip (then gathered per actor by batch index) and the actor half is
  a `[R, hidden]` vector broadcast over positions. The q/k/v convs of each HR2O layer run as one conv
  with 3x the output channels, and the last layer's output conv is never run on the map: only its
  spatial mean is used, and the mean of a stride-1 conv is a matmul of per-tap window sums.
- `FrameBatchedSlowFast`: activations live as `[B*T, C, H, W]` (frames folded into the batch), so the
  `(1, k, k)` and `1x1x1` convs are plain 2D convs, which ONNX Runtime runs with its NCHWc kernels
  (its layout transformer skips 3D convs), and the residual Add + ReLU fuse into them. BatchNorms are
  folded into the conv weights. Temporal `(k, 1, 1)` / `(5, 7, 7)` convs become 2D convs too (see
  `FrameConv`); the temporal means of the pathways are taken on the frame-batched maps.

Every twin is exact up to float rounding; weights are rearranged copies of the original parameters
(graph initializers keep the faithful names, e.g. `backbone.fast_conv1.weight`), and no constant
depends on the export-time batch, box count or frame size (only on the clip length T). Measured on
R50 at 256x341 (2 threads, 8 actors): ORT backbone 0.76x and head 0.86x the time of the faithful graphs.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

# ---- head --------------------------------------------------------------------------------------


def _window_slice(offset: int) -> slice:
    """Input rows/columns that a stride-1 'same' conv tap at `offset` (tap - padding) ever reads."""
    if offset >= 0:
        return slice(offset, None)
    return slice(0, offset)


class PooledConv(nn.Module):
    """Spatial mean of a stride-1, bias-free 2D conv, without running the conv on the map.

    mean_p conv(z)(p) = sum_taps W_tap @ (sum of z over the window that tap reads) / (h * w): the
    window sums are slices of z, the tap sum is one MatMul `[R, k*k*C_in] @ [k*k*C_in, C_out]`.
    Only valid for 'same' convs (output size = input size), which is what HR2O uses.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        k_h, k_w = conv.kernel_size
        if conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1 or conv.bias is not None:
            raise ValueError("PooledConv needs a stride-1, undilated, ungrouped conv without bias")
        if conv.padding != (k_h // 2, k_w // 2) or k_h % 2 == 0 or k_w % 2 == 0:
            raise ValueError("PooledConv needs an odd 'same' conv (padding = kernel // 2)")
        self.offsets = [(ky - k_h // 2, kx - k_w // 2) for ky in range(k_h) for kx in range(k_w)]
        weight = conv.weight.detach()  # [C_out, C_in, kh, kw] -> [kh*kw*C_in, C_out], tap-major
        self.weight = nn.Parameter(weight.permute(2, 3, 1, 0).reshape(-1, weight.shape[0]).contiguous(),
                                   requires_grad=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        rows = {dy: z[:, :, _window_slice(dy), :].sum(dim=2) for dy in {dy for dy, _ in self.offsets}}
        taps = [rows[dy][:, :, _window_slice(dx)].sum(dim=2) for dy, dx in self.offsets]  # each [R, C_in]
        sums = torch.cat(taps, dim=1)
        return torch.matmul(sums, self.weight) / (z.shape[2] * z.shape[3])


def _merged_conv(convs: list[nn.Conv2d]) -> nn.Conv2d:
    """One conv whose output channels are the given convs' outputs, concatenated (same input, kernel)."""
    first = convs[0]
    merged = nn.Conv2d(first.in_channels, sum(c.out_channels for c in convs), first.kernel_size,
                       stride=first.stride, padding=first.padding, dilation=first.dilation, bias=False)
    with torch.no_grad():
        merged.weight.copy_(torch.cat([c.weight for c in convs], dim=0))
    return merged


class MergedQKVHR2OLayer(nn.Module):
    """An HR2O layer whose q, k and v convs run as one conv; `pooled=True` returns the layer's
    output already averaged over positions (`[R, C]`), with the output conv as a `PooledConv`."""

    def __init__(self, layer: nn.Module, pooled: bool = False):
        super().__init__()
        self.hidden_dim = layer.conv_q.out_channels
        self.conv_qkv = _merged_conv([layer.conv_q, layer.conv_k, layer.conv_v])
        self.attention = layer.attention  # kept as is: the plugin exporter swaps it
        self.norm = layer.norm
        self.pooled = pooled
        self.conv = PooledConv(layer.conv) if pooled else layer.conv

    def forward(self, x: torch.Tensor, same_clip: torch.Tensor) -> torch.Tensor:
        query, key, value = self.conv_qkv(x).split(self.hidden_dim, dim=1)
        z = torch.relu(self.norm(self.attention(query, key, value, same_clip)))
        if self.pooled:  # dropout is the identity in eval mode
            return x.mean(dim=(2, 3)) + self.conv(z)
        return x + self.conv(z)


class ContextSplitACARHead(nn.Module):
    """Twin of `ACARHead` (eval mode): the same logits, with conv1's context half run once per clip."""

    def __init__(self, head: nn.Module):
        super().__init__()
        reduce_dim = head.conv_reduce.out_channels
        hidden_dim = head.conv1.out_channels
        weight = head.conv1.weight.detach()  # [hidden, 2 * reduce, 1, 1]: context channels first
        self.conv_reduce = head.conv_reduce
        self.roi_align = head.roi_align
        self.roi_maxpool = head.roi_maxpool
        self.conv1_context = nn.Conv2d(reduce_dim, hidden_dim, 1, bias=False)
        self.conv1_actor = nn.Linear(reduce_dim, hidden_dim, bias=False)
        with torch.no_grad():
            self.conv1_context.weight.copy_(weight[:, :reduce_dim])
            self.conv1_actor.weight.copy_(weight[:, reduce_dim:, 0, 0])
        self.conv2 = head.conv2
        self.downsample = head.downsample
        depth = len(head.hr2o)
        self.hr2o = nn.ModuleList(
            MergedQKVHR2OLayer(layer, pooled=i == depth - 1) for i, layer in enumerate(head.hr2o)
        )
        self.fc1 = head.fc1
        self.fc2 = head.fc2
        self.dp = head.dp

    def forward(self, context: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        from acar_deploy.model.heads import same_clip_mask, scale_rois_to_feature

        reduced = self.conv_reduce(context)
        actors = self.roi_maxpool(self.roi_align(reduced, scale_rois_to_feature(rois, reduced))).flatten(1)
        clip_context = self.conv1_context(reduced).index_select(0, rois[:, 0].to(torch.int64))
        x = torch.relu(clip_context + self.conv1_actor(actors)[:, :, None, None])
        x = self.downsample(torch.relu(self.conv2(x)))
        same_clip = same_clip_mask(rois)
        for layer in self.hr2o:
            x = layer(x, same_clip)
        relations = x if x.dim() == 2 else x.mean(dim=(2, 3))  # the last layer returns it pooled
        outputs = torch.cat([torch.relu(self.fc1(actors)), relations], dim=1)
        if self.dp is not None:
            outputs = self.dp(outputs)
        return self.fc2(outputs)


# ---- backbone ----------------------------------------------------------------------------------


def _folded_weights(conv: nn.Conv3d, norm: nn.BatchNorm3d | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Conv weights with an eval-mode BatchNorm folded in: (weight * scale, shift)."""
    weight = conv.weight.detach()
    if norm is None:
        return weight, None
    scale = norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)
    shift = norm.bias.detach() - norm.running_mean * scale
    return weight * scale[:, None, None, None, None], shift


class FrameConv(nn.Module):
    """A Conv3d (+ eval BatchNorm3d) on frame-batched maps `[N*T, C, H, W]` -> `[N*T', C', H', W']`.

    The spatial part is a 2D conv. A temporal kernel k > 1 is done one of two ways, whichever copies
    less memory: "stacked" gathers each output frame's k input frames (zero padded) into k*C input
    channels (temporal strides, i.e. the laterals, and inputs no wider than the output); "shifted" runs
    one 2D conv with k*C' output channels (one group per tap) and sums the groups over shifted frames
    (the bottleneck convs, whose outputs are 4x narrower than their inputs, and the stride-2 3->8
    stem). Frame count T is static (the clip length); N stays dynamic.
    """

    def __init__(self, conv: nn.Conv3d, norm: nn.BatchNorm3d | None, frames: int):
        super().__init__()
        if conv.groups != 1 or conv.dilation[0] != 1 or (conv.kernel_size[0] == 1 and conv.padding[0] != 0):
            raise ValueError("FrameConv needs an ungrouped conv without temporal dilation (or padding at k=1)")
        weight, shift = _folded_weights(conv, norm)  # [C', C, k, kh, kw], [C'] or None
        self.frames = frames
        self.taps, self.stride, self.padding = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        self.out_frames = (frames + 2 * self.padding - self.taps) // self.stride + 1
        self.out_channels = conv.out_channels
        if self.taps == 1:
            self.mode = "spatial"
        elif self.stride > 1 or conv.in_channels * conv.stride[1] * conv.stride[2] <= conv.out_channels:
            self.mode = "stacked"  # the k-fold copy of the input is the smaller one (per output frame)
        else:
            self.mode = "shifted"
        self.spatial = {"stride": conv.stride[1:], "padding": conv.padding[1:], "dilation": conv.dilation[1:]}
        c_out, c_in, _, k_h, k_w = weight.shape
        bias = shift
        if self.mode == "shifted" and not 0 <= self.padding < self.taps:
            raise ValueError("FrameConv needs temporal padding < kernel size")
        if self.mode == "shifted":  # [k, C', C, kh, kw]: output channel = tap * C' + c'
            folded = weight.permute(2, 0, 1, 3, 4).reshape(self.taps * c_out, c_in, k_h, k_w)
            if shift is not None:  # only the centre tap's group: it reads a real frame for every output frame
                bias = torch.zeros(self.taps, c_out, dtype=shift.dtype)
                bias[self.padding] = shift
                bias = bias.flatten()
        elif self.mode == "stacked":  # [C', k, C, kh, kw]: input channel = tap * C + c
            folded = weight.permute(0, 2, 1, 3, 4).reshape(c_out, self.taps * c_in, k_h, k_w)
        else:
            folded = weight[:, :, 0]
        # parameter names stay the faithful model's (`backbone.fast_conv1.weight`, ...), BatchNorm folded
        self.weight = nn.Parameter(folded.contiguous(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.contiguous(), requires_grad=False)
        # stacked: input frames (indices into the zero-padded clip) of each output frame, tap by tap
        self.register_buffer("stack_index", torch.tensor(
            [t * self.stride + tap for t in range(self.out_frames) for tap in range(self.taps)], dtype=torch.long,
        ), persistent=False)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.weight, self.bias, **self.spatial)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "spatial":
            if self.stride != 1 or self.out_frames != self.frames:
                x = _select_frames(x, self.frames, range(0, self.frames, self.stride)[: self.out_frames])
            return self._conv(x)
        if self.mode == "stacked":
            clips = x.reshape(-1, self.frames, *x.shape[1:])  # [N, T, C, H, W]
            if self.padding:
                clips = nn.functional.pad(clips, (0, 0, 0, 0, 0, 0, self.padding, self.padding))
            stacked = clips.index_select(1, self.stack_index)  # [N, T' * k, C, H, W]
            return self._conv(stacked.reshape(-1, self.taps * x.shape[1], x.shape[2], x.shape[3]))
        z = self._conv(x)  # [N*T, k*C', h, w]
        h, w = z.shape[-2], z.shape[-1]
        k, step = self.taps, self.taps * self.stride
        z = z.reshape(-1, self.frames * k, self.out_channels * h * w)  # rows (frame, tap)
        z = nn.functional.pad(z, (0, 0, self.padding * k, self.padding * k))
        # output frame t, tap j reads padded frame t*s + j: row (t*s + j)*k + j = t*s*k + j*(k+1).
        # (A MatMul with a 0/1 [T', T*k] matrix is ~5% faster on R50, but int8 QDQ would quantize it.)
        total = None
        for tap in range(k):
            start = tap * (k + 1)
            part = z[:, start: start + (self.out_frames - 1) * step + 1: step]
            total = part if total is None else total + part
        return total.reshape(-1, self.out_channels, h, w)


def _select_frames(x: torch.Tensor, frames: int, keep) -> torch.Tensor:
    """Frames `keep` of each clip of a frame-batched `[N*frames, ...]` tensor."""
    index = torch.tensor(list(keep), dtype=torch.long, device=x.device)
    picked = x.reshape(-1, frames, *x.shape[1:]).index_select(1, index)
    return picked.reshape(-1, *x.shape[1:])


class FrameBottleneck(nn.Module):
    """`Bottleneck` on frame-batched maps, BatchNorms folded into the convs."""

    def __init__(self, block: nn.Module, frames: int):
        super().__init__()
        self.conv1 = FrameConv(block.conv1, block.bn1, frames)
        self.conv2 = FrameConv(block.conv2, block.bn2, frames)
        self.conv3 = FrameConv(block.conv3, block.bn3, frames)
        self.downsample = None
        if block.downsample is not None:
            self.downsample = nn.Sequential(FrameConv(block.downsample[0], block.downsample_bn, frames))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(self.conv3(out) + shortcut)


def _frame_stage(stage: nn.Sequential, frames: int) -> nn.Sequential:
    return nn.Sequential(*(FrameBottleneck(block, frames) for block in stage))


def _frame_lateral(lateral: nn.Module, frames: int) -> nn.Module:
    if isinstance(lateral, nn.Conv3d):
        return FrameConv(lateral, None, frames)
    conv, norm, _ = lateral
    return nn.Sequential(FrameConv(conv, norm, frames), nn.ReLU())


def _frame_maxpool(pool: nn.MaxPool3d) -> nn.MaxPool2d:
    kernel, stride, padding = (tuple(v) if isinstance(v, tuple) else (v,) * 3
                               for v in (pool.kernel_size, pool.stride, pool.padding))
    if kernel[0] != 1 or stride[0] != 1 or padding[0] != 0:
        raise ValueError("only spatial (1, k, k) max pools run on frame-batched maps")
    return nn.MaxPool2d(kernel[1:], stride[1:], padding[1:])


class FrameBatchedSlowFast(nn.Module):
    """Twin of `SlowFast` (eval mode) on `[B*T, C, H, W]` maps; returns each pathway's temporal mean.

    `forward(clips) -> (slow [B, C_slow, h, w], fast [B, C_fast, h, w])`: the means are taken on the
    frame-batched maps, so the 5D maps are never rebuilt.
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        frames = backbone.num_frames
        slow_frames = int(backbone.slow_indices.numel())
        self.frames, self.slow_frames = frames, slow_frames
        self.register_buffer("slow_indices", backbone.slow_indices.clone(), persistent=False)
        self.fast_conv1 = FrameConv(backbone.fast_conv1, backbone.fast_bn1, frames)
        self.fast_maxpool = _frame_maxpool(backbone.fast_maxpool)
        self.slow_conv1 = FrameConv(backbone.slow_conv1, backbone.slow_bn1, slow_frames)
        self.slow_maxpool = _frame_maxpool(backbone.slow_maxpool)
        for i in range(1, 5):  # the faithful module names, so graph initializers keep the official names
            setattr(self, f"fast_res{i}", _frame_stage(getattr(backbone, f"fast_res{i}"), frames))
            setattr(self, f"slow_res{i}", _frame_stage(getattr(backbone, f"slow_res{i}"), slow_frames))
            setattr(self, f"Tconv{i}", _frame_lateral(getattr(backbone, f"Tconv{i}"), frames))
        self.fast_stages = [getattr(self, f"fast_res{i}") for i in range(1, 5)]  # plain lists: no duplicate names
        self.slow_stages = [getattr(self, f"slow_res{i}") for i in range(1, 5)]
        self.laterals = [getattr(self, f"Tconv{i}") for i in range(1, 5)]
        if any(lateral_frames(m) != slow_frames for m in self.laterals):
            raise ValueError("the lateral connections must bring the fast pathway to the slow frame count")

    def forward(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        channels, height, width = clips.shape[1], clips.shape[3], clips.shape[4]
        frames = clips.transpose(1, 2)  # [B, T, 3, H, W]
        fast = frames.reshape(-1, channels, height, width)
        slow = frames.index_select(1, self.slow_indices).reshape(-1, channels, height, width)
        fast = self.fast_maxpool(torch.relu(self.fast_conv1(fast)))
        laterals = []
        for lateral, stage in zip(self.laterals, self.fast_stages, strict=True):
            laterals.append(lateral(fast))
            fast = stage(fast)
        slow = self.slow_maxpool(torch.relu(self.slow_conv1(slow)))
        for lateral, stage in zip(laterals, self.slow_stages, strict=True):
            slow = stage(torch.cat([slow, lateral], dim=1))
        return _frame_mean(slow, self.slow_frames), _frame_mean(fast, self.frames)


def lateral_frames(lateral: nn.Module) -> int:
    conv = lateral if isinstance(lateral, FrameConv) else lateral[0]
    return conv.out_frames


def _frame_mean(x: torch.Tensor, frames: int) -> torch.Tensor:
    return x.reshape(-1, frames, *x.shape[1:]).mean(dim=1)


# ---- the whole model ---------------------------------------------------------------------------


class RestructuredACAR(nn.Module):
    """Twin of `ACARModel` with `context`, `head` and `forward` as the export parts call them."""

    def __init__(self, model: nn.Module):
        super().__init__()
        from acar_deploy.model.heads import ACARHead

        self.config = model.config
        self.backbone = FrameBatchedSlowFast(model.backbone)
        plain_acar = type(model.head) is ACARHead  # not ACFBHead: its bank parts keep the eager head
        self.head = ContextSplitACARHead(model.head) if plain_acar else model.head

    def context(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.shape[2] != self.backbone.frames:
            raise ValueError(f"SlowFast expects {self.backbone.frames} frames (config input.num_frames), "
                             f"got clips of shape {list(clips.shape)}")
        slow, fast = self.backbone(clips)
        return torch.cat([slow, fast], dim=1)

    def forward(self, clips: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return self.head(self.context(clips), rois)


def restructured(model: nn.Module) -> nn.Module:
    """An eval-mode twin of `model` (an `ACARModel`) built from copies of its weights."""
    return RestructuredACAR(copy.deepcopy(model).eval()).eval()
