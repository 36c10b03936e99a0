"""`bench` of an acfb model (bench/bank.py): the eager row is the ACFB head, rows match the request,
statistics and report numbers come from the recorded samples. No timing is asserted.

Eager-only (the K/V-precomputed eager row against the on-the-fly `EagerRunner`), so no export is
needed here; the same benchmark on an ORT export folder through the CLI is in test_acfb_export.py.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from acar_deploy.bench.bank import (
    BankBenchResult,
    EagerProjectedBankRunner,
    bank_geometry,
    benchmark_bank_runners,
    make_bank_inputs,
)
from acar_deploy.bench.results import EAGER, BenchSettings
from acar_deploy.engines.runners.eager import EagerRunner
from acar_deploy.errors import InputError

SIZE = (64, 64)


@pytest.fixture(scope="module")
def acfb_model():
    from acar_deploy.model.acar import build_model
    from acar_deploy.model.config import get_config

    torch.manual_seed(0)
    model = build_model(get_config("acfb_tiny")).eval()
    with torch.no_grad():  # away from torch's init, so that the bank's messages move the logits
        for layer in model.head.hr2o:
            layer.conv.weight.mul_(20.0)
    return model


def _settings(**kw) -> BenchSettings:
    base = dict(config="acfb_tiny", size=SIZE, actors=(2, 1), bank_entries=(0, 5), clips=2, warmup=0, iters=2,
                threads=1)
    return BenchSettings(**{**base, **kw})


def test_windows_give_each_box_the_entries_of_its_own_clip(acfb_model):
    inputs = make_bank_inputs(_settings(bank_entries=(3,), actors=(2,)), acfb_model.config)
    g = bank_geometry(acfb_model.config, SIZE)
    assert inputs.entries[3][0].shape == (6, g.channels, *g.size)  # B = 2 clips x M = 3
    expected = np.array([[1, 1, 1, 0, 0, 0]] * 2 + [[0, 0, 0, 1, 1, 1]] * 2, bool)  # hand-written, rois by clip
    np.testing.assert_array_equal(inputs.windows[(3, 2)], expected)
    assert not np.array_equal(inputs.entries[3][0], inputs.entries[3][1])  # the cold call always misses the cache


def test_eager_row_equals_acfb_head_forward(acfb_model):
    """project_bank once per entry + forward_projected (the bench's eager row) = ACFBHead.forward."""
    inputs = make_bank_inputs(_settings(bank_entries=(5,), actors=(2,)), acfb_model.config)
    entries, window, rois = inputs.entries[5][0], inputs.windows[(5, 2)], inputs.rois[2]
    feeds = {"clips": inputs.clips, "rois": rois, "bank_entries": entries, "bank_window": window}
    with torch.no_grad():
        context = acfb_model.context(torch.from_numpy(inputs.clips))
        expected = acfb_model.head(context, torch.from_numpy(rois.copy()), torch.from_numpy(entries),
                                   torch.from_numpy(window)).numpy()
        no_bank = acfb_model.head(context, torch.from_numpy(rois.copy()), torch.zeros(0, *entries.shape[1:]),
                                  torch.zeros(len(rois), 0, dtype=torch.bool)).numpy()
    assert np.abs(expected - no_bank).max() > 1e-3  # the bank matters for these feeds
    with EagerProjectedBankRunner(acfb_model) as runner:
        cold = runner.infer(feeds)["logits"]
        warm = runner.infer(feeds)["logits"]  # K/V from the runner's cache
        assert runner.bank_cache.projected == 10  # 2 clips x 5 entries, projected once
        assert set(runner.last_stage_times) == {"backbone", "bank_kv", "head"}
    np.testing.assert_allclose(cold, expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(warm, cold)


def _cell(row: str, index: int) -> str:
    return [c.strip() for c in row.strip().strip("|").split("|")][index]


def test_bank_results_match_the_request_and_the_report_matches_the_json(acfb_model, tmp_path):
    from acar_deploy.bench.report import report_files, write_bench_report

    settings = _settings()
    runners = {EAGER: EagerProjectedBankRunner(acfb_model), "on-the-fly": EagerRunner(acfb_model, name="on-the-fly")}
    result = benchmark_bank_runners(runners, settings, acfb_model.config, progress=False)
    assert isinstance(result, BankBenchResult) and result.iterations == 2
    for rt in result.runtimes:
        assert [(p.entries, p.actors) for p in rt.points] == [(0, 2), (0, 1), (5, 2), (5, 1)]
        for p in rt.points:
            samples = np.array(p.samples)
            assert len(samples) == result.iterations
            assert p.keyframe.mean == pytest.approx(samples.mean())
            assert p.keyframe.p50 == pytest.approx(np.median(samples))
            eager_point = result.runtime(EAGER).at(p.entries, p.actors)
            assert p.ratio_to_eager == pytest.approx(p.keyframe.mean / np.mean(eager_point.samples))
    eager = result.runtime(EAGER)
    assert list(eager.kv_per_entry) == [5]  # projection cost measured where there are entries
    assert result.runtime("on-the-fly").kv_per_entry == {}  # EagerRunner has no bank_kv stage

    out = write_bench_report(result, tmp_path / "bench")
    assert sorted(p.name for p in out.iterdir()) == sorted(report_files(result))
    data = json.loads((out / "results.json").read_text())
    assert data["settings"]["bank_entries"] == [0, 5]
    assert data["bank"]["entry_shape"] == [result.geometry.channels, *result.geometry.size]
    rows = [line for line in (out / "results.md").read_text().splitlines() if re.match(r"\| (eager|on-the-fly) \|", line)]
    assert len(rows) == 8
    for line in rows:  # every table number is the JSON's, in ms
        rt = next(r for r in data["runtimes"] if r["name"] == _cell(line, 0))
        point = next(p for p in rt["points"] if (p["entries"], p["actors"]) == (int(_cell(line, 1)), int(_cell(line, 2))))
        assert float(_cell(line, 3)) == pytest.approx(point["keyframe_s"]["mean"] * 1e3, abs=6e-4)
        assert float(_cell(line, 6)) == pytest.approx(point["head_s"]["mean"] * 1e3, abs=6e-4)
        kv = rt["kv_per_entry_s"].get(str(point["entries"]))
        if kv is not None and point["actors"] == 2:
            assert float(_cell(line, 10)) == pytest.approx(kv["mean"] * 1e3, abs=6e-4)
        else:
            assert _cell(line, 10) == "-"


def test_bank_settings_and_runners_are_checked(acfb_model):
    from acar_deploy.cli.bench import parse_actor_counts

    with pytest.raises(InputError, match="--bank-entries must be integers >= 0"):
        _settings(bank_entries=(-1, 4))
    with pytest.raises(InputError, match="--bank-entries has repeated"):
        _settings(bank_entries=(4, 4))
    with pytest.raises(InputError, match="--bank-entries 'a'"):
        parse_actor_counts("a", "--bank-entries", "0,8,32,64")

    class PlainRunner(EagerRunner):
        @property
        def supports_bank(self) -> bool:
            return False

    with pytest.raises(InputError, match="plain: this runner cannot run an acfb"):
        benchmark_bank_runners({EAGER: EagerProjectedBankRunner(acfb_model), "plain": PlainRunner(acfb_model, "plain")},
                               _settings(), acfb_model.config, progress=False)


def test_every_cold_call_projects_all_its_entries(acfb_model):
    """The bank_kv-per-entry figure comes from calls whose entries the runner has not seen: with one M,
    warm-up and timed iterations must alternate entry sets (an odd warm-up count included)."""
    runner = EagerProjectedBankRunner(acfb_model)
    settings = _settings(bank_entries=(5,), actors=(2,), warmup=1, iters=2)
    result = benchmark_bank_runners({EAGER: runner}, settings, acfb_model.config, progress=False)
    assert runner.bank_cache.projected == 3 * settings.clips * 5  # 1 warm-up + 2 timed cold calls, 10 entries each
    assert result.runtime(EAGER).kv_per_entry[5].n == 2
