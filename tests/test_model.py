"""ACAR-Net model: official parameter counts and key names, the batched head against the official
per-clip loop (written here), configs and YAML, scores, and ONNX export of the head with dynamic sizes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from acar_deploy.errors import InputError
from acar_deploy.model import ModelConfig, action_scores, build_model, get_config
from acar_deploy.model.heads import ACARHead, LinearHead
from acar_deploy.model.roi_align import roi_align


def _randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights and norm statistics, so that every parameter changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var") or (tensor.dim() == 1 and name.endswith("weight")):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) * 0.5 + 0.75)
            elif tensor.dim() == 1:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.1)
            else:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * math.sqrt(2.0 / fan_in))
    return module


def _rois(counts: list[int], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for b, n in enumerate(counts):
        for _ in range(n):
            xy = torch.rand(2, generator=gen) * 0.6
            wh = torch.rand(2, generator=gen) * 0.4 + 0.05
            rows.append([float(b), xy[0], xy[1], xy[0] + wh[0], xy[1] + wh[1]])
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 5)


def official_loop_head(head: ACARHead, context: torch.Tensor, rois: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """The official ACARHead.forward, loop over clips and all (rois sorted by clip, unpadded clips)."""
    h, w = context.shape[2:]
    feats = F.conv2d(context, head.conv_reduce.weight)
    rois = rois.clone()
    rois[:, 1] *= w
    rois[:, 2] *= h
    rois[:, 3] *= w
    rois[:, 4] *= h
    roi_feats = roi_align(feats, rois, (7, 7))
    roi_feats = F.max_pool2d(roi_feats, 7).view(len(rois), -1)
    roi_ids = np.concatenate([[0], np.cumsum(counts)])
    high_order = []
    for idx in range(feats.shape[0]):
        n = int(roi_ids[idx + 1] - roi_ids[idx])
        if n == 0:
            continue
        bg = feats[idx].unsqueeze(0).repeat((n, 1, 1, 1))
        actor = roi_feats[roi_ids[idx]:roi_ids[idx + 1]].unsqueeze(2).unsqueeze(2).expand_as(bg)
        x = F.relu(F.conv2d(torch.cat([bg, actor], dim=1), head.conv1.weight))
        x = F.relu(F.conv2d(x, head.conv2.weight))
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        for layer in head.hr2o:
            query = layer.conv_q(x).unsqueeze(1)
            key = layer.conv_k(x).unsqueeze(0)
            att = torch.softmax((query * key).sum(2) / (x.shape[1] ** 0.5), dim=1)
            virt = (att.unsqueeze(2) * layer.conv_v(x)).sum(1)
            virt = layer.conv(F.relu(layer.norm(virt)))
            x = x + virt
        high_order.append(x.mean(dim=(2, 3)))
    high_order = torch.cat(high_order, dim=0)
    outputs = torch.cat([F.relu(F.linear(roi_feats, head.fc1.weight)), high_order], dim=1)
    return F.linear(outputs, head.fc2.weight)


@pytest.mark.parametrize("counts", [[3, 0, 1, 7], [1], [0, 2], [7, 3]])
def test_batched_acar_head_equals_official_per_clip_loop(counts):
    head = _randomize(ACARHead(get_config("acar_tiny").head), seed=len(counts)).eval()
    context = torch.randn(len(counts), head.config.width, 9, 12)
    rois = _rois(counts, seed=sum(counts))
    rois_before = rois.clone()
    with torch.no_grad():
        got = head(context, rois)
        expected = official_loop_head(head, context, rois, counts)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(rois, rois_before), "the head must not modify the caller's rois"


def test_batched_head_order_independent_and_empty():
    head = _randomize(ACARHead(get_config("acar_tiny").head), seed=3).eval()
    context = torch.randn(3, head.config.width, 6, 8)
    rois = _rois([2, 3, 2], seed=1)
    perm = torch.tensor([4, 0, 6, 2, 1, 5, 3])
    with torch.no_grad():
        torch.testing.assert_close(head(context, rois[perm]), head(context, rois)[perm], rtol=1e-5, atol=1e-6)
        empty = head(context, torch.zeros(0, 5))
    assert empty.shape == (0, 60) and empty.dtype == torch.float32


def test_r50_size_head_equals_loop_on_small_map():
    head = _randomize(ACARHead(get_config("acar_r50").head), seed=7).eval()
    counts = [2, 0, 1]
    context = torch.randn(3, 2304, 8, 10)
    rois = _rois(counts, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(head(context, rois), official_loop_head(head, context, rois, counts),
                                   rtol=1e-4, atol=1e-4)


def test_linear_head_equals_per_pathway_roi_align():
    config = get_config("linear_tiny")
    head = _randomize(LinearHead(config.head), seed=2).eval()
    slow_ch = config.backbone.slow_channels
    slow, fast = torch.randn(2, slow_ch, 5, 7), torch.randn(2, config.head.width - slow_ch, 5, 7)
    rois = _rois([2, 1], seed=9)
    scaled = rois * torch.tensor([1.0, 7, 5, 7, 5])
    pooled = [F.max_pool2d(roi_align(f, scaled, 7), 7).flatten(1) for f in (slow, fast)]
    expected = F.linear(torch.cat(pooled, dim=1), head.fc.weight)
    with torch.no_grad():
        torch.testing.assert_close(head(torch.cat([slow, fast], dim=1), rois), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "backbone", "head", "tensors"),
    [
        ("acar_r50", 33_644_488, 25_229_312, 677),
        ("acar_r101", 61_904_040, 13_693_952, 1263),
        ("linear_r50", 33_644_488, 138_240, 661),
    ],
)
def test_parameter_counts_and_official_key_names(name, backbone, head, tensors):
    with torch.device("meta"):
        model = build_model(name)
    assert sum(p.numel() for p in model.backbone.parameters()) == backbone
    assert sum(p.numel() for p in model.head.parameters()) == head
    keys = set(model.state_dict())
    assert len(keys) == tensors
    expected = {"backbone.slow_conv1.weight", "backbone.fast_conv1.weight", "backbone.slow_res1.0.downsample.0.weight",
                "backbone.slow_res1.0.downsample_bn.running_var", "backbone.fast_res4.0.downsample.0.weight",
                "backbone.slow_res4.2.bn3.num_batches_tracked"}
    if name == "acar_r101":
        expected |= {"backbone.Tconv1.weight", "backbone.slow_res3.22.conv1.weight", "head.hr2o.0.conv.weight"}
    else:
        expected |= {"backbone.Tconv1.0.weight", "backbone.Tconv4.1.running_mean"}
    if name == "acar_r50":
        expected |= {"head.conv_reduce.weight", "head.conv1.weight", "head.conv2.weight", "head.hr2o.1.conv_q.weight",
                     "head.hr2o.1.conv_k.weight", "head.hr2o.1.conv_v.weight", "head.hr2o.0.norm.bias",
                     "head.fc1.weight", "head.fc2.weight"}
    if name == "linear_r50":
        expected |= {"head.fc.weight"}
    assert expected <= keys, sorted(expected - keys)


def test_slow_frame_selection():
    full = build_model("acar_tiny").backbone.slow_indices
    assert full.tolist() == [0, 4, 8, 13, 17, 22, 26, 31]  # floor(linspace(0, 31, 8))
    from acar_deploy.model.slowfast import slow_frame_indices

    assert slow_frame_indices(32, 4, False).tolist() == list(range(0, 32, 4))
    np.testing.assert_array_equal(slow_frame_indices(64, 8, True).numpy(), np.floor(np.linspace(0, 63, 8)))


def test_model_context_and_forward_compose():
    model = _randomize(build_model("acar_tiny"), seed=5).eval()
    clips = torch.randn(2, 3, 32, 64, 90)
    rois = _rois([1, 2], seed=3)
    with torch.no_grad():
        slow, fast = model.backbone(clips)
        context = model.context(clips)
        logits = model(clips, rois)
    # stride 16 with ceil at every stride-2 op: 64x90 -> 4x6
    assert slow.shape == (2, 256, 8, 4, 6) and fast.shape == (2, 64, 32, 4, 6)
    torch.testing.assert_close(context, torch.cat([slow.mean(2), fast.mean(2)], dim=1))
    torch.testing.assert_close(logits, model.head(context, rois))
    # The slow pathway sees exactly the selected frames: changing an unselected frame only moves fast.
    clips2 = clips.clone()
    clips2[:, :, 1] += 1.0
    with torch.no_grad():
        slow2, _ = model.backbone(clips2)
    assert not torch.equal(slow, slow2)  # lateral connections carry frame 1 into slow
    with torch.no_grad():
        direct = model.backbone.slow_path(clips[:, :, [0, 4, 8, 13, 17, 22, 26, 31]],
                                          model.backbone.fast_path(clips)[1])
    torch.testing.assert_close(direct, slow)
    with pytest.raises(ValueError, match="expects 32 frames"):
        model.backbone(clips[:, :, :16])


def test_action_scores_formula_torch_and_numpy():
    logits = np.zeros((2, 60), dtype=np.float32)
    logits[1, 0], logits[1, 20], logits[1, 59] = math.log(12.0), 2.0, -1000.0
    scores = action_scores(logits)
    assert isinstance(scores, np.ndarray)
    np.testing.assert_allclose(scores[0], np.r_[np.full(13, 1 / 13), np.full(47, 0.5)], rtol=1e-6)
    np.testing.assert_allclose(scores[1, :13], np.r_[12 / 24, np.full(12, 1 / 24)], rtol=1e-6)
    np.testing.assert_allclose(scores[1, [20, 59]], [1 / (1 + math.exp(-2.0)), 0.0], atol=1e-7)
    torch_scores = action_scores(torch.from_numpy(logits))
    assert isinstance(torch_scores, torch.Tensor)
    np.testing.assert_allclose(torch_scores.numpy(), scores, rtol=1e-6, atol=1e-7)
    assert action_scores(np.zeros((0, 60), np.float32)).shape == (0, 60)


OFFICIAL_R50_YAML = """\
evaluate: True
pretrain:
    path: model_zoo/AVA_SLOWFAST_R50_ACAR_HR2O.pth.tar
model:
    freeze_bn: True
    backbone:
        arch: slowfast50
        learnable: True
        kwargs:
            alpha: 4
            beta: 0.125
            fuse_only_conv: False
            fuse_kernel_size: 7
            slow_full_span: True
    neck:
        type: basic
        kwargs: {num_classes: 60, multi_class: True}
    head:
        type: acar
        kwargs:
            width: 2304
            roi_spatial: 7
            num_classes: 60
            depth: 2
loss:
    type: ava_criterion
    kwargs: {pose_softmax: True}
val:
    batch_size: 1
    augmentation:
        spatial:
          - type: Scale
            kwargs: {resize: 256}
          - type: ToTensor
            kwargs:
                norm_value: 255.
          - type: Normalize
            kwargs:
                mean: [0.450, 0.450, 0.450]
                std: [0.225, 0.225, 0.225]
        temporal:
            type: TemporalCenterCrop
            kwargs: {size: 64, step: 2}
"""

OFFICIAL_R101_YAML = """\
model:
    backbone:
        arch: slowfast101
        kwargs: {alpha: 4, beta: 0.125}
    head:
        type: acar
        kwargs: {width: 2304, roi_spatial: 7, num_classes: 60, depth: 1, mlp_1x1: True}
val:
    augmentation:
        spatial:
          - {type: Scale, kwargs: {resize: 256}}
          - {type: ToTensor, kwargs: {norm_value: 1.}}
          - type: Normalize
            kwargs:
                mean: [110.63666788, 103.16065604, 96.29023126]
                std: [38.7568578, 37.88248729, 40.02898126]
"""


def test_official_yaml_equals_builtin(tmp_path: Path):
    r50 = tmp_path / "eval_SLOWFAST_R50_ACAR_HR2O.yaml"
    r50.write_text(OFFICIAL_R50_YAML)
    assert get_config(r50) == get_config("acar_r50")
    assert get_config(str(r50)).name == "eval_SLOWFAST_R50_ACAR_HR2O"
    r101 = tmp_path / "r101.yaml"
    r101.write_text(OFFICIAL_R101_YAML)  # lateral kernel 5 / conv-only / stride slow frames by default
    assert get_config(r101) == get_config("acar_r101")
    linear = tmp_path / "baseline.yaml"
    linear.write_text(OFFICIAL_R50_YAML.replace("type: acar", "type: linear").replace("depth: 2", "")
                      .replace("val:", "train:"))
    assert get_config(linear) == get_config("linear_r50")
    assert get_config(r50) != get_config("acar_r101")


def test_config_dict_roundtrip_and_own_yaml(tmp_path: Path):
    import yaml

    for name in ("acar_r50", "acar_r101", "linear_r50", "acar_tiny", "linear_tiny"):
        config = get_config(name)
        data = config.to_dict()
        assert ModelConfig.from_dict(data) == config and ModelConfig.from_dict(data).name == name
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        assert get_config(path) == config


def test_config_errors_name_file_and_line(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  backbone:\n    arch: slowfast50\n   kwargs: [\n")
    with pytest.raises(InputError, match=r"bad\.yaml:4: invalid YAML"):
        get_config(bad)
    with pytest.raises(InputError, match="unknown model config 'acar_r42'"):
        get_config("acar_r42")
    with pytest.raises(InputError, match="missing.yaml: config file not found"):
        get_config(tmp_path / "missing.yaml")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(OFFICIAL_R50_YAML.replace("width: 2304", "width: 2048"))
    with pytest.raises(InputError, match="head.width is 2048 but the backbone gives 2304"):
        get_config(wrong)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(OFFICIAL_R50_YAML.replace("depth: 2", "depht: 2"))
    with pytest.raises(InputError, match="unknown key.*depht"):
        get_config(unknown)


@pytest.mark.parametrize("dynamo", [False, True])
def test_head_exports_with_dynamic_clips_rois_and_size(tmp_path: Path, dynamo):
    import onnx
    import onnxruntime as ort

    from acar_deploy.model.roi_align import ONNX_TRANSLATION_TABLE

    head = _randomize(ACARHead(get_config("acar_tiny").head), seed=11).eval()
    path = tmp_path / "head.onnx"
    args = (torch.randn(2, head.config.width, 6, 7), _rois([1, 2], seed=2))
    names = dict(input_names=["context", "rois"], output_names=["logits"])
    if dynamo:  # the dynamo exporter cannot convert this head down to opset 17 (onnx version converter)
        dims = {n: torch.export.Dim(n) for n in ("B", "R", "h", "w")}
        torch.onnx.export(head, args, str(path), dynamo=True, external_data=False, opset_version=18,
                          custom_translation_table=ONNX_TRANSLATION_TABLE,
                          dynamic_shapes=({0: dims["B"], 2: dims["h"], 3: dims["w"]}, {0: dims["R"]}), **names)
    else:
        torch.onnx.export(head, args, str(path), dynamo=False, opset_version=17, **names,
                          dynamic_axes={"context": {0: "B", 2: "h", 3: "w"}, "rois": {0: "R"}, "logits": {0: "R"}})
    assert sum(n.op_type == "RoiAlign" for n in onnx.load(str(path)).graph.node) == 1
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for counts, (h, w) in (([3, 0, 1, 7], (5, 9)), ([1], (4, 4)), ([2, 2, 2], (8, 6))):
        context = torch.randn(len(counts), head.config.width, h, w)
        rois = _rois(counts, seed=h)[torch.randperm(sum(counts))]
        (got,) = session.run(None, {"context": context.numpy(), "rois": rois.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(got, head(context, rois).numpy(), rtol=1e-4, atol=1e-5)


def test_tiny_config_is_small():
    config = get_config("acar_tiny")
    assert config.head.num_classes == 60 and config.head.depth == 2 and not config.head.mlp_1x1
    assert config.backbone.slow_full_span and not config.backbone.fuse_only_conv
    model = build_model(config)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    with pytest.raises(InputError):
        get_config(ModelConfig(backbone=config.backbone, head=get_config("acar_r50").head))
