"""TensorRT engines (need a CUDA GPU and the `[gpu]` extra; skipped elsewhere by conftest)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from engine_support import sample_feeds, write_npz_calibration

from acar_deploy.engines import (
    BuildSettings,
    EagerRunner,
    Int8Policy,
    RunnerOptions,
    ShapeRange,
    TrtPolicy,
    build_engine,
    open_runner,
)

pytestmark = [pytest.mark.gpu, pytest.mark.trt]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_export):
    pytest.importorskip("tensorrt")
    export = tiny_export
    root = tmp_path_factory.mktemp("trt")
    calib = write_npz_calibration(root / "calib", 3)
    trt_policy = TrtPolicy(rois=ShapeRange(1, 4, 16), clips=ShapeRange(1, 2, 4),
                           engine_cache_dir=root / "cache", timing_cache=root / "timing.cache")
    return export, root, calib, trt_policy


def build(setup, precision, name=None, **trt_changes):
    export, root, calib, trt_policy = setup
    settings = BuildSettings(export.export_dir, runtime="trt", precision=precision, force=True,
                             out_dir=root / (name or f"tiny-trt-{precision}"), trt=replace(trt_policy, **trt_changes),
                             int8=Int8Policy(calib_data=calib, calib_clips=6))
    return build_engine(settings, progress=False)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_trt_engine_matches_eager(setup, precision):
    export = setup[0]
    info = build(setup, precision)
    feeds = sample_feeds(np.random.default_rng(3), 3, [2, 0, 3])
    with EagerRunner.from_checkpoint(export.checkpoint) as eager:
        expected = eager.infer(feeds)
    with open_runner(info.path) as runner:
        got = runner.infer(feeds)
        assert runner.metadata["runtime"] == "trt" and runner.metadata["precision"] == precision
        assert set(runner.last_stage_times) >= {"h2d", "backbone", "head", "d2h"}
    scale = float(np.abs(expected["logits"]).max())
    # fp32 (TF32 off): float reordering only; fp16: 20 roundings of 2^-11 (see test_engines_fp16);
    # int8: a few percent of the logit range (see test_engines_int8)
    atol = {"fp32": 1e-4 + 1e-4 * scale, "fp16": 20 * 2.0**-11 * scale + 1e-5, "int8": 0.1 * scale}[precision]
    assert float(np.abs(got["logits"] - expected["logits"]).max()) <= atol


def test_trt_engine_cache_hits_and_rebuilds(setup):
    build(setup, "fp16", "cache-a")
    again = build(setup, "fp16", "cache-b")
    assert again.cache_hits and all(again.cache_hits.values())
    changed = build(setup, "fp16", "cache-c", rois=ShapeRange(1, 8, 16))
    assert changed.cache_hits["head"] is False and changed.cache_hits["backbone"] is True  # backbone has no rois


def test_trt_cuda_graph_replay_equals_direct_execution(setup):
    from acar_deploy.engines.runners.trt import TrtRunner

    info = build(setup, "fp32", "graphs")
    feeds = sample_feeds(np.random.default_rng(4), 2, [1, 2])
    with TrtRunner(info.path) as direct, TrtRunner(info.path, RunnerOptions(cuda_graph=True)) as graphed:
        expected = direct.infer(feeds)["logits"]
        for _ in range(2):  # capture, then replay
            np.testing.assert_allclose(graphed.infer(feeds)["logits"], expected, atol=1e-6, rtol=0)


def test_trt_zero_boxes_return_empty_without_running(setup):
    info = build(setup, "fp32", "empty")
    with open_runner(info.path) as runner:
        out = runner.infer({"clips": sample_feeds(np.random.default_rng(5), 1, [0])["clips"],
                            "rois": np.zeros((0, 5), np.float32)})
    assert out["logits"].shape == (0, 60) and runner.last_stage_times == {}
