"""`detect` writes the scores the model gives on the same clip; rendering draws boxes and class names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from acar_deploy.data.synth import SynthSettings, synthesize


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, Path]:
    """A synthetic dataset and a (randomly initialised) checkpoint of its config."""
    from acar_deploy.model.acar import ACARModel
    from acar_deploy.model.checkpoint import save_checkpoint
    from acar_deploy.model.config import get_config

    root = synthesize(SynthSettings(tmp_path_factory.mktemp("d") / "s", videos=4, seconds=3, seed=2,
                                    frame_folders=True)).out_dir
    torch.manual_seed(0)
    model = ACARModel(get_config(root / "config.yaml"))
    ckpt = save_checkpoint(model, root.parent / "model.pt")
    return root, ckpt


def _direct_scores(root: Path, ckpt: Path, video: Path, video_id: str) -> dict[tuple[int, tuple], np.ndarray]:
    """The model called by hand: official clip for each keyframe, proposals >= 0.85 as rois."""
    from acar_deploy.data.ava_csv import read_proposals
    from acar_deploy.data.clips import ClipSpec, load_clip, open_frames
    from acar_deploy.model.checkpoint import load_model
    from acar_deploy.model.scores import action_scores

    model = load_model(ckpt)
    props = read_proposals(root / "val_proposals.csv")
    source = open_frames(video)
    out = {}
    for ts in sorted(set(props.timestamp[props.video_id == video_id].tolist())):
        sel = (props.video_id == video_id) & (props.timestamp == ts) & (props.score >= 0.85)
        boxes = props.boxes[sel]
        clip, _ = load_clip(source, float(ts), ClipSpec.from_model_config(model.config))
        rois = torch.tensor(np.concatenate([np.zeros((len(boxes), 1)), boxes], 1), dtype=torch.float32)
        with torch.no_grad():
            scores = action_scores(model(torch.from_numpy(clip)[None], rois)).numpy()
        for box, s in zip(boxes, scores, strict=True):
            out[(int(ts), tuple(np.round(box, 3)))] = s
    return out


@pytest.mark.parametrize("media", ["video", "frames"])
def test_detect_writes_the_scores_of_the_model_on_the_same_clip(synthetic, tmp_path, media):
    from acar_deploy.data.ava_csv import read_predictions
    from acar_deploy.data.dataset import model_class_ids
    from acar_deploy.detect import DetectSettings, detect

    root, ckpt = synthetic
    vid = "synth003"  # the val video
    path = root / "videos" / f"{vid}.mp4" if media == "video" else root / "frames" / vid
    result = detect(DetectSettings(checkpoint=ckpt, media=path, boxes=root / "val_proposals.csv",
                                   out=tmp_path / "pred.csv", render_dir=tmp_path / "render",
                                   labelmap=root / "labelmap.pbtxt"))
    expected = _direct_scores(root, ckpt, path, vid)
    pred = read_predictions(tmp_path / "pred.csv")
    ids = model_class_ids(60)
    assert len(pred) == len(expected) * 60 and result.boxes == len(expected)
    assert set(pred.video_id.tolist()) == {vid}
    for i in range(len(pred)):
        key = (int(pred.timestamp[i]), tuple(np.round(pred.boxes[i], 3)))
        want = expected[key][ids.index(int(pred.action_id[i]))]
        assert abs(pred.score[i] - want) <= 0.0005 + 1e-6  # written with 3 decimals
    assert [p.name for p in result.rendered] == [f"{vid}_0001.png", f"{vid}_0002.png"]


def test_render_keyframe_draws_boxes_and_top_class_names():
    from PIL import Image

    from acar_deploy.detect import BOX_COLOURS, render_keyframe

    frame = Image.new("RGB", (160, 120), (0, 0, 0))
    scores = np.zeros((1, 3), np.float32)
    scores[0] = [0.1, 0.9, 0.5]
    out = render_keyframe(frame, np.array([[0.25, 0.25, 0.75, 0.75]]), scores, [11, 12, 79],
                          {12: "stand", 79: "talk to"}, top_k=1, min_height=240)
    arr = np.asarray(out)
    assert out.size == (320, 240)  # upscaled to min_height
    assert tuple(arr[180, 160]) == BOX_COLOURS[0]  # bottom edge of the box, at 2x scale
    assert tuple(arr[120, 240]) == BOX_COLOURS[0]  # right edge
    # the label "stand 0.90" (top-1 among drawable classes) is drawn just above the box's top-left corner
    label = arr[40:60, 80:160].astype(int)
    assert (np.abs(label - BOX_COLOURS[0]).sum(-1) < 90).sum() > 20  # antialiased text in the box colour
    assert not (arr[62:119, 82:238] != 0).any()  # nothing drawn inside the box


def test_detect_cli_needs_exactly_one_input(synthetic, tmp_path):
    from typer.testing import CliRunner

    from acar_deploy.cli.main import app

    root, ckpt = synthetic
    runner = CliRunner()
    args = ["detect", "--checkpoint", str(ckpt), "--boxes", str(root / "val_proposals.csv"),
            "--out", str(tmp_path / "p.csv")]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "exactly one" in res.output
    res = runner.invoke(app, [*args, "--video", str(root / "videos" / "synth000.mp4"), "--video-id", "synth000"])
    # synth000 is a train video: val_proposals has no rows for it
    assert res.exit_code == 2 and "no boxes for video 'synth000'" in res.output
    res = runner.invoke(app, [*args, "--video", str(root / "videos" / "synth003.mp4"), "--render",
                              str(tmp_path / "keyframes.mp4"), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert '"boxes": 6' in res.output or '"keyframes": 2' in res.output
    from acar_deploy.data.clips import VideoFile

    assert VideoFile(tmp_path / "keyframes.mp4", fps=1).frame_count() == 2  # one frame per keyframe
