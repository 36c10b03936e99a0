"""Real-size check: ACAR R50 from a checkpoint in the official model-zoo layout (flat DDP state_dict,
legacy torch serialisation) exports to a fused graph that gives the eager logits.

Kept to one export at a small frame size (128x171) and one comparison (R=3, B=1): the R50 export
is the slowest step of the suite on 2 cores.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from acar_deploy.export import ExportSettings, Parts, export_model
from acar_deploy.export.specs import Normalization, random_clips, random_rois
from acar_deploy.model import build_model

SIZE = (128, 171)


@pytest.mark.slow
def test_r50_fused_graph_from_a_zoo_checkpoint_gives_the_eager_logits(tmp_path):
    torch.manual_seed(0)
    model = build_model("acar_r50")
    with torch.no_grad():
        model.head.fc2.weight.mul_(30.0)  # random-init R50 logits are tiny; make the comparison meaningful
    zoo = {f"module.{part}.module.{key[len(part) + 1:]}": value
           for key, value in model.state_dict().items()
           for part in ("backbone", "head") if key.startswith(part + ".")}
    assert len(zoo) == 677  # the official R50 ACAR zoo file holds 677 tensors
    checkpoint = tmp_path / "AVA_SLOWFAST_R50_ACAR_HR2O.pth.tar"
    torch.save(zoo, checkpoint, _use_new_zipfile_serialization=False)

    settings = ExportSettings(parts=Parts.fused, input_size=SIZE, validate=False)
    result = export_model(tmp_path / "r50", checkpoint, "acar_r50", settings)

    rng = np.random.default_rng(0)
    clips = random_clips(rng, 1, SIZE, Normalization())
    rois = random_rois(rng, 3, 1)
    with torch.inference_mode():
        want = model(torch.from_numpy(clips), torch.from_numpy(rois)).numpy()
    session = ort.InferenceSession(str(result.files["fused"]), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"clips": clips, "rois": rois})
    assert want.std() > 0.1
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))
    assert result.manifest["parts"]["fused"]["outputs"][0]["shape"] == ["R", 60]
    assert result.manifest["parts"]["fused"]["inputs"][0]["shape"] == ["B", 3, 32, 128, 171]
