"""`bench --bank`: one video of a real bank replayed keyframe by keyframe (bench/bank_replay.py).

Window sizes and the entries new to each window are checked against hand-counted values; the K/V
cache must project exactly those; report numbers come from the recorded samples. No timing is asserted.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bank_support import write_bank

from acar_deploy.bench.bank import EagerProjectedBankRunner, bank_geometry, benchmark_bank_runners
from acar_deploy.bench.bank_replay import open_replay_bank, replay_keyframes, replay_video, run_replay
from acar_deploy.bench.report import markdown_report
from acar_deploy.bench.results import EAGER, BenchSettings
from acar_deploy.engines.runners.eager import EagerRunner
from acar_deploy.errors import InputError

SIZE = (64, 64)


@pytest.fixture(scope="module")
def acfb_model():
    from acar_deploy.model.acar import build_model
    from acar_deploy.model.config import get_config

    torch.manual_seed(0)
    return build_model(get_config("acfb_tiny")).eval()


@pytest.fixture
def bank(tmp_path, acfb_model):
    g = bank_geometry(acfb_model.config, SIZE)
    return write_bank(tmp_path / "bank", (g.channels, *g.size))


@pytest.mark.parametrize("causal, expected", [
    # (timestamp, actors, M, new entries), counted by hand from TIMESTAMPS with w = 1
    (False, [(0, 2, 3, 3), (1, 1, 6, 3), (2, 3, 4, 0), (4, 1, 2, 2), (5, 1, 2, 0)]),
    (True, [(0, 2, 2, 2), (1, 1, 3, 1), (2, 3, 4, 3), (4, 1, 1, 1), (5, 1, 2, 1)]),
])
def test_keyframes_carry_the_window_the_model_reads(bank, acfb_model, causal, expected):
    feature_bank = open_replay_bank(bank, bank_geometry(acfb_model.config, SIZE))
    plan = replay_keyframes(feature_bank, "v", 1, causal)
    assert [(k.timestamp, k.actors, k.entries, k.new_entries) for k, _, _ in plan] == expected
    keyframe, entries, rois = plan[2]  # t = 2: its 3 boxes as actors of clip 0, entries in time order
    assert entries.dtype == np.float32 and len(entries) == keyframe.entries
    features, index = feature_bank.arrays("v")
    np.testing.assert_array_equal(rois[:, 0], 0)
    np.testing.assert_array_equal(rois[:, 1:], index["box"][3:6])
    # both windows of t = 2 ([1, 3] and [1, 2]) start at second 1, row 2
    np.testing.assert_array_equal(entries, features[2:2 + keyframe.entries].astype(np.float32))


def test_replay_projects_only_the_entries_new_to_each_window(bank, acfb_model):
    feature_bank = open_replay_bank(bank, bank_geometry(acfb_model.config, SIZE))
    clip = np.random.default_rng(1).standard_normal((1, 3, int(acfb_model.config.input.num_frames), *SIZE),
                                                    dtype=np.float32)
    with EagerProjectedBankRunner(acfb_model) as runner:
        result = run_replay({EAGER: runner}, feature_bank, "v", 1, False, clip, warmup=1)
        # warm-up: keyframe 0's 3 entries; then the walk from a cold cache: 3 + 3 + 0 + 2 + 0 (hand-counted)
        assert runner.bank_cache.projected == 3 + (3 + 3 + 0 + 2 + 0)
    eager = result.runtime(EAGER)
    assert len(eager.samples) == 5 and eager.ratio_to_eager == pytest.approx(1.0)
    assert eager.keyframe.mean == pytest.approx(np.mean(eager.samples))
    assert eager.kv_stage is not None and eager.kv_stage.max <= eager.keyframe.max


def test_bench_with_a_bank_reports_the_replay(bank, acfb_model):
    settings = BenchSettings(config="acfb_tiny", size=SIZE, actors=(2,), bank_entries=(3,), clips=1, warmup=0,
                             iters=1, threads=1, bank=bank, bank_keyframes=4)
    runners = {EAGER: EagerProjectedBankRunner(acfb_model), "on_the_fly": EagerRunner(acfb_model, "on_the_fly")}
    result = benchmark_bank_runners(runners, settings, acfb_model.config, progress=False)
    replay = result.replay
    assert replay is not None and replay.video == "v" and (replay.half_width, replay.causal) == (10, False)
    # acfb_tiny's w = 10 covers the whole 6 s video: all 8 entries at every keyframe, new only at the first
    assert [(k.timestamp, k.entries, k.new_entries) for k in replay.keyframes] == [(0, 8, 8), (1, 8, 0),
                                                                                   (2, 8, 0), (4, 8, 0)]
    report = markdown_report(result)
    assert "## Replay of a real bank: video `v`" in report
    section = report.split("## Replay of a real bank", 1)[1].split("\n## ", 1)[0]
    assert "4 keyframes" in section and "M = 8..8 entries (mean 8.0), 2.0 new per keyframe" in section
    fly = replay.runtime("on_the_fly")
    row = next(line for line in section.splitlines() if line.startswith("| on_the_fly |"))
    assert f"| {fly.keyframe.mean * 1e3:.1f} | {fly.keyframe.p50 * 1e3:.1f} |" in row
    assert f"| {fly.ratio_to_eager:.3f} |" in row
    assert result.to_dict()["replay"]["keyframes"][0] == {"timestamp": 0, "actors": 2, "entries": 8, "new_entries": 8}


def test_bad_bank_inputs_are_named(tmp_path, acfb_model):
    g = bank_geometry(acfb_model.config, SIZE)
    wrong = write_bank(tmp_path / "wrong", (g.channels + 1, *g.size))
    with pytest.raises(InputError, match=r"bank\.json: field 'feature_shape'"):
        open_replay_bank(wrong, g)
    good = open_replay_bank(write_bank(tmp_path / "good", (g.channels, *g.size), videos=("a", "b")), g)
    assert replay_video(good, None) == "b"  # equal entries: the last id, deterministic
    with pytest.raises(InputError, match=r"bank\.json: field 'videos' has no video 'c'"):
        replay_video(good, "c")
    with pytest.raises(InputError, match="need --bank"):
        BenchSettings(bank_video="a")
    with pytest.raises(InputError, match="--bank-keyframes must be >= 1"):
        BenchSettings(bank=tmp_path, bank_keyframes=0)


def test_bank_for_a_model_without_bank_head_is_refused(tmp_path):
    from acar_deploy.bench.latency import run_benchmark

    settings = BenchSettings(config="acar_tiny", size=SIZE, actors=(1,), iters=1, warmup=0, threads=1,
                             count_flops=False, bank=tmp_path)
    with pytest.raises(InputError, match=r"has no bank head \(head.type 'acar'\)"):
        run_benchmark(settings, progress=False)
