"""On a CUDA GPU the model computes what it computes on the CPU: fp32 (TF32 off) to float rounding,
fp16/bf16 autocast within their precision, with and without a bank. Skipped where there is no GPU."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.gpu


def _inputs(clips: int, size=(64, 64), frames: int = 8, seed: int = 0):
    from acar_deploy.bench.inputs import make_rois

    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((clips, 3, frames, *size), dtype=np.float32))
    return x, torch.from_numpy(make_rois(clips, 3, rng))


@pytest.fixture
def no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float().cpu() - b).norm() / b.norm())


@pytest.mark.parametrize("config", ["acar_tiny", "linear_tiny"])
def test_cuda_fp32_and_autocast_follow_the_cpu(config, no_tf32):
    from acar_deploy.model import load_model

    model = load_model(None, config, seed=0).eval()
    frames = int(model.config.input.num_frames)
    clips, rois = _inputs(2, frames=frames)
    with torch.inference_mode():
        want = model(clips, rois.clone())
        cuda = model.cuda()
        got = {"fp32": cuda(clips.cuda(), rois.cuda())}
        for dtype in (torch.float16, torch.bfloat16):
            with torch.autocast("cuda", dtype=dtype):
                got[str(dtype)] = cuda(clips.cuda(), rois.cuda())
    assert _rel(got["fp32"], want) < 1e-5
    assert _rel(got[str(torch.float16)], want) < 5e-3
    assert _rel(got[str(torch.bfloat16)], want) < 3e-2


def test_cuda_bank_head_follows_the_cpu(no_tf32):
    """The acfb head with a bank window on CUDA = on the CPU (the bank path's gathers and masks)."""
    from acar_deploy.formats.manifest import BankGeometry
    from acar_deploy.model.acar import build_model
    from acar_deploy.model.config import get_config

    config = get_config("acfb_tiny")
    model = build_model(config).eval()
    clips, rois = _inputs(2, frames=int(config.input.num_frames))
    with torch.inference_mode():
        context = model.context(clips)
    torch.manual_seed(1)
    geometry = BankGeometry.for_head(asdict(config.head), tuple(context.shape[-2:]))
    entries = torch.randn(5, geometry.channels, *geometry.size).abs()
    window = torch.rand(len(rois), 5) > 0.3
    window[0] = False  # an actor with an empty window
    with torch.inference_mode():
        want = model.head(context, rois.clone(), entries, window)
        head = model.head.cuda()
        got = head(context.cuda(), rois.cuda(), entries.cuda(), window.cuda())
    assert _rel(got, want) < 1e-5
