"""Clip sampling, resizing, normalisation, frame sources and keyframe samples against hand-made references."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from acar_deploy.data.clips import (
    ClipSpec,
    FrameFolder,
    VideoFile,
    clip_frame_indices,
    frames_to_clip,
    keyframe_index,
    pad_batch,
    scaled_size,
    temporal_center_crop,
)
from acar_deploy.data.dataset import (
    Keyframe,
    KeyframeDataset,
    boxes_after_augmentation,
    collate_keyframes,
    inference_keyframes,
    jitter_boxes,
    multi_hot,
    training_keyframes,
)


def test_keyframe_index_is_one_based_at_30_fps():
    assert keyframe_index(0.0) == 1
    assert keyframe_index(2.0) == 61
    # AVA frame folders start at second 900: keyframe 902 is frame 61
    assert keyframe_index(902, start_seconds=900) == 61


def test_clip_indices_in_the_middle_of_a_long_video():
    # window 61-45 .. 61+45 = 16..106 (91 frames); centre index 45 -> begin 13 -> frames 29..92, every 2nd
    assert clip_frame_indices(2.0, frame_count=27000) == list(range(29, 93, 2))


def test_clip_indices_near_the_start():
    # 120 frames, keyframe at 1 s = frame 31: window clipped to 1..76 (76 frames);
    # centre index 38 -> begin 6 -> frames 7..70, every 2nd
    expected = [7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31, 33, 35, 37,
                39, 41, 43, 45, 47, 49, 51, 53, 55, 57, 59, 61, 63, 65, 67, 69]
    assert clip_frame_indices(1.0, frame_count=120) == expected


def test_clip_indices_near_the_end():
    # 120 frames, keyframe at 3 s = frame 91: window 46..120 (75 frames); centre 37 -> begin 5 -> 51..114
    expected = [51, 53, 55, 57, 59, 61, 63, 65, 67, 69, 71, 73, 75, 77, 79, 81,
                83, 85, 87, 89, 91, 93, 95, 97, 99, 101, 103, 105, 107, 109, 111, 113]
    assert clip_frame_indices(3.0, frame_count=120) == expected


def test_short_window_is_looped_from_its_start():
    # 50 frames: window 1..50 < 64 -> 1..50 then 1..14 again, every 2nd
    expected = list(range(1, 50, 2)) + [1, 3, 5, 7, 9, 11, 13]
    assert clip_frame_indices(1.0, frame_count=50) == expected
    assert temporal_center_crop([5, 6, 7], size=8, step=1) == [5, 6, 7, 5, 6, 7, 5, 6]


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((604, 340), (454, 256)),  # 16:9 AVA frames (height 340) -> 256x454
        ((453, 340), (341, 256)),  # 4:3 -> 256x341
        ((640, 480), (341, 256)),
        ((340, 604), (256, 454)),  # portrait: width is the short side
        ((300, 256), (300, 256)),  # short side already 256: unchanged
    ],
)
def test_scale_gives_the_official_sizes(size, expected):
    assert scaled_size(*size, short_side=256) == expected


def test_frames_to_clip_resizes_and_normalises():
    img = Image.new("RGB", (604, 340), (51, 102, 204))
    clip = frames_to_clip([img, img], ClipSpec())
    assert clip.shape == (3, 2, 256, 454)
    expected = (np.array([51, 102, 204]) / 255.0 - 0.45) / 0.225
    np.testing.assert_allclose(clip[:, 0, 10, 10], expected, rtol=1e-6)
    r101 = ClipSpec(norm_value=1.0, mean=(110.6, 103.2, 96.3), std=(38.8, 37.9, 40.0))
    np.testing.assert_allclose(
        frames_to_clip([img], r101)[:, 0, 0, 0], (np.array([51, 102, 204]) - [110.6, 103.2, 96.3]) / [38.8, 37.9, 40.0],
        rtol=1e-5,
    )


def test_flip_mirrors_columns_and_resize_is_pil_bilinear():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    spec = ClipSpec(short_side=24, norm_value=1.0, mean=(0, 0, 0), std=(1, 1, 1))
    ref = np.asarray(img.resize((32, 24), Image.BILINEAR), np.float32).transpose(2, 0, 1)
    np.testing.assert_array_equal(frames_to_clip([img], spec)[:, 0], ref)
    np.testing.assert_array_equal(frames_to_clip([img], spec, flip=True)[:, 0], ref[:, :, ::-1])


def test_pad_batch_pads_right_and_bottom_with_zeros():
    a = np.ones((3, 2, 4, 6), np.float32)
    b = np.full((3, 2, 5, 4), 2.0, np.float32)
    batch, ratios = pad_batch([a, b])
    assert batch.shape == (2, 3, 2, 5, 6)
    expected_a = np.zeros((3, 2, 5, 6), np.float32)
    expected_a[:, :, :4, :6] = 1
    expected_b = np.zeros((3, 2, 5, 6), np.float32)
    expected_b[:, :, :5, :4] = 2
    np.testing.assert_array_equal(batch[0].numpy(), expected_a)
    np.testing.assert_array_equal(batch[1].numpy(), expected_b)
    assert ratios == [(1.0, 5 / 4), (6 / 4, 1.0)]


def _grey_frames(n: int, size=(64, 48)) -> list[np.ndarray]:
    # frame k (1-based) has grey level 3*(k-1): the decoded value tells which frame came back
    return [np.full((size[1], size[0], 3), 3 * k, np.uint8) for k in range(n)]


def test_frame_folder_reads_one_based_frames(tmp_path):
    folder = tmp_path / "vid"
    folder.mkdir()
    for k, arr in enumerate(_grey_frames(70), start=1):
        Image.fromarray(arr).save(folder / f"vid_{k:06d}.png")
    src = FrameFolder(folder)
    assert src.frame_count() == 70
    frames = src.read([1, 31, 70, 31])
    assert [np.asarray(f)[0, 0, 0] for f in frames] == [0, 90, 207, 90]


@pytest.mark.parametrize("whole_video", [True, False], ids=["decoded-once", "seek"])
def test_video_file_decodes_the_same_frames_as_the_folder(tmp_path, monkeypatch, whole_video):
    import av

    from acar_deploy.data import clips

    if not whole_video:
        monkeypatch.setattr(clips, "WHOLE_VIDEO_CACHE_BYTES", 0)

    path = tmp_path / "vid.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30, options={"qscale": "1"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i, arr in enumerate(_grey_frames(80)):
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i
            for p in stream.encode(frame):
                container.mux(p)
        for p in stream.encode():
            container.mux(p)
    src = VideoFile(path)
    assert src.frame_count() == 80
    wanted = [40, 1, 2, 61, 80, 79]
    got = [float(np.asarray(f)[24, 32].mean()) for f in src.read(wanted)]
    np.testing.assert_allclose(got, [3 * (k - 1) for k in wanted], atol=3)
    late = [75, 61]  # the seek path starts decoding 1 s before the first wanted frame
    got = [float(np.asarray(f)[24, 32].mean()) for f in src.read(late)]
    np.testing.assert_allclose(got, [3 * (k - 1) for k in late], atol=3)


def test_jitter_uses_the_official_one_sided_clamp():
    boxes = np.array([[0.0, 0.0, 0.2, 0.4], [0.5, 0.6, 0.9, 1.0]])
    # a seed whose first box's y1 shift is negative and second box's y2 shift positive
    seed = next(s for s in range(100)
                if (d := np.random.default_rng(s).uniform(-0.075, 0.075, (2, 4)))[0, 1] < 0 and d[1, 3] > 0)
    got = jitter_boxes(boxes, 0.075, np.random.default_rng(seed))
    d = np.random.default_rng(seed).uniform(-0.075, 0.075, (2, 4))  # one draw of 4 per box, in order
    expected = []
    for (x1, y1, x2, y2), (a, b, c, e) in zip(boxes, d, strict=True):
        w, h = x2 - x1, y2 - y1
        expected.append([max(x1 + a * w, 0), min(y1 + b * h, 1), max(x2 + c * w, 0), min(y2 + e * h, 1)])
    np.testing.assert_allclose(got, expected)
    assert got[0, 1] < 0  # y1 is only clamped from above: it may leave the frame at the top
    assert got[1, 3] == 1.0  # y2 is clamped at 1


def test_boxes_after_augmentation_clip_drop_and_flip():
    boxes = np.array([[-0.1, 0.2, 0.3, 0.6], [0.5, 0.5, 0.5, 0.9], [0.6, 0.1, 1.2, 0.8]])
    rois, keep = boxes_after_augmentation(boxes, flip=False)
    assert keep.tolist() == [True, False, True]  # zero-area box dropped (official aug_threshold 0, `<=`)
    np.testing.assert_allclose(rois, [[0.0, 0.2, 0.3, 0.6], [0.6, 0.1, 1.0, 0.8]], atol=1e-7)
    flipped, _ = boxes_after_augmentation(boxes, flip=True)
    np.testing.assert_allclose(flipped, [[0.7, 0.2, 1.0, 0.6], [0.0, 0.1, 0.4, 0.8]], atol=1e-7)


def test_multi_hot_uses_position_in_the_label_map():
    class_ids = [1, 3, 4, 79, 80]
    np.testing.assert_array_equal(multi_hot([(3, 80), (), (79,)], class_ids),
                                  [[0, 1, 0, 0, 1], [0, 0, 0, 0, 0], [0, 0, 0, 1, 0]])


def test_training_keyframes_add_confident_proposals_labelled_by_iou():
    gt = [("v", 2, 0.1, 0.1, 0.3, 0.5, 12, 0), ("v", 2, 0.1, 0.1, 0.3, 0.5, 79, 0),
          ("v", 2, 0.6, 0.1, 0.8, 0.5, 11, 1)]
    props = [("v", 2, 0.11, 0.1, 0.3, 0.52, 0.95),   # matches person 0 (IoU > 0.5)
             ("v", 2, 0.4, 0.6, 0.5, 0.9, 0.97),     # background: no labels
             ("v", 2, 0.6, 0.1, 0.8, 0.5, 0.88)]     # below 0.9: not used for training
    (kf,) = training_keyframes(gt, props)
    assert kf.labels == ((12, 79), (11,), (12, 79), ())
    assert kf.boxes.shape == (4, 4)
    (inf,) = inference_keyframes(props, annotations=gt)
    assert inf.labels == ((12, 79), (), (11,))  # >= 0.85 at inference


def test_collate_divides_rois_by_the_pad_ratio():
    import torch

    items = []
    for w, rois in ((8, [[0.0, 0.0, 1.0, 1.0]]), (4, [[0.5, 0.25, 1.0, 0.75], [0.0, 0.0, 0.5, 0.5]])):
        items.append({"clip": torch.zeros(3, 2, 4, w), "rois": torch.tensor(rois), "targets": torch.zeros(len(rois), 2),
                      "video_id": "v", "timestamp": 1, "boxes": np.zeros((len(rois), 4)), "scores": None})
    batch = collate_keyframes(items)
    np.testing.assert_allclose(batch["rois"].numpy(),
                               [[0, 0, 0, 1, 1], [1, 0.25, 0.25, 0.5, 0.75], [1, 0, 0, 0.25, 0.5]])
    assert batch["box_counts"] == [1, 2]


def test_dataset_item_flips_the_clip_and_its_rois(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    arr = np.zeros((48, 64, 3), np.uint8)
    arr[:, :16] = 255  # white left quarter
    for k in range(1, 91):
        Image.fromarray(arr).save(folder / f"v_{k:06d}.png")
    kf = Keyframe("v", 1, np.array([[0.0, 0.0, 0.25, 1.0]], np.float32), ((12,),))
    spec = ClipSpec(short_side=48, norm_value=255.0, mean=(0, 0, 0), std=(1, 1, 1))
    ds = KeyframeDataset([kf], tmp_path, class_ids=[11, 12], spec=spec)
    item = ds[0]
    np.testing.assert_allclose(item["rois"].numpy(), [[0.0, 0.0, 0.25, 1.0]])
    np.testing.assert_array_equal(item["targets"].numpy(), [[0, 1]])
    assert item["clip"].shape == (3, 32, 48, 64)
    assert float(item["clip"][0, 0, 10, 5]) == 1.0 and float(item["clip"][0, 0, 10, 60]) == 0.0
    # with augmentation but no jitter: find a seed whose draw flips, and check pixels and rois mirror
    from acar_deploy.data.dataset import Augmentation

    ds.augmentation = Augmentation(flip=True, jitter_scale=0.0)
    for seed in range(20):
        ds.seed = seed
        item = ds[0]
        if item["flip"]:
            break
    assert item["flip"]
    np.testing.assert_allclose(item["rois"].numpy(), [[0.75, 0.0, 1.0, 1.0]])
    assert float(item["clip"][0, 0, 10, 60]) == 1.0 and float(item["clip"][0, 0, 10, 5]) == 0.0
