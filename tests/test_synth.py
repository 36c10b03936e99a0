"""Synthetic AVA data: labels follow the drawing rules, files are valid AVA, and the seed fixes everything."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from acar_deploy.data import synth
from acar_deploy.data.synth import (
    CARRY,
    LIE,
    LISTEN,
    SIT,
    STAND,
    TALK,
    WALK,
    WAVE,
    Actor,
    SynthSettings,
    synthesize,
)

W, H = 128, 96


def _actor(pose, x0, facing, carry=False, wave=False, speed=0.0, colour=(200, 60, 60)):
    w, h = synth.POSE_SHAPES[pose]
    return Actor(pose=pose, colour=colour, x0=x0, bottom=90.0, facing=facing, carry=carry, wave=wave,
                 speed=speed, size=(w * H, h * H))


def test_labels_follow_the_visual_rules():
    actors = [
        _actor(STAND, 20, facing=+1, carry=True),  # faces right: nearest on the right is actor 1
        _actor(SIT, 60, facing=-1),  # faces left: talks to actor 0
        _actor(LIE, 110, facing=+1, wave=True),  # faces right: nobody there
    ]
    labels = synth.actor_labels(actors, 1.0, W, H)
    assert labels == [
        sorted([STAND, CARRY, TALK, LISTEN]),  # actor 1 faces it
        sorted([SIT, TALK, LISTEN]),  # actor 0 faces it
        sorted([LIE, WAVE]),
    ]


def test_listener_is_only_the_nearest_actor_faced():
    actors = [_actor(STAND, 10, +1), _actor(STAND, 50, +1), _actor(STAND, 90, +1)]
    # 0 faces 1 and 2 (1 is nearer), 1 faces 2, 2 faces nobody
    assert synth.actor_labels(actors, 0.0, W, H) == [[STAND, TALK], [STAND, LISTEN, TALK], [STAND, LISTEN]]


def test_walkers_move_and_stay_in_the_frame():
    a = _actor(WALK, 40, +1, speed=8.0)
    x1_0, _, x2_0, _ = a.box(0.0, W, H)
    x1_2, _, x2_2, _ = a.box(2.0, W, H)
    assert (x1_2 - x1_0, x2_2 - x2_0) == pytest.approx((16.0, 16.0))
    rng = np.random.default_rng(5)
    for _ in range(50):
        for actor in synth._make_actors(rng, W, H, seconds=4):
            for t in (0.0, 4.0):
                x1, _, x2, _ = actor.box(t, W, H)
                assert x2 - x1 == pytest.approx(actor.size[0])  # never clipped by the frame edge


def test_rendered_pixels_show_pose_facing_and_object():
    bg = np.zeros((H, W, 3), np.float32)
    a = _actor(STAND, 40, facing=+1, carry=True, colour=(60, 160, 70))
    frame = synth.render_frame([a], bg, 0.0)
    x1, y1, x2, y2 = (int(round(v)) for v in a.box(0.0, W, H))
    assert tuple(frame[y2 - 2, x1 + 1]) == (60, 160, 70)  # body colour at the feet
    assert tuple(frame[y1, x2 - 1]) == (250, 250, 250)  # head marker on the right (facing) side
    assert tuple(frame[y1, x1]) == (60, 160, 70)  # not on the left
    assert tuple(frame[(y1 + y2) // 2 + 1, (x1 + x2) // 2]) == (245, 225, 30)  # carried object
    assert tuple(frame[y1 - 1, x1]) == (0, 0, 0) and tuple(frame[y2, x1]) == (0, 0, 0)  # box is tight


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_dataset_files_are_valid_ava_and_deterministic(tmp_path):
    from acar_deploy.data.ava_csv import read_annotations, read_exclusions, read_proposals
    from acar_deploy.data.clips import VideoFile
    from acar_deploy.data.dataset import box_iou, load_dataset
    from acar_deploy.data.labelmap import read_labelmap
    from acar_deploy.model.config import get_config
    from acar_deploy.train.config import load_train_config

    settings = SynthSettings(tmp_path / "a", videos=4, seconds=3, seed=11)
    result = synthesize(settings)
    again = synthesize(SynthSettings(tmp_path / "b", videos=4, seconds=3, seed=11))
    other = synthesize(SynthSettings(tmp_path / "c", videos=4, seconds=3, seed=12))
    assert _digest(result.out_dir) == _digest(again.out_dir)
    assert _digest(result.out_dir)["train.csv"] != _digest(other.out_dir)["train.csv"]

    root = result.out_dir
    assert read_labelmap(root / "labelmap.pbtxt").as_dict() == synth.SYNTH_CLASSES
    gt = read_annotations(root / "val.csv")
    props = read_proposals(root / "val_proposals.csv")
    assert set(gt.action_id.tolist()) <= set(synth.SYNTH_CLASSES)
    assert len(read_exclusions(root / "val_excluded_timestamps.csv")) == 1
    # every ground-truth box has a proposal >= 0.85 with IoU >= 0.5; false positives score < 0.85
    for vid, ts, box in zip(gt.video_id, gt.timestamp, gt.boxes, strict=True):
        same = (props.video_id == vid) & (props.timestamp == ts)
        iou = box_iou(box[None], props.boxes[same])[0]
        assert (props.score[same][iou >= 0.5] >= 0.85).any()
    assert (props.score < 0.85).sum() > 0
    # one keyframe per second, 1 .. seconds-1; 4-digit timestamps as in AVA
    assert sorted(set(gt.timestamp.tolist())) == ["0001", "0002"]
    # videos: 30 fps, the requested length and size
    video = VideoFile(root / "videos" / "synth003.mp4")
    assert video.frame_count() == 90 and (video.width, video.height) == (128, 96)
    # the layout, model config and training recipe load
    data = load_dataset(root)
    assert data.has_val and len(data.train_keyframes()) == 3 * 2
    config = get_config(root / "config.yaml")
    assert config.head.num_classes == 60 and config.input.short_side == synth.synth_config_dict()["input"]["short_side"]
    assert load_train_config(root / "config.yaml").batch_size == synth.synth_config_dict()["train"]["batch_size"]


def test_decoded_video_matches_the_annotated_boxes(tmp_path):
    """The pixels inside each annotated box at its keyframe are the actor's (lossy codec: approximately)."""
    from acar_deploy.data.ava_csv import read_annotations
    from acar_deploy.data.clips import VideoFile, keyframe_index

    root = synthesize(SynthSettings(tmp_path / "d", videos=2, seconds=3, seed=3)).out_dir
    gt = read_annotations(root / "train.csv")
    video = VideoFile(root / "videos" / "synth000.mp4")
    rows = np.flatnonzero(gt.video_id == "synth000")
    for i in rows:
        (frame,) = video.read([keyframe_index(float(gt.timestamp[i]))])
        arr = np.asarray(frame, np.float32)
        x1, y1, x2, y2 = gt.boxes[i] * [128, 96, 128, 96]
        inner = arr[int(y2) - 3, int(x1) + 2 : int(x2) - 2]  # a row just above the feet
        assert inner.std(axis=0).max() < 12  # one flat body colour, not background texture
        assert np.abs(inner.mean(0)[None] - np.asarray(synth.BODY_COLOURS)).sum(1).min() < 40


def test_cli_synth_writes_and_refuses_to_overwrite(tmp_path):
    from typer.testing import CliRunner

    from acar_deploy.cli.main import app

    runner = CliRunner()
    out = tmp_path / "s"
    res = runner.invoke(app, ["synth", str(out), "--videos", "2", "--video-seconds", "3", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert (out / "dataset.json").is_file()
    res = runner.invoke(app, ["synth", str(out), "--videos", "2", "--video-seconds", "3"])
    assert res.exit_code == 2 and "--force" in res.output
    res = runner.invoke(app, ["synth", str(tmp_path / "t"), "--size", "big"])
    assert res.exit_code == 2 and "HEIGHTxWIDTH" in res.output


def test_the_synth_model_config_is_acar_tiny_at_16_frames_and_96_pixels():
    """data/ writes the config without importing the model; it must not drift from acar_tiny."""
    from dataclasses import replace

    from acar_deploy.model.config import BUILTIN_CONFIGS, ModelConfig

    tiny = BUILTIN_CONFIGS["acar_tiny"]
    want = replace(tiny, input=replace(tiny.input, num_frames=16, short_side=96), name="acar_tiny_synth")
    assert ModelConfig.from_dict(synth.SYNTH_MODEL_CONFIG, source="synth") == want
    assert synth.SYNTH_MODEL_CONFIG == want.to_dict()


def test_the_synth_acfb_head_settings_are_the_config_defaults():
    from acar_deploy.model.config import HeadConfig

    defaults = HeadConfig()
    assert synth.SYNTH_ACFB_HEAD == {"type": "acfb", "bank_window": defaults.bank_window,
                                     "bank_causal": defaults.bank_causal, "bank_precision": defaults.bank_precision}
