"""`synth --temporal`: the event is labelled at every keyframe but only one keyframe's clip shows it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from acar_deploy.data.ava_csv import read_annotations
from acar_deploy.data.clips import ClipSpec, clip_frame_indices
from acar_deploy.data.synth import SCREEN_COLOUR, SCREEN_HEARD, WATCH, SynthSettings, synthesize
from acar_deploy.errors import InputError


def _screen_on(frame_path) -> bool:
    arr = np.asarray(Image.open(frame_path).convert("RGB"), np.float32)
    h, w = arr.shape[:2]
    patch = arr[int(0.05 * h): int(0.15 * h), int(0.06 * w): int(0.22 * w)].reshape(-1, 3).mean(0)
    return bool(np.abs(patch - np.array(SCREEN_COLOUR)).max() < 25)


def test_temporal_event_is_only_in_one_keyframe_clip(tmp_path):
    out = synthesize(SynthSettings(tmp_path / "t", videos=2, seconds=5, seed=4, width=64, height=48,
                                   frame_folders=True, temporal=True)).out_dir
    meta = json.loads((out / "dataset.json").read_text())
    assert {"id": WATCH, "name": "watch (e.g., TV)"} in meta["classes"]
    assert {"id": SCREEN_HEARD, "name": "listen (e.g., to music)"} in meta["classes"]
    assert meta["generator"]["temporal"] is True
    assert (out / "config_acfb.yaml").exists()
    rows = read_annotations(out / "train.csv")
    spec = ClipSpec.from_model_config(type("C", (), {"input": type("I", (), {
        "num_frames": 16, "short_side": 48, "norm_value": 255.0, "mean": (0.45,) * 3, "std": (0.225,) * 3})()})())
    for number, vid in enumerate(["synth000", "synth001"]):
        frames = sorted((out / "frames" / vid).glob("*.jpg"))
        on = [i + 1 for i, f in enumerate(frames) if _screen_on(f)]  # 1-based frame numbers
        part = rows if vid in meta["splits"]["train"] else read_annotations(out / "val.csv")
        mask = part.video_id == vid
        watch_ts = set(part.timestamp[mask & (part.action_id == WATCH)])
        heard = part.action_id == SCREEN_HEARD
        all_ts = set(part.timestamp[mask])
        if number % 2:  # no event: no screen, no label
            assert on == [] and watch_ts == set() and not (mask & heard).any()
            continue
        # the screen is on around one second r (10-14 of the 16 clip frames), labelled at every keyframe
        assert len(on) >= 20 and on == list(range(on[0], on[-1] + 1)) and watch_ts == all_ts and len(all_ts) == 4
        reveal = (on[0] + on[-1]) // 2 // 30
        assert len(set(clip_frame_indices(reveal, len(frames), spec)) & set(on)) >= 10
        seeing = [int(t) for t in all_ts
                  if set(clip_frame_indices(int(t), len(frames), spec)) & set(on)]
        assert seeing == [reveal]
        # listen (the TV's sound): every actor at r, nowhere else
        assert set(part.timestamp[mask & heard]) == {f"{reveal:04d}"}
        at_r = mask & (part.timestamp == f"{reveal:04d}")
        assert sorted(part.person_id[at_r & heard]) == sorted(set(part.person_id[at_r]))


def test_temporal_needs_five_seconds(tmp_path):
    with pytest.raises(InputError, match="--temporal"):
        synthesize(SynthSettings(tmp_path / "x", videos=2, seconds=4, temporal=True))


@pytest.mark.parametrize("seconds", [5, 6, 9])
def test_screen_frames_reach_only_the_clip_of_their_keyframe_for_every_position(seconds):
    """Also at the video edges, where the official centre crop shifts the clips of the first/last keyframe."""
    from acar_deploy.data.synth import FPS, screen_frames

    spec = ClipSpec(num_frames=32, step=2)  # the synthetic config: 16 frames at step 2
    frames = seconds * FPS
    for reveal in range(1, seconds):
        screen = set(screen_frames(reveal, seconds))
        seeing = [t for t in range(1, seconds) if set(clip_frame_indices(t, frames, spec)) & screen]
        assert seeing == [reveal], (seconds, reveal)
        # and the clip of r sees the screen in most of its frames
        assert len(set(clip_frame_indices(reveal, frames, spec)) & screen) >= 10, (seconds, reveal)


def test_event_video_and_its_twin_differ_only_while_the_screen_is_on(tmp_path):
    """Each event video has a twin with the same scene and labels minus watch and listen, so the label
    cannot be learnt from what a video looks like (background, actors), only from the event itself."""
    out = synthesize(SynthSettings(tmp_path / "t", videos=2, seconds=5, seed=3, width=64, height=48,
                                   frame_folders=True, temporal=True)).out_dir
    event = sorted((out / "frames" / "synth000").glob("*.jpg"))
    twin = sorted((out / "frames" / "synth001").glob("*.jpg"))
    differs = [i for i, (a, b) in enumerate(zip(event, twin, strict=True)) if a.read_bytes() != b.read_bytes()]
    on = [i for i, f in enumerate(event) if _screen_on(f)]
    assert len(on) >= 20 and differs == on
    rows = {}
    for part in ("train", "val"):
        table = read_annotations(out / f"{part}.csv")
        for vid in ("synth000", "synth001"):
            mask = (table.video_id == vid) & (table.action_id != WATCH) & (table.action_id != SCREEN_HEARD)
            if mask.any():
                rows[vid] = sorted(zip(table.timestamp[mask], table.action_id[mask], table.person_id[mask], strict=True))
    assert rows["synth000"] == rows["synth001"] and rows["synth000"]


def test_bank_config_and_its_baseline_share_the_continued_recipe(tmp_path):
    """The comparison is fair: config_acfb.yaml and config_continue.yaml differ only in the head's bank keys."""
    import yaml

    out = synthesize(SynthSettings(tmp_path / "t", videos=2, seconds=5, width=64, height=48, temporal=True)).out_dir
    acfb = yaml.safe_load((out / "config_acfb.yaml").read_text())
    plain = yaml.safe_load((out / "config_continue.yaml").read_text())
    scratch = yaml.safe_load((out / "config.yaml").read_text())
    assert acfb["train"] == plain["train"] and acfb["backbone"] == plain["backbone"] == scratch["backbone"]
    assert plain["head"] == scratch["head"] and plain["train"] != scratch["train"]
    assert {k: v for k, v in acfb["head"].items() if not k.startswith("bank_")} == {**plain["head"], "type": "acfb"}
    scheduler = plain["train"]["scheduler"]
    assert scheduler["base_lr"] == scheduler["warmup_lr"] and scheduler["milestone_epochs"] == []  # constant lr
    assert plain["train"]["freeze_backbone"] and not scratch["train"].get("freeze_backbone", False)  # head only
