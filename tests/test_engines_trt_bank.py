"""TensorRT engines of an acfb export (need a CUDA GPU and the `[gpu]` extra; skipped elsewhere by conftest).

Not run on the project's CPU machines: there the TensorRT bank path is checked by
tests/tensorrt_api (build calls against the real bindings) and by test_acfb_export.py (the runner's
plumbing with ONNX Runtime standing in for the plans). This file is what a GPU machine executes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from acar_deploy.errors import InputError

pytestmark = [pytest.mark.gpu, pytest.mark.trt]
FP16_EPS = 2.0**-11


@pytest.fixture(scope="module")
def acfb_trt(tmp_path_factory):
    pytest.importorskip("tensorrt")
    from acar_deploy.export.exporter import ExportSettings, export_model
    from acar_deploy.model.acar import build_model
    from acar_deploy.model.checkpoint import save_checkpoint
    from acar_deploy.model.config import get_config

    root = tmp_path_factory.mktemp("trtbank")
    torch.manual_seed(0)
    model = build_model(get_config("acfb_tiny")).eval()
    with torch.no_grad():  # so that the bank's messages move the logits
        for layer in model.head.hr2o:
            layer.conv.weight.mul_(20.0)
    ckpt = save_checkpoint(model, root / "acfb.pt")
    export_model(root / "export", ckpt, None, ExportSettings(input_size=(64, 64), validate=False))
    return root, model, root / "export"


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_trt_bank_engine_equals_eager(acfb_trt, precision):
    from acar_deploy.engines import BuildSettings, ShapeRange, TrtPolicy, build_engine
    from acar_deploy.engines.runners.eager import EagerRunner
    from acar_deploy.engines.runners.trt import TrtRunner
    from acar_deploy.export.specs import make_spec, random_bank_entries, random_rois
    from acar_deploy.formats import ExportManifest

    root, model, export = acfb_trt
    policy = TrtPolicy(bank_entries=ShapeRange(1, 8, 16), engine_cache_dir=root / "cache", timing_cache=None)
    engine = build_engine(BuildSettings(export, runtime="trt", precision=precision, trt=policy, force=True,
                                        out_dir=root / f"trt-{precision}"), progress=False).path
    geometry = ExportManifest.load(export).geometry()
    rng = np.random.default_rng(2)
    clips = make_spec("backbone", geometry).example_inputs(rng, 1, 1)["clips"]
    bank = random_bank_entries(rng, 20, (geometry.bank.channels, *geometry.bank.size))
    rois = random_rois(rng, 3, 1)
    with TrtRunner(engine) as runner, EagerRunner(model) as eager:
        for lo, hi in ((0, 6), (2, 8), (0, 0)):
            feeds = {"clips": clips, "rois": rois, "bank_entries": bank[lo:hi], "bank_window": np.ones((3, hi - lo), bool)}
            got, want = runner.infer(feeds)["logits"], eager.infer(feeds)["logits"]
            scale = float(np.abs(want).max())
            atol = 1e-3 * scale + 1e-5 if precision == "fp32" else 20 * FP16_EPS * scale + 1e-5  # fp32: TF32 off
            assert float(np.abs(got - want).max()) <= atol
        assert runner.bank_cache.projected == 9  # 6 + 2 new + the empty window's masked entry
        with pytest.raises(InputError, match="--bank-profile"):  # M = 20 > the profile's 16
            runner.infer({**feeds, "bank_entries": bank, "bank_window": np.ones((3, 20), bool)})
