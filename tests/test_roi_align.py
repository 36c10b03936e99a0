"""RoIAlign against an independent numpy reference (Mask R-CNN / torchvision CPU kernel definition)
and its single-node ONNX export run in onnxruntime."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from acar_deploy.model.roi_align import RoiAlign, roi_align


def _bilinear(feat: np.ndarray, y: float, x: float) -> np.ndarray:
    """One bilinear sample of feat [C, H, W]; outside [-1, size] contributes 0."""
    height, width = feat.shape[1:]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(feat.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (
        hy * hx * feat[:, y_low, x_low]
        + hy * lx * feat[:, y_low, x_high]
        + ly * hx * feat[:, y_high, x_low]
        + ly * lx * feat[:, y_high, x_high]
    )


def numpy_roi_align(features, rois, out_h, out_w, spatial_scale, sampling_ratio, aligned):
    features = features.astype(np.float64)
    out = np.zeros((len(rois), features.shape[1], out_h, out_w))
    offset = 0.5 if aligned else 0.0
    for r, (b, x1, y1, x2, y2) in enumerate(rois.astype(np.float64)):
        feat = features[int(b)]
        start_w, start_h = x1 * spatial_scale - offset, y1 * spatial_scale - offset
        roi_w = x2 * spatial_scale - offset - start_w
        roi_h = y2 * spatial_scale - offset - start_h
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / out_h, roi_w / out_w
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / out_h)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / out_w)
        count = max(grid_h * grid_w, 1)
        for ph in range(out_h):
            for pw in range(out_w):
                acc = np.zeros(features.shape[1])
                for iy in range(grid_h):
                    y = start_h + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = start_w + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                        acc += _bilinear(feat, y, x)
                out[r, :, ph, pw] = acc / count
    return out


def _case(seed: int = 0):
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((2, 3, 9, 11)).astype(np.float32)
    rois = np.array(
        [
            [0, 1.3, 0.7, 6.2, 5.9],  # inside, fractional
            [1, -2.5, -1.73, 4.4, 3.1],  # crosses the top-left border
            [1, 7.6, 5.2, 13.9, 11.8],  # crosses the bottom-right border
            [0, 3.2, 4.1, 3.6, 4.4],  # smaller than one cell
            [1, 0.0, 0.0, 11.0, 9.0],  # whole map: adaptive grid of 2 x 2
            [0, 5.0, 2.0, 4.0, 1.0],  # inverted (x2 < x1)
            [1, 2.25, 1.5, 10.75, 8.5],
        ],
        dtype=np.float32,
    )
    return features, rois


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, -1, 2])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5])
def test_roi_align_equals_numpy_reference(aligned, sampling_ratio, spatial_scale):
    features, rois = _case()
    rois_scaled = rois.copy()
    rois_scaled[:, 1:] /= spatial_scale
    expected = numpy_roi_align(features, rois_scaled, 7, 5, spatial_scale, sampling_ratio, aligned)
    got = roi_align(torch.from_numpy(features), torch.from_numpy(rois_scaled), (7, 5), spatial_scale,
                    sampling_ratio, aligned)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_roi_align_module_and_large_adaptive_grid():
    rng = np.random.default_rng(3)
    features = rng.standard_normal((1, 2, 30, 40)).astype(np.float32)
    rois = np.array([[0, 0.5, 1.0, 38.0, 29.5], [0, 10.0, 3.0, 12.0, 4.0]], dtype=np.float32)
    expected = numpy_roi_align(features, rois, 7, 7, 1.0, 0, False)
    module = RoiAlign(7)
    got = module(torch.from_numpy(features), torch.from_numpy(rois))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_roi_align_empty_and_gradient():
    features = torch.randn(1, 4, 6, 6, requires_grad=True)
    assert roi_align(features, torch.zeros(0, 5), 7).shape == (0, 4, 7, 7)
    rois = torch.tensor([[0, 1.0, 1.0, 4.0, 5.0]])
    roi_align(features, rois, 2, sampling_ratio=1).sum().backward()
    # One sample per bin: the 4 bilinear samples' weights sum to 1 each -> total gradient 4 per channel.
    np.testing.assert_allclose(features.grad.sum(dim=(0, 2, 3)).numpy(), np.full(4, 4.0), rtol=1e-6)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("dynamo", [False, True])
def test_onnx_export_is_one_roialign_node_matching_torch(tmp_path, aligned, dynamo):
    import onnx
    import onnxruntime as ort

    from acar_deploy.model.roi_align import ONNX_TRANSLATION_TABLE

    module = RoiAlign(7, sampling_ratio=-1, aligned=aligned)
    features, rois = _case(1)
    path = tmp_path / "roi_align.onnx"
    kwargs = dict(input_names=["features", "rois"], output_names=["pooled"], opset_version=17)
    if dynamo:
        kwargs.update(dynamo=True, external_data=False, custom_translation_table=ONNX_TRANSLATION_TABLE,
                      dynamic_shapes=({0: torch.export.Dim("B"), 2: torch.export.Dim("H"),
                                       3: torch.export.Dim("W")}, {0: torch.export.Dim("R")}))
    else:
        kwargs.update(dynamo=False, dynamic_axes={"features": [0, 2, 3], "rois": [0], "pooled": [0]})
    torch.onnx.export(module, (torch.from_numpy(features), torch.from_numpy(rois)), str(path), **kwargs)
    graph = onnx.load(str(path)).graph
    nodes = [n for n in graph.node if n.op_type == "RoiAlign"]
    assert len(nodes) == 1
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attrs["sampling_ratio"] == 0
    assert attrs["mode"] == b"avg"
    assert attrs["coordinate_transformation_mode"] == (b"half_pixel" if aligned else b"output_half_pixel")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # Run with a different R and feature size than at export time: nothing may be baked in.
    rng = np.random.default_rng(5)
    feats2 = rng.standard_normal((3, 3, 12, 8)).astype(np.float32)
    rois2 = np.array([[2, 0.4, 1.2, 7.5, 11.0], [0, 3.0, 2.0, 3.5, 2.2], [1, -1.0, 5.0, 9.0, 13.0],
                      [2, 1.0, 1.0, 2.0, 2.0]], dtype=np.float32)
    (got,) = session.run(None, {"features": feats2, "rois": rois2})
    expected = module(torch.from_numpy(feats2), torch.from_numpy(rois2)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_custom_op_used_under_compile_has_the_eager_value_and_gradient():
    features, rois = _case(2)
    feats_a = torch.from_numpy(features).requires_grad_(True)
    feats_b = torch.from_numpy(features).requires_grad_(True)
    weights = torch.randn(len(rois), 3, 7, 7, generator=torch.Generator().manual_seed(0))
    eager = roi_align(feats_a, torch.from_numpy(rois), 7)
    op = torch.ops.acar_deploy.roi_align(feats_b, torch.from_numpy(rois), 7, 7, 1.0, -1, False)
    torch.testing.assert_close(op, eager)
    (eager * weights).sum().backward()
    (op * weights).sum().backward()
    torch.testing.assert_close(feats_b.grad, feats_a.grad)
    # and the gradient is the adjoint of the numpy reference: <grad, e_k> = d out / d feature_k
    k = (1, 2, 4, 5)
    bumped = features.copy()
    bumped[k] += 1.0
    diff = numpy_roi_align(bumped, rois, 7, 7, 1.0, -1, False) - numpy_roi_align(features, rois, 7, 7, 1.0, -1, False)
    np.testing.assert_allclose(feats_a.grad[k].item(), float((diff * weights.numpy()).sum()), rtol=1e-4, atol=1e-5)
