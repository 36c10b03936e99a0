"""ACFB head: reduces to HR2O when the window holds only the current clip; precomputed K/V; edge sizes."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from acar_deploy.errors import InputError
from acar_deploy.model.acfb import ACFBHead, bank_attention, window_mask
from acar_deploy.model.config import BUILTIN_CONFIGS, ModelConfig, get_config
from acar_deploy.model.heads import ACARHead, HR2OLayer, same_clip_mask


def _heads(depth: int, mlp_1x1: bool = False):
    config = replace(BUILTIN_CONFIGS["acar_tiny"].head, depth=depth, mlp_1x1=mlp_1x1)
    torch.manual_seed(0)
    acar = ACARHead(config).eval()
    acfb = ACFBHead(replace(config, type="acfb")).eval()
    acfb.load_state_dict(acar.state_dict(), strict=True)
    return acar, acfb


def _inputs(config, clips: int = 2, per_clip: tuple[int, ...] = (3, 2)):
    torch.manual_seed(1)
    context = torch.randn(clips, config.width, 6, 8)
    rows = []
    for b, n in enumerate(per_clip):
        xy = torch.rand(n, 2) * 0.5
        rows.append(torch.cat([torch.full((n, 1), float(b)), xy, xy + 0.2 + torch.rand(n, 2) * 0.3], 1))
    return context, torch.cat(rows, 0)


@pytest.mark.parametrize("mlp_1x1", [False, True])
def test_depth1_bank_of_current_clip_equals_acar_head(mlp_1x1):
    acar, acfb = _heads(depth=1, mlp_1x1=mlp_1x1)
    context, rois = _inputs(acar.config)
    with torch.no_grad():
        reduced = acar.conv_reduce(context)
        entries = acar.first_order_features(reduced, acar.actor_features(reduced, rois), rois)
        window = window_mask(rois[:, 0], rois[:, 0])  # each clip's bank = its own actors
        expected = acar(context, rois)
        got = acfb(context, rois, entries, window)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_first_bank_layer_equals_hr2o_layer_at_depth2():
    """Layer 1 of a depth-2 bank head is the HR2O layer (the second takes K/V from the bank, by design)."""
    acar, acfb = _heads(depth=2)
    context, rois = _inputs(acar.config)
    layer: HR2OLayer = acar.hr2o[0]
    with torch.no_grad():
        reduced = acar.conv_reduce(context)
        first = acar.first_order_features(reduced, acar.actor_features(reduced, rois), rois)
        expected = layer(first, same_clip_mask(rois))
        keys, values = acfb.project_bank(first)
        virtual = bank_attention(layer.conv_q(first), keys[0], values[0], window_mask(rois[:, 0], rois[:, 0]))
        got = first + layer.conv(torch.relu(layer.norm(virtual)))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_bank_attention_matches_numpy_reference():
    import numpy as np

    torch.manual_seed(3)
    q, k, v = torch.randn(3, 4, 2, 2), torch.randn(5, 4, 2, 2), torch.randn(5, 4, 2, 2)
    window = torch.tensor([[1, 1, 0, 0, 1], [0, 0, 0, 0, 0], [0, 1, 1, 1, 0]], dtype=torch.bool)
    got = bank_attention(q, k, v, window).numpy()
    qn, kn, vn, wn = q.numpy(), k.numpy(), v.numpy(), window.numpy()
    expected = np.zeros_like(qn)
    for i in range(3):
        for y in range(2):
            for x in range(2):
                js = np.flatnonzero(wn[i])
                if len(js) == 0:
                    continue
                logit = np.array([qn[i, :, y, x] @ kn[j, :, y, x] for j in js]) / 2.0
                a = np.exp(logit - logit.max())
                a /= a.sum()
                expected[i, :, y, x] = sum(a_j * vn[j, :, y, x] for a_j, j in zip(a, js, strict=True))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_precomputed_keys_values_equal_on_the_fly():
    _, acfb = _heads(depth=2)
    context, rois = _inputs(acfb.config)
    torch.manual_seed(2)
    entries = torch.randn(7, acfb.config.hidden_dim, 2, 3)
    window = torch.rand(len(rois), 7) < 0.6
    with torch.no_grad():
        keys, values = acfb.project_bank(entries)
        torch.testing.assert_close(acfb.forward_projected(context, rois, keys, values, window),
                                   acfb(context, rois, entries, window), atol=0, rtol=0)
        # the projection is per entry: projecting a subset gives the same rows
        sub_k, sub_v = acfb.project_bank(entries[2:5])
        torch.testing.assert_close(sub_k, keys[:, 2:5], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(sub_v, values[:, 2:5], atol=1e-6, rtol=1e-5)


def test_fp16_entries_are_computed_in_fp32():
    _, acfb = _heads(depth=1)
    context, rois = _inputs(acfb.config)
    entries = torch.randn(4, acfb.config.hidden_dim, 2, 3).half()
    window = torch.ones(len(rois), 4, dtype=torch.bool)
    with torch.no_grad():
        got = acfb(context, rois, entries, window)
        expected = acfb(context, rois, entries.float(), window)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_zero_entries_keep_first_order_features():
    """No entry in the window: zero message, relation = GAP of (F + conv(relu(norm(0)))), no NaN."""
    _, acfb = _heads(depth=1)
    context, rois = _inputs(acfb.config)
    with torch.no_grad():
        logits = acfb(context, rois, torch.zeros(0, acfb.config.hidden_dim, 2, 3), torch.zeros(len(rois), 0, dtype=bool))
        reduced = acfb.conv_reduce(context)
        actors = acfb.actor_features(reduced, rois)
        first = acfb.first_order_features(reduced, actors, rois)
        layer = acfb.hr2o[0]
        x = first + layer.conv(torch.relu(layer.norm(torch.zeros_like(first))))
        expected = acfb.fc2(torch.cat([torch.relu(acfb.fc1(actors)), acfb.gap(x).flatten(1)], 1))
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits, expected, atol=1e-6, rtol=1e-5)


def test_zero_actors():
    _, acfb = _heads(depth=2)
    context, _ = _inputs(acfb.config)
    with torch.no_grad():
        logits = acfb(context, torch.zeros(0, 5), torch.randn(3, acfb.config.hidden_dim, 2, 3),
                      torch.zeros(0, 3, dtype=torch.bool))
    assert logits.shape == (0, acfb.config.num_classes)


def test_acfb_model_and_config():
    from acar_deploy.model.acar import build_model

    model = build_model("acfb_tiny")
    assert isinstance(model.head, ACFBHead)
    config = get_config("acfb_tiny")
    assert (config.head.bank_window, config.head.bank_causal, config.head.bank_precision) == (10, False, "fp16")
    round_trip = ModelConfig.from_dict(config.to_dict())
    assert round_trip == config
    with pytest.raises(InputError, match="bank_precision"):
        ModelConfig.from_dict({**config.to_dict(), "head": {**config.to_dict()["head"], "bank_precision": "int8"}})
    with pytest.raises(InputError, match="bank_window"):
        ModelConfig.from_dict({**config.to_dict(), "head": {**config.to_dict()["head"], "bank_window": -1}})


def test_official_yaml_acfb_head(tmp_path):
    path = tmp_path / "acfb.yaml"
    path.write_text(
        "model:\n  backbone: {arch: slowfast50, kwargs: {alpha: 4, beta: 0.125}}\n"
        "  head: {type: acfb, kwargs: {width: 2304, depth: 1, bank_window: 5, bank_causal: true, bank_precision: fp32}}\n"
        "val:\n  augmentation:\n    spatial:\n      - {type: Scale, kwargs: {resize: 256}}\n"
        "      - {type: ToTensor, kwargs: {norm_value: 255.}}\n"
        "      - {type: Normalize, kwargs: {mean: [0.45, 0.45, 0.45], std: [0.225, 0.225, 0.225]}}\n",
        encoding="utf-8",
    )
    head = get_config(path).head
    assert (head.type, head.bank_window, head.bank_causal, head.bank_precision) == ("acfb", 5, True, "fp32")
