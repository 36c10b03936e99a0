"""Checkpoints that are not checkpoints, truncated, or hold NaN/Inf; non-finite runner outputs."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from acar_deploy.engines.runners.base import Runner, warn_non_finite
from acar_deploy.errors import InputError
from acar_deploy.formats import Precision, Runtime
from acar_deploy.model import load_model, save_checkpoint
from acar_deploy.model.checkpoint import check_finite_weights

from .conftest import SIZE_HW, assert_one_line_error, run_cli

NOT_CHECKPOINTS = {
    "one-letter": b"a",
    "two-letters": b"ab",
    "pickle-stop": b".",
    "pickle-opcode": b"K",
    "empty": b"",
    "text": b"hello world\n",
    "zip-magic-only": b"PK\x03\x04",
    "pickle-proto": b"\x80\x02",
    "random": bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8)),
}


@pytest.mark.parametrize("content", NOT_CHECKPOINTS.values(), ids=NOT_CHECKPOINTS.keys())
def test_info_on_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path, content):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    result = run_cli("info", path, "--config", "acar_tiny")
    assert_one_line_error(result, 2, str(path))


def test_info_on_a_truncated_checkpoint_is_one_line(world, tmp_path):
    path = tmp_path / "half.pt"
    data = world.checkpoint.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_one_line_error(run_cli("info", path), 2, str(path))


@pytest.fixture(scope="module")
def nan_checkpoint(world, tmp_path_factory):
    model = load_model(world.checkpoint)
    with torch.no_grad():
        model.head.fc2.weight[0, 0] = float("nan")
        model.backbone.state_dict()[next(iter(model.backbone.state_dict()))].view(-1)[0] = float("inf")
    return save_checkpoint(model, tmp_path_factory.mktemp("nan") / "nan.pt")


def test_info_refuses_nan_weights_naming_the_tensor(nan_checkpoint):
    line = assert_one_line_error(run_cli("info", nan_checkpoint), 2, str(nan_checkpoint), "NaN/Inf")
    assert "'backbone." in line or "'head.fc2.weight'" in line


def test_detect_refuses_nan_weights_and_writes_nothing(world, nan_checkpoint, tmp_path):
    out = tmp_path / "pred.csv"
    result = run_cli("detect", "--checkpoint", nan_checkpoint, "--video", world.video, "--boxes", world.boxes,
                     "--out", out)
    assert_one_line_error(result, 2, str(nan_checkpoint), "NaN/Inf")
    assert not out.exists()


def test_export_refuses_nan_weights(nan_checkpoint, tmp_path):
    out = tmp_path / "export"
    result = run_cli("export", "--checkpoint", nan_checkpoint, "--out", out, "--size", f"{SIZE_HW[0]}x{SIZE_HW[1]}")
    assert_one_line_error(result, 2, str(nan_checkpoint))
    assert not out.exists()


def test_train_init_refuses_nan_weights(world, nan_checkpoint, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "--config", world.config, "--data", world.data, "--out", out, "--init", nan_checkpoint,
                     "--epochs", "1", "--no-val")
    assert_one_line_error(result, 2, str(nan_checkpoint), "NaN/Inf")
    assert not out.exists()


def test_check_finite_weights_accepts_finite_and_integer_tensors():
    check_finite_weights({"w": torch.ones(3), "n": torch.tensor(7), "i": torch.zeros(2, dtype=torch.int64)}, "x.pt")
    with pytest.raises(InputError, match=r"x.pt: weight 'b' holds 1 NaN/Inf values of 2"):
        check_finite_weights({"a": torch.ones(2), "b": torch.tensor([1.0, float("-inf")])}, "x.pt")


class _NanRunner(Runner):
    """A runner whose graph returns NaN logits for the first box (an fp16 overflow, say)."""

    def _activate(self):
        pass

    def _close(self):
        pass

    def _infer_split(self, clips, rois):
        logits = np.zeros((rois.shape[0], self.num_classes), np.float32)
        logits[0, 0] = np.nan
        return {"logits": logits}


def test_non_finite_runner_outputs_warn_once(caplog):
    runner = _NanRunner("nan-engine", num_classes=4, runtime=Runtime.ORT, precision=Precision.FP16)
    feeds = {"clips": np.zeros((1, 3, 2, 4, 4), np.float32), "rois": np.array([[0, 0, 0, 1, 1]], np.float32)}
    with caplog.at_level(logging.WARNING, logger="acar_deploy"):
        out1 = runner.infer(feeds)
        runner.infer(feeds)
    warnings = [r for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(warnings) == 1 and "nan-engine" in warnings[0].getMessage()
    assert np.isnan(out1["scores"][0, 0])  # reported, not hidden: the caller still sees the NaN


def test_warn_non_finite_counts_the_bad_values(caplog):
    with caplog.at_level(logging.WARNING, logger="acar_deploy"):
        assert not warn_non_finite(np.ones(5), "ok")
        assert warn_non_finite(np.array([1.0, np.inf, np.nan]), "bad")
    assert "2 non-finite (NaN/Inf) output values of 3" in caplog.text
