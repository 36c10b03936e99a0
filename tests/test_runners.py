"""Runners: ONNX Runtime (split and fused) against eager PyTorch on the same checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
from engine_support import sample_feeds

from acar_deploy.engines import EagerRunner, OrtRunner, RunnerOptions, open_runner
from acar_deploy.errors import InputError


def reference_scores(logits: np.ndarray) -> np.ndarray:
    """The official activation written out: softmax over the 13 pose logits, sigmoid over the rest."""
    pose = np.exp(logits[:, :13].astype(np.float64))
    pose /= pose.sum(axis=1, keepdims=True)
    rest = 1.0 / (1.0 + np.exp(-logits[:, 13:].astype(np.float64)))
    return np.concatenate([pose, rest], axis=1)


@pytest.fixture(scope="module")
def export(tiny_export):
    return tiny_export


@pytest.fixture(scope="module")
def eager(export):
    with EagerRunner.from_checkpoint(export.checkpoint) as runner:
        yield runner


@pytest.mark.parametrize("graph", ["split", "fused"])
def test_ort_fp32_matches_eager(export, eager, graph):
    # Three clips, the middle one without boxes: relations must stay within each clip.
    feeds = sample_feeds(np.random.default_rng(1), 3, [2, 0, 3])
    expected = eager.infer(feeds)
    with open_runner(export.export_dir, RunnerOptions(graph=graph, threads=1)) as runner:
        got = runner.infer(feeds)
        assert runner.metadata["runtime"] == "ort" and runner.metadata["precision"] == "fp32"
        assert runner.metadata["provider"] == "CPUExecutionProvider"
        assert set(runner.last_stage_times) == ({"backbone", "head"} if graph == "split" else {"fused"})
        assert runner.last_inference_time >= sum(runner.last_stage_times.values())
    assert got["logits"].shape == (5, 60)
    np.testing.assert_allclose(got["logits"], expected["logits"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["scores"], expected["scores"], atol=1e-4, rtol=0)
    # The split graph has no `scores` output: the runner computes them with the official activation.
    np.testing.assert_allclose(got["scores"], reference_scores(got["logits"]), atol=1e-6, rtol=0)


def test_one_clip_alone_equals_the_same_clip_in_a_batch(export):
    """Boxes of other clips must not change a clip's logits (no relations across clips)."""
    feeds = sample_feeds(np.random.default_rng(2), 2, [2, 2])
    with OrtRunner(export.export_dir) as runner:
        both = runner.infer(feeds)
        first = runner.infer({"clips": feeds["clips"][:1], "rois": feeds["rois"][:2]})
    np.testing.assert_allclose(first["logits"], both["logits"][:2], atol=1e-5, rtol=0)


def test_zero_boxes_never_reach_the_graphs(export, eager, monkeypatch):
    feeds = {"clips": sample_feeds(np.random.default_rng(3), 1, [0])["clips"], "rois": np.zeros((0, 5), np.float32)}
    with OrtRunner(export.export_dir) as runner:
        calls = []
        monkeypatch.setattr(runner, "_run", lambda part, f: calls.append(part))
        out = runner.infer(feeds)
    assert calls == []
    assert out["logits"].shape == (0, 60) and out["scores"].shape == (0, 60)
    head_calls = []
    monkeypatch.setattr(eager.model.head, "forward", lambda *a: head_calls.append(a))
    assert eager.infer(feeds)["logits"].shape == (0, 60)
    assert head_calls == []


def test_infer_head_runs_the_head_alone(export, eager):
    import torch

    feeds = sample_feeds(np.random.default_rng(4), 2, [1, 2])
    with torch.inference_mode():
        context = eager.model.context(torch.from_numpy(feeds["clips"])).numpy()
    with OrtRunner(export.export_dir) as runner:
        full = runner.infer(feeds)
        assert runner.supports_head_only and runner.runtime.value == "ort" and runner.precision.value == "fp32"
        head = runner.infer_head(context, feeds["rois"])
        assert set(runner.last_stage_times) == {"head"}
    np.testing.assert_allclose(head["logits"], full["logits"], atol=1e-5, rtol=0)
    with OrtRunner(export.export_dir, RunnerOptions(graph="fused")) as fused, pytest.raises(InputError, match="fused"):
        assert not fused.supports_head_only
        fused.infer_head(context, feeds["rois"])


def test_bad_feeds_and_specs_are_input_errors(export, tmp_path):
    with OrtRunner(export.export_dir) as runner:
        clips = np.zeros((1, *runner.folder.parts["backbone"].shape_of("clips")[1:]), np.float32)
        with pytest.raises(InputError, match="batch indices"):
            runner.infer({"clips": clips, "rois": np.array([[1, 0, 0, 0.5, 0.5]], np.float32)})
        with pytest.raises(InputError, match=r"\[R, 5\]"):
            runner.infer({"clips": clips, "rois": np.zeros((2, 4), np.float32)})
    with pytest.raises(InputError, match="no manifest.json or engine.json"):
        open_runner(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        open_runner(tmp_path / "missing")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match=r"manifest.json:1"):
        open_runner(tmp_path)


def test_open_runner_eager_spec(export):
    feeds = sample_feeds(np.random.default_rng(6), 1, [2])
    with open_runner(f"eager:{export.checkpoint}:") as a, EagerRunner.from_checkpoint(export.checkpoint, "acar_tiny") as b:
        assert a.metadata["runtime"] == "eager"
        np.testing.assert_array_equal(a.infer(feeds)["logits"], b.infer(feeds)["logits"])
