"""Latency statistics against hand-computed values (numpy 'linear' percentile = type 7)."""

from __future__ import annotations

import math

import pytest

from acar_deploy.bench.environment import cpu_model, peak_rss_bytes, reset_peak_rss, rss_bytes
from acar_deploy.bench.stats import summarize


def test_percentiles_on_a_known_list():
    # sorted: 1 2 3 4 10; n - 1 = 4
    s = summarize([4.0, 1.0, 3.0, 10.0, 2.0])
    assert s.n == 5
    assert s.mean == pytest.approx(4.0)
    assert s.p50 == pytest.approx(3.0)  # rank 2.0 -> x2
    assert s.p90 == pytest.approx(7.6)  # rank 3.6 -> 4 + 0.6 * (10 - 4)
    assert s.p99 == pytest.approx(9.76)  # rank 3.96 -> 4 + 0.96 * 6
    assert s.min == 1.0 and s.max == 10.0
    # population std: deviations -3 -2 -1 0 6 -> (9+4+1+0+36)/5 = 10
    assert s.std == pytest.approx(math.sqrt(10.0))


def test_percentiles_even_count_interpolate_between_middle_samples():
    s = summarize([0.010, 0.020, 0.030, 0.040])
    assert s.p50 == pytest.approx(0.025)  # rank 1.5
    assert s.p90 == pytest.approx(0.037)  # rank 2.7 -> 0.03 + 0.7 * 0.01
    assert s.p99 == pytest.approx(0.0397)  # rank 2.97


def test_scaled_divides_every_time_statistic():
    s = summarize([2.0, 4.0]).scaled(0.5)
    assert (s.mean, s.p50, s.min, s.max, s.std) == pytest.approx((1.5, 1.5, 1.0, 2.0, 0.5))


def test_summarize_rejects_empty():
    with pytest.raises(ValueError):
        summarize([])


def test_cpu_model_reads_the_model_name_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Example CPU 9000\nflags\t: avx2\n")
    assert cpu_model(info) == "Example CPU 9000"


def test_peak_rss_follows_a_large_allocation():
    import numpy as np

    reset_peak_rss()
    before = peak_rss_bytes()
    block = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB, touched
    after = peak_rss_bytes()
    assert before is not None and after is not None
    assert after - before >= 60 * 2**20
    del block
    assert rss_bytes() is not None
