"""`event_separation`: the extractor's watch score at the event keyframe r, event video minus twin."""

from __future__ import annotations

import pytest

from acar_deploy.data.synth import WATCH, event_keyframe


def test_event_separation_hand_computed(tmp_path):
    from acar_deploy.train.bank_gain import event_separation

    seed, seconds = 5, 6
    r = {n: event_keyframe(seed, n, seconds) for n in (2, 4)}
    rows = []
    scores = {  # (video, t) -> watch scores of its boxes; event videos 2 and 4, twins 3 and 5
        ("synth002", r[2]): [0.9, 0.7], ("synth003", r[2]): [0.5, 0.5],  # gap 0.8 - 0.5 = 0.3
        ("synth004", r[4]): [0.6], ("synth005", r[4]): [0.7],  # gap -0.1
        ("synth002", 1 if r[2] != 1 else 2): [0.99],  # not r: ignored
    }
    for (video, t), values in scores.items():
        for i, v in enumerate(values):
            box = f"0.{i}00,0.100,0.{i}50,0.900"
            rows += [f"{video},{t:04d},{box},{WATCH},{v:.3f}", f"{video},{t:04d},{box},12,0.100"]
    path = tmp_path / "pred.csv"
    path.write_text("\n".join(rows) + "\n")
    assert event_separation(path, seed, seconds) == pytest.approx((0.3 - 0.1) / 2)
    path.write_text("\n".join(r for r in rows if not r.startswith("synth005")) + "\n")  # pair 4 incomplete
    assert event_separation(path, seed, seconds) == pytest.approx(0.3)
    path.write_text(f"synth003,0001,0.1,0.1,0.5,0.9,{WATCH},0.5\n")  # no event video
    assert event_separation(path, seed, seconds) is None
