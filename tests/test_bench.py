"""`acar-deploy bench` on a tiny export: every reported field, eager baseline, ratios from the same run.

No timing is asserted: values are checked for consistency with each other and with independent
references (numpy percentiles over the recorded samples, FLOP formulas, the interleaving order).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from acar_deploy.bench.flops import count_flops
from acar_deploy.bench.inputs import context_shape, make_inputs, make_rois
from acar_deploy.bench.latency import benchmark_runners
from acar_deploy.bench.results import EAGER, BenchSettings
from acar_deploy.cli.main import app
from acar_deploy.engines.runners.base import Runner
from acar_deploy.errors import InputError
from acar_deploy.formats import Precision, Runtime

SIZE = (64, 64)


@pytest.fixture(scope="module")
def tiny_engines(tmp_path_factory):
    """An acar_tiny export (seeded random weights) and its ORT fp32 engine."""
    from acar_deploy.engines.build import build_engine
    from acar_deploy.engines.settings import BuildSettings
    from acar_deploy.export import ExportSettings, export_model

    root = tmp_path_factory.mktemp("bench")
    export = root / "export"
    export_model(export, None, "acar_tiny", ExportSettings(input_size=SIZE, validate=False), force=True)
    engine = root / "engine-fp32"
    build_engine(BuildSettings(export, precision="fp32", out_dir=engine), progress=False)
    return root, export, engine


def test_bench_cli_reports_every_field_with_ratios_from_the_same_run(tiny_engines):
    root, export, engine = tiny_engines
    out = root / "results"
    result = CliRunner().invoke(app, [
        "bench", str(engine), "--config", "acar_tiny", "--size", "64x64", "--actors", "3,1",
        "--iters", "3", "--warmup", "1", "--threads", "2", "--out", str(out), "--format", "json",
    ])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    printed = json.loads(result.stdout)
    assert printed["runtimes"] == data["runtimes"]

    names = [r["name"] for r in data["runtimes"]]
    assert names == [EAGER, "ort-fp32"]
    eager = data["runtimes"][0]
    for runtime in data["runtimes"]:
        assert [a["actors"] for a in runtime["by_actors"]] == [3, 1]
        for row, eager_row in zip(runtime["by_actors"], eager["by_actors"], strict=True):
            samples = np.array(row["samples_s"])
            assert len(samples) == data["iterations"] == 3
            lat = row["latency_s"]
            # statistics recomputed independently from the recorded samples
            assert lat["mean"] == pytest.approx(samples.mean())
            assert lat["p50"] == pytest.approx(np.median(samples))
            assert lat["p90"] == pytest.approx(np.quantile(samples, 0.9))
            assert lat["p99"] == pytest.approx(np.quantile(samples, 0.99))
            assert lat["min"] == pytest.approx(samples.min())
            assert lat["std"] == pytest.approx(samples.std())
            assert row["per_clip_s"]["mean"] == pytest.approx(lat["mean"])  # one clip per call
            assert row["throughput_clips_per_s"] == pytest.approx(1.0 / lat["mean"])
            # ratio to eager: this runtime's mean / eager's mean at the same actor count, same file
            assert row["ratio_to_eager"] == pytest.approx(lat["mean"] / eager_row["latency_s"]["mean"])
            assert row["ratio_to_eager_p50"] == pytest.approx(lat["p50"] / eager_row["latency_s"]["p50"])
            assert row["ratio_to_eager_min"] == pytest.approx(lat["min"] / eager_row["latency_s"]["min"])
            assert row["head_s"]["mean"] > 0
            assert row["head_per_actor_s"] == pytest.approx(row["head_s"]["mean"] / row["actors"])
        stages = runtime["stages_s"]
        assert {"preprocess", "backbone", "head", "other"} <= set(stages)
        assert stages["preprocess"] == pytest.approx(data["preprocess_s"]["mean"])
        assert set(runtime["gflops_per_s"]) == {"backbone", "head"}
        gflop = data["flops"]["backbone_gflop_per_clip"]
        assert runtime["gflops_per_s"]["backbone"] == pytest.approx(gflop / stages["backbone"])
        assert runtime["memory_bytes"]["peak_rss"] > 50 * 2**20
        head = [r["head_s"]["mean"] for r in runtime["by_actors"]]
        assert runtime["head_slope_s_per_actor"] == pytest.approx((head[0] - head[1]) / 2)
    assert eager["by_actors"][0]["ratio_to_eager"] == pytest.approx(1.0)

    env = data["environment"]
    assert env["threads"] == 2 and env["cpu_model"] and env["python"]
    assert env["versions"]["torch"] == torch.__version__.split("+")[0] or env["versions"]["torch"] == torch.__version__
    assert data["methodology"]["percentiles"].startswith("numpy.percentile method='linear'")
    markdown = (out / "results.md").read_text()
    assert "| eager | 3 |" in markdown and "| ort-fp32 | 1 |" in markdown
    for png in ("latency_vs_actors.png", "stages.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again = CliRunner().invoke(app, ["bench", str(engine), "--config", "acar_tiny", "--size", "64x64",
                                     "--iters", "1", "--out", str(out)])
    assert again.exit_code == 2
    assert "already exists" in again.stderr and "--force" in again.stderr


def test_bench_cli_rejects_bad_actor_list_in_one_line():
    result = CliRunner().invoke(app, ["bench", "nowhere", "--actors", "8,x"])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "--actors" in result.stderr


class _StandIn(Runner):
    """A runner over nothing that reports a fixed head time of `head_ms * actors`."""

    def __init__(self, name, calls, head_ms=1.0, head_only=True):
        super().__init__(name, 4, Runtime.EAGER, Precision.FP32)
        self.calls, self.head_ms, self.head_only = calls, head_ms, head_only

    @property
    def supports_head_only(self):
        return self.head_only

    def _activate(self):
        pass

    def _close(self):
        pass

    def _infer_split(self, clips, rois):
        self.calls.append(self.name)
        time.sleep(0.001)
        self.last_stage_times = {"head": self.head_ms * 1e-3 * rois.shape[0], "backbone": 0.001}
        return {"logits": np.zeros((rois.shape[0], 4), np.float32)}

    def _infer_head(self, context, rois):
        self.calls.append(self.name)
        self.last_stage_times = {"head": self.head_ms * 1e-3 * rois.shape[0]}
        return {"logits": np.zeros((rois.shape[0], 4), np.float32)}


class _Config:
    class backbone:
        context_channels = 6

    class input:
        num_frames = 8
        short_side = 32
        norm_value = 255.0
        mean = (0.45, 0.45, 0.45)
        std = (0.225, 0.225, 0.225)


def test_runtimes_are_interleaved_round_robin_with_rotating_start():
    calls: list[str] = []
    runners = {EAGER: _StandIn(EAGER, calls), "b": _StandIn("b", calls), "c": _StandIn("c", calls)}
    settings = BenchSettings(actors=(2,), size=(32, 32), warmup=1, iters=3, count_flops=False)
    result = benchmark_runners(runners, settings, _Config(), progress=False)
    timed = calls[-9:]  # warm-up ran each runtime alone first
    assert calls[:3] == [EAGER, "b", "c"]
    assert timed == [EAGER, "b", "c", "b", "c", EAGER, "c", EAGER, "b"]
    assert result.iterations == 3


def test_secondary_actor_counts_use_the_head_of_the_same_iteration():
    calls: list[str] = []
    runners = {EAGER: _StandIn(EAGER, calls, head_ms=2.0), "b": _StandIn("b", calls, head_only=False)}
    settings = BenchSettings(actors=(4, 1, 10), size=(32, 32), warmup=0, iters=4, count_flops=False)
    result = benchmark_runners(runners, settings, _Config(), progress=False)
    eager = result.runtime(EAGER)
    assert eager.head_only and eager.at(1).measured == "head-only"
    full = np.array(eager.at(4).samples)
    # full(4) - head(4) + head(A), with the stand-in's head = 2 ms * actors
    np.testing.assert_allclose(eager.at(1).samples, full - 0.008 + 0.002)
    np.testing.assert_allclose(eager.at(10).samples, full - 0.008 + 0.020)
    assert eager.head_slope_s_per_actor == pytest.approx(0.002)
    other = result.runtime("b")
    assert not other.head_only and other.at(10).measured == "full"
    assert any("b: no head-only path" in n for n in result.notes)


def test_flop_count_matches_the_formula_for_a_conv_and_a_linear():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(3, 6, kernel_size=1, bias=False)
            self.fc = torch.nn.Linear(6, 5, bias=False)

        def context(self, clips):
            return torch.nn.functional.adaptive_avg_pool2d(self.conv(clips).mean(2), (2, 2))

        def head(self, context, rois):
            return self.fc(context.mean((2, 3))[rois[:, 0].long()])

    settings = BenchSettings(actors=(3, 1), size=(32, 32), iters=1)
    flops = count_flops(Model(), make_inputs(settings, _Config()))
    assert flops.backbone_per_clip == 2 * 3 * 6 * (8 * 32 * 32)  # 1 MAC = 2 FLOP per output element
    assert flops.head_by_actors == {3: 2 * 6 * 5 * 3, 1: 2 * 6 * 5 * 1}
    assert flops.head_marginal_per_actor == 2 * 6 * 5


def test_context_shape_follows_four_ceil_halvings():
    assert context_shape(_Config(), 2, (256, 341)) == (2, 6, 16, 22)
    assert context_shape(_Config(), 1, (256, 454)) == (1, 6, 16, 29)


def test_make_rois_are_valid_normalised_boxes_per_clip():
    rois = make_rois(3, 4, np.random.default_rng(0))
    assert rois.shape == (12, 5)
    assert (np.bincount(rois[:, 0].astype(int)) == 4).all()
    assert (rois[:, 1] < rois[:, 3]).all() and (rois[:, 2] < rois[:, 4]).all()
    assert rois[:, 1:].min() >= 0 and rois[:, 1:].max() <= 1


@pytest.mark.parametrize("kwargs", [{"actors": ()}, {"actors": (0,)}, {"actors": (2, 2)}, {"iters": 0},
                                    {"seconds": -1.0}, {"threads": 0}, {"clips": 0}])
def test_settings_reject_bad_values(kwargs):
    with pytest.raises(InputError):
        BenchSettings(**kwargs)
