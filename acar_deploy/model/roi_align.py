"""RoIAlign in plain torch (no torchvision), equal to `torchvision.ops.roi_align`, exporting as ONE
standard ONNX `RoiAlign` node.

Eager math: bilinear sampling is separable, so the average over a bin's sample grid equals
`Wy @ F @ Wx^T`, where `Wy[r, bin, row]` sums the (validity-masked) bilinear row weights of the bin's
sample rows (likewise `Wx` for columns). Samples are laid out up to the largest grid of the current
call and masked per RoI, so adaptive sampling (`sampling_ratio <= 0`: `ceil(roi_h / out_h)` samples)
needs no Python loop over RoIs or bins. That bound is computed from the data at run time, never a
constant: the exporters below never trace this math, they emit the ONNX op.

Export paths (torch 2.13, checked by tests/test_roi_align.py):
- TorchScript exporter (`torch.onnx.export(..., dynamo=False)`, opset >= 16): while exporting,
  `roi_align` routes through `_RoiAlignOnnxFunction`, whose `symbolic` writes the node.
- Dynamo exporter (`dynamo=True`): while tracing, `roi_align` calls the opaque custom op
  `torch.ops.acar_deploy.roi_align`; pass `ONNX_TRANSLATION_TABLE` as
  `torch.onnx.export(..., custom_translation_table=ONNX_TRANSLATION_TABLE)` to emit the node.
Both paths write the node in `emit_onnx_roi_align` / `_onnxscript_roi_align` (attributes:
mode "avg", `coordinate_transformation_mode` "output_half_pixel" for aligned=False and "half_pixel"
for aligned=True, `sampling_ratio` always written (0 = adaptive), batch indices cast to int64).
A plugin-node variant only needs to replace those two functions.
"""

from __future__ import annotations

import torch
from torch import nn

ONNX_MIN_OPSET = 16


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _axis_weights(
    start: torch.Tensor, bin_size: torch.Tensor, grid: torch.Tensor, pooled: int, size: int
) -> torch.Tensor:
    """[R, pooled, size]: per bin, the summed bilinear weights its samples put on each row/column."""
    dtype, device = start.dtype, start.device
    max_grid = torch.cat([grid.flatten(), grid.new_ones(1)]).max()
    sample = torch.arange(max_grid, device=device, dtype=dtype)  # [G]
    bins = torch.arange(pooled, device=device, dtype=dtype)  # [P]
    grid_f = grid.to(dtype)[:, None, None]
    coord = (
        start[:, None, None]
        + bins[None, :, None] * bin_size[:, None, None]
        + (sample[None, None, :] + 0.5) * bin_size[:, None, None] / grid_f
    )  # [R, P, G]
    valid = (sample[None, None, :] < grid_f) & (coord >= -1.0) & (coord <= size)
    coord = coord.clamp(min=0.0)
    low = coord.floor()
    at_edge = low >= size - 1
    last = torch.full_like(low, size - 1)
    low = torch.where(at_edge, last, low)
    high = torch.where(at_edge, last, low + 1)
    coord = torch.where(at_edge, low, coord)
    frac = coord - low
    valid_f = valid.to(dtype)
    positions = torch.arange(size, device=device, dtype=dtype)
    weights = ((1.0 - frac) * valid_f)[..., None] * (low[..., None] == positions) + (frac * valid_f)[
        ..., None
    ] * (high[..., None] == positions)
    return weights.sum(dim=2)


def roi_align_eager(
    features: torch.Tensor,
    rois: torch.Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """The math of torchvision's roi_align (CPU kernel), vectorised over RoIs, bins and samples."""
    out_h, out_w = _pair(output_size)
    height, width = features.shape[-2:]
    offset = 0.5 if aligned else 0.0
    x1 = rois[:, 1] * spatial_scale - offset
    y1 = rois[:, 2] * spatial_scale - offset
    roi_w = rois[:, 3] * spatial_scale - offset - x1
    roi_h = rois[:, 4] * spatial_scale - offset - y1
    if not aligned:  # legacy: force malformed RoIs to be 1x1
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    bin_h = roi_h / out_h
    bin_w = roi_w / out_w
    if sampling_ratio > 0:
        grid_h = torch.full_like(roi_h, sampling_ratio, dtype=torch.int64)
        grid_w = grid_h
    else:
        grid_h = torch.ceil(roi_h / out_h).to(torch.int64)
        grid_w = torch.ceil(roi_w / out_w).to(torch.int64)
    count = (grid_h * grid_w).clamp(min=1).to(features.dtype)
    weight_y = _axis_weights(y1, bin_h, grid_h, out_h, height)  # [R, out_h, H]
    weight_x = _axis_weights(x1, bin_w, grid_w, out_w, width)  # [R, out_w, W]
    per_roi = features.index_select(0, rois[:, 0].to(torch.int64))  # [R, C, H, W]
    pooled = weight_y[:, None] @ per_roi @ weight_x[:, None].transpose(-1, -2)  # [R, C, out_h, out_w]
    return pooled / count[:, None, None, None]


# ---- ONNX emission: the one place that writes the RoiAlign node ---------------------------------


def _onnx_attributes(sampling_ratio: int, aligned: bool) -> dict[str, object]:
    return {
        "mode": "avg",
        "coordinate_transformation_mode": "half_pixel" if aligned else "output_half_pixel",
        "sampling_ratio": max(int(sampling_ratio), 0),
    }


def emit_onnx_roi_align(g, features, rois, output_height, output_width, spatial_scale, sampling_ratio, aligned):
    """TorchScript-exporter symbolic: split rois [R, 5] into int64 batch indices and [R, 4] boxes."""
    if getattr(g, "opset", ONNX_MIN_OPSET) < ONNX_MIN_OPSET:
        raise RuntimeError(f"RoiAlign with coordinate_transformation_mode needs opset >= {ONNX_MIN_OPSET}")
    axis = g.op("Constant", value_t=torch.tensor([1], dtype=torch.int64))
    batch_col = g.op(
        "Slice", rois, g.op("Constant", value_t=torch.tensor([0])), axis, axis
    )
    batch_indices = g.op("Cast", g.op("Squeeze", batch_col, axis), to_i=7)  # 7 = INT64
    boxes = g.op(
        "Slice", rois, axis, g.op("Constant", value_t=torch.tensor([5])), axis
    )
    attrs = _onnx_attributes(sampling_ratio, aligned)
    return g.op(
        "RoiAlign",
        features,
        boxes,
        batch_indices,
        mode_s=attrs["mode"],
        coordinate_transformation_mode_s=attrs["coordinate_transformation_mode"],
        sampling_ratio_i=attrs["sampling_ratio"],
        output_height_i=output_height,
        output_width_i=output_width,
        spatial_scale_f=spatial_scale,
    )


def _onnxscript_roi_align(features, rois, output_height: int, output_width: int, spatial_scale: float,
                          sampling_ratio: int, aligned: bool):
    """Dynamo-exporter translation of `torch.ops.acar_deploy.roi_align`."""
    from onnxscript import opset18 as op

    attrs = _onnx_attributes(sampling_ratio, aligned)
    batch_indices = op.Cast(op.Squeeze(op.Slice(rois, [0], [1], [1]), [1]), to=7)
    boxes = op.Slice(rois, [1], [5], [1])
    return op.RoiAlign(
        features,
        boxes,
        batch_indices,
        mode=attrs["mode"],
        coordinate_transformation_mode=attrs["coordinate_transformation_mode"],
        sampling_ratio=attrs["sampling_ratio"],
        output_height=output_height,
        output_width=output_width,
        spatial_scale=spatial_scale,
    )


class _RoiAlignOnnxFunction(torch.autograd.Function):
    """Used only under the TorchScript exporter so that it emits one node instead of the math."""

    @staticmethod
    def forward(ctx, features, rois, output_height, output_width, spatial_scale, sampling_ratio, aligned):
        return roi_align_eager(features, rois, (output_height, output_width), spatial_scale, sampling_ratio, aligned)

    symbolic = staticmethod(emit_onnx_roi_align)


@torch.library.custom_op("acar_deploy::roi_align", mutates_args=())
def _roi_align_op(
    features: torch.Tensor,
    rois: torch.Tensor,
    output_height: int,
    output_width: int,
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    return roi_align_eager(features, rois, (output_height, output_width), spatial_scale, sampling_ratio, aligned)


@_roi_align_op.register_fake
def _(features, rois, output_height, output_width, spatial_scale, sampling_ratio, aligned):
    return features.new_empty((rois.shape[0], features.shape[1], output_height, output_width))


def _op_setup_context(ctx, inputs, output):
    features, rois, *params = inputs
    ctx.save_for_backward(features, rois)
    ctx.params = params


def _op_backward(ctx, grad_output):
    """Gradient w.r.t. the features by recomputing the (linear) eager math; rois get none."""
    features, rois = ctx.saved_tensors
    out_h, out_w, spatial_scale, sampling_ratio, aligned = ctx.params
    with torch.enable_grad():
        leaf = features.detach().requires_grad_(True)
        pooled = roi_align_eager(leaf, rois, (out_h, out_w), spatial_scale, sampling_ratio, aligned)
        (grad_features,) = torch.autograd.grad(pooled, leaf, grad_output)
    return grad_features, None, None, None, None, None, None


_roi_align_op.register_autograd(_op_backward, setup_context=_op_setup_context)

ONNX_TRANSLATION_TABLE = {torch.ops.acar_deploy.roi_align.default: _onnxscript_roi_align}


def roi_align(
    features: torch.Tensor,
    rois: torch.Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """torchvision.ops.roi_align for rois [R, 5] = (batch_index, x1, y1, x2, y2) in input pixels.

    Returns [R, C, out_h, out_w]. Differentiable in eager mode; exports as one ONNX RoiAlign node.
    """
    out_h, out_w = _pair(output_size)
    args = (features, rois, out_h, out_w, float(spatial_scale), int(sampling_ratio), bool(aligned))
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return torch.ops.acar_deploy.roi_align(*args)
    if torch.onnx.is_in_onnx_export():
        return _RoiAlignOnnxFunction.apply(*args)
    return roi_align_eager(features, rois, (out_h, out_w), spatial_scale, sampling_ratio, aligned)


class RoiAlign(nn.Module):
    """Module form of `roi_align`; defaults are those of ACAR-Net (7x7, legacy aligned=False, adaptive)."""

    def __init__(
        self,
        output_size: int | tuple[int, int] = 7,
        spatial_scale: float = 1.0,
        sampling_ratio: int = -1,
        aligned: bool = False,
    ):
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)

    def forward(self, features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return roi_align(features, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )
