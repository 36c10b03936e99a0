"""The restructured export (frame-batched 2D backbone, context-split ACAR head) against the faithful model.

References are independent of the code under test: torch's own Conv3d + BatchNorm3d, the mean of a
real Conv2d, and the faithful eager model. One restructured and one faithful export of acar_tiny are
shared per module.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from acar_deploy.export import ExportSettings, Parts, export_model
from acar_deploy.export.restructure import FrameConv, PooledConv, restructured
from acar_deploy.export.specs import Normalization, random_clips, random_context, random_rois
from acar_deploy.model import load_model, save_checkpoint
from acar_deploy.model.config import get_config

SIZE = (96, 128)
TOL = 1e-4


def _randomise_batchnorms(model: nn.Module, seed: int) -> None:
    """Non-trivial running statistics, so folding BatchNorm into the convs is really exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm3d):
                n = module.num_features
                module.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                module.bias.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)


@pytest.fixture(scope="module")
def tiny():
    model = load_model(None, "acar_tiny", seed=5)
    _randomise_batchnorms(model, 5)
    with torch.no_grad():
        model.head.fc2.weight.mul_(4.0)  # logits far from zero, so 1e-4 is a real bound
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(tiny, path)
    return path


@pytest.fixture(scope="module")
def fast_export(checkpoint, tmp_path_factory):
    """Restructured (the default), split, validated by export_model against the faithful eager model."""
    out = tmp_path_factory.mktemp("restructured") / "tiny"
    return export_model(out, checkpoint, None, ExportSettings(parts=Parts.split, input_size=SIZE))


@pytest.fixture(scope="module")
def faithful_export(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("faithful") / "tiny"
    settings = ExportSettings(parts=Parts.split, input_size=SIZE, restructure=False, validate=False)
    return export_model(out, checkpoint, None, settings)


# ---- modules ----------------------------------------------------------------------------------


def _to_frames(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).reshape(-1, x.shape[1], *x.shape[3:])


def _from_frames(y: torch.Tensor, batch: int) -> torch.Tensor:
    return y.reshape(batch, -1, *y.shape[1:]).transpose(1, 2)


@pytest.mark.parametrize(
    ("c_in", "c_out", "kernel", "stride", "padding", "frames", "mode"),
    [
        (16, 4, (3, 1, 1), (1, 1, 1), (1, 0, 0), 8, "shifted"),  # bottleneck conv1 (head_conv=3)
        (4, 20, (3, 3, 3), (1, 2, 2), (1, 1, 1), 6, "stacked"),  # widening temporal conv, spatial stride
        (8, 16, (7, 1, 1), (4, 1, 1), (3, 0, 0), 32, "stacked"),  # lateral: temporal stride alpha
        (3, 8, (5, 7, 7), (1, 2, 2), (2, 3, 3), 8, "shifted"),  # fast stem (R50: 3 -> 8, spatial stride 2)
        (16, 8, (1, 3, 3), (1, 2, 2), (0, 2, 2), 4, "spatial"),  # (1, 3, 3) conv with padding 2
    ],
)
def test_frame_conv_equals_conv3d_with_batchnorm(c_in, c_out, kernel, stride, padding, frames, mode):
    torch.manual_seed(0)
    conv = nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
    norm = nn.BatchNorm3d(c_out)
    _randomise_batchnorms(norm, 1)
    norm.eval()
    x = torch.randn(2, c_in, frames, 11, 13)
    twin = FrameConv(conv, norm, frames).eval()
    with torch.no_grad():
        want = norm(conv(x))
        got = _from_frames(twin(_to_frames(x)), 2)
    assert twin.mode == mode
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_pooled_conv_is_the_spatial_mean_of_the_conv(kernel):
    torch.manual_seed(1)
    conv = nn.Conv2d(6, 5, kernel, padding=kernel // 2, bias=False)
    z = torch.randn(4, 6, 7, 9)
    with torch.no_grad():
        want = conv(z).mean(dim=(2, 3))
        got = PooledConv(conv)(z)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_restructured_model_equals_the_faithful_model(tiny):
    twin = restructured(tiny)
    rng = np.random.default_rng(0)
    clips = torch.from_numpy(random_clips(rng, 2, SIZE, Normalization()))
    rois = torch.from_numpy(random_rois(rng, 7, 2))
    with torch.inference_mode():
        want_context, got_context = tiny.context(clips), twin.context(clips)
        want, got = tiny.head(want_context, rois), twin.head(want_context, rois)
    assert float(want.abs().max()) > 0.5
    torch.testing.assert_close(got_context, want_context, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the faithful model's parameters are untouched (the twin works on copies)
    assert tiny.backbone.fast_conv1.weight.dim() == 5 and tiny.head.conv1.in_channels == 2 * tiny.head.config.reduce_dim


@pytest.mark.parametrize(
    ("backbone", "head"),
    [
        # R101-style head (depth 1, 1x1 output conv), bare-conv laterals with kernel 5, every 4th slow frame
        ({"fuse_only_conv": True, "fuse_kernel_size": 5, "slow_full_span": False}, {"depth": 1, "mlp_1x1": True}),
        ({}, {"downsample": "none", "depth": 3}),
        ({}, {"type": "linear"}),
    ],
)
def test_restructured_config_variants_equal_the_faithful_model(backbone, head):
    base = get_config("acar_tiny")
    config = replace(base, backbone=replace(base.backbone, **backbone), head=replace(base.head, **head))
    model = load_model(None, config, seed=2)
    _randomise_batchnorms(model, 2)
    twin = restructured(model)
    rng = np.random.default_rng(1)
    clips = torch.from_numpy(random_clips(rng, 2, (64, 80), Normalization()))
    rois = torch.from_numpy(random_rois(rng, 5, 2))
    with torch.inference_mode():
        torch.testing.assert_close(twin(clips, rois), model(clips, rois), atol=1e-5, rtol=1e-5)


# ---- exported graphs --------------------------------------------------------------------------


def test_restructured_export_is_the_default_and_recorded(fast_export, faithful_export):
    assert fast_export.manifest["restructure"] is True
    assert faithful_export.manifest["restructure"] is False
    rows = fast_export.report.rows
    assert {(r.part, r.R, r.B) for r in rows} == {("backbone", None, 1), ("backbone", None, 2)} | {
        ("head", r, b) for r in (1, 3, 17) for b in (1, 2)
    }
    assert all(r.ok for r in rows)  # ORT vs the faithful eager model, within the spec tolerances
    assert max(r.max_abs for r in rows) <= TOL
    for part in ("backbone", "head"):  # same interface as the faithful graphs
        fast, faithful = fast_export.manifest["parts"][part], faithful_export.manifest["parts"][part]
        assert fast["inputs"] == faithful["inputs"] and fast["outputs"] == faithful["outputs"]


@pytest.mark.parametrize(("rois", "batch"), [(1, 1), (3, 2), (17, 2)])
def test_restructured_graphs_match_the_faithful_eager_model(tiny, fast_export, rois, batch):
    rng = np.random.default_rng([7, rois, batch])
    clips = random_clips(rng, batch, SIZE, Normalization())
    boxes = random_rois(rng, rois, batch)
    backbone = ort.InferenceSession(str(fast_export.files["backbone"]), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(fast_export.files["head"]), providers=["CPUExecutionProvider"])
    (context,) = backbone.run(["context"], {"clips": clips})
    context_in = random_context(rng, batch, context.shape[1], context.shape[2:])
    (logits,) = head.run(["logits"], {"context": context_in, "rois": boxes})
    with torch.inference_mode():
        want_context = tiny.context(torch.from_numpy(clips)).numpy()
        want_logits = tiny.head(torch.from_numpy(context_in), torch.from_numpy(boxes)).numpy()
    assert np.abs(context - want_context).max() <= TOL
    assert np.abs(logits - want_logits).max() <= TOL * max(1.0, float(np.abs(want_logits).max()))


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def test_restructured_backbone_has_only_2d_convs(fast_export, faithful_export):
    def conv_ranks(path):
        model = onnx.load(str(path))
        weights = _initializers(model)
        return [len(weights[n.input[1]].dims) for n in model.graph.node if n.op_type == "Conv"]

    fast, faithful = conv_ranks(fast_export.files["backbone"]), conv_ranks(faithful_export.files["backbone"])
    assert fast and set(fast) == {4}
    assert set(faithful) == {5} and len(fast) == len(faithful)  # one 2D conv per 3D conv


def test_restructured_head_runs_the_context_conv_once_per_clip(tiny, fast_export):
    model = onnx.load(str(fast_export.files["head"]))
    weights = _initializers(model)
    producers = {out: node for node in model.graph.node for out in node.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    reduce_dim, hidden = tiny.head.config.reduce_dim, tiny.head.config.hidden_dim
    width = tiny.head.config.width
    # conv_reduce reads the graph input; conv1's context half reads conv_reduce's output directly
    (reduce_conv,) = [n for n in convs if n.input[0] == "context"]
    context_half = [n for n in convs if n.input[0] == reduce_conv.output[0]
                    and list(weights[n.input[1]].dims) == [hidden, reduce_dim, 1, 1]]
    assert list(weights[reduce_conv.input[1]].dims) == [reduce_dim, width, 1, 1]
    assert len(context_half) == 1
    # no conv anywhere takes the [context, actor] concatenation (2 * reduce_dim channels)
    assert all(weights[n.input[1]].dims[1] != 2 * reduce_dim for n in convs)
    # per actor: conv2, then per HR2O layer one merged q/k/v conv, and the output conv except the last
    depth = tiny.head.config.depth
    assert len(convs) == 2 + 1 + depth + (depth - 1)
    qkv = [n for n in convs if weights[n.input[1]].dims[0] == 3 * hidden]
    assert len(qkv) == depth
    assert all(producers.get(n.input[0]) is None or producers[n.input[0]].op_type != "Gather" for n in qkv)
