"""Clips for one keyframe, exactly as the official ACAR-Net evaluation pipeline builds them.

Frames are addressed by their 1-based index at 30 fps, as AVA's ffmpeg extraction numbers them
(`<video>/<video>_000001.jpg` is the frame shown during the first 1/30 s). A keyframe at second `t`
is frame `(t - start) * fps + 1`, where `start` is the second the frames begin at (900 for AVA frame
folders cut from minute 15, 0 for whole video files). Its annotation window is the 91 frames
`mid - 45 .. mid + 45`, clipped to the frames that exist; the official `TemporalCenterCrop(64, 2)`
then takes 64 frames around the middle of that window (repeating the window from its start when it
is shorter than 64) and keeps every second one: 32 frames.

Frame sources: a frame folder (JPEG/PNG per frame) or a video file decoded with PyAV and resampled
to 30 fps (each 30 fps slot shows the last decoded frame that started at or before it).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from acar_deploy.errors import InputError

AVA_FPS = 30
WHOLE_VIDEO_CACHE_BYTES = 64 << 20  # videos up to this size (RGB) are decoded once and kept
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")


@dataclass(frozen=True)
class ClipSpec:
    """How a clip is cut and normalised; the defaults are the official R50 eval transform."""

    num_frames: int = 64  # TemporalCenterCrop size (before the stride)
    step: int = 2  # TemporalCenterCrop step -> num_frames // step frames in the clip
    window_half: int = 45  # keyframe annotation window: mid - 45 .. mid + 45 (91 frames)
    fps: int = AVA_FPS
    short_side: int = 256  # Scale(256): short side -> 256, long side int(256 * long / short)
    norm_value: float = 255.0
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)

    @property
    def clip_length(self) -> int:
        return len(range(0, self.num_frames, self.step))

    @classmethod
    def from_model_config(cls, config: Any, **overrides: Any) -> ClipSpec:
        """Normalisation, short side and clip length from `ModelConfig.input`."""
        inp = config.input
        spec = cls(
            num_frames=int(inp.num_frames) * cls.step,
            short_side=int(inp.short_side),
            norm_value=float(inp.norm_value),
            mean=tuple(float(x) for x in inp.mean),
            std=tuple(float(x) for x in inp.std),
        )
        return replace(spec, **overrides)


# --- temporal sampling ---------------------------------------------------------------------------


def keyframe_index(timestamp: float, fps: int = AVA_FPS, start_seconds: float = 0.0) -> int:
    """1-based index of the frame shown at `timestamp` seconds."""
    return int(math.floor((timestamp - start_seconds) * fps + 1e-6)) + 1


def keyframe_window(mid: int, frame_count: int, window_half: int = 45) -> list[int]:
    """The keyframe's annotation window, clipped to frames 1..frame_count."""
    first = max(1, mid - window_half)
    last = min(frame_count, mid + window_half)
    if last < first:
        raise InputError(
            f"keyframe frame {mid} lies outside the video's {frame_count} frames: "
            "check the timestamp and the frames' start second"
        )
    return list(range(first, last + 1))


def temporal_center_crop(frame_indices: Sequence[int], size: int = 64, step: int = 2) -> list[int]:
    """Official TemporalCenterCrop: `size` frames around the middle, looped when too few, every `step`-th."""
    indices = list(frame_indices)
    begin = max(0, len(indices) // 2 - size // 2)
    out = indices[begin : min(begin + size, len(indices))]
    i = 0
    while len(out) < size:
        out.append(out[i])
        i += 1
    return out[::step]


def clip_frame_indices(
    timestamp: float, frame_count: int, spec: ClipSpec = ClipSpec(), start_seconds: float = 0.0
) -> list[int]:
    """The 1-based frame indices of the clip for the keyframe at `timestamp`."""
    mid = keyframe_index(timestamp, spec.fps, start_seconds)
    window = keyframe_window(mid, frame_count, spec.window_half)
    return temporal_center_crop(window, spec.num_frames, spec.step)


# --- spatial transform -----------------------------------------------------------------------------


def scaled_size(width: int, height: int, short_side: int = 256) -> tuple[int, int]:
    """Official Scale(int): (W, H) after resizing the short side to `short_side` (long side truncated)."""
    if (width <= height and width == short_side) or (height <= width and height == short_side):
        return width, height
    if width < height:
        return short_side, int(short_side * height / width)
    return int(short_side * width / height), short_side


def frames_to_clip(frames: Sequence[Image.Image], spec: ClipSpec = ClipSpec(), flip: bool = False) -> np.ndarray:
    """PIL frames -> float32 `[3, T, H, W]`: Scale, optional horizontal flip, ToTensor, Normalize."""
    out = []
    for img in frames:
        img = img.convert("RGB")
        size = scaled_size(img.width, img.height, spec.short_side)
        if size != img.size:
            img = img.resize(size, Image.BILINEAR)
        if flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        out.append(np.asarray(img, dtype=np.float32))
    clip = np.stack(out, 0) / np.float32(spec.norm_value)  # [T, H, W, 3]
    clip = (clip - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(clip.transpose(3, 0, 1, 2), dtype=np.float32)


def pad_batch(clips: Sequence[Any]) -> tuple[Any, list[tuple[float, float]]]:
    """Zero-pad clips `[3, T, H, W]` at the right/bottom to the batch max; pad ratios (W_pad/W, H_pad/H)."""
    import torch
    import torch.nn.functional as F

    tensors = [torch.as_tensor(c) for c in clips]
    max_h = max(t.shape[-2] for t in tensors)
    max_w = max(t.shape[-1] for t in tensors)
    padded, ratios = [], []
    for t in tensors:
        h, w = t.shape[-2:]
        padded.append(F.pad(t, (0, max_w - w, 0, max_h - h), "constant", 0.0))
        ratios.append((max_w / w, max_h / h))
    return torch.stack(padded), ratios


# --- frame sources ---------------------------------------------------------------------------------


class FrameSource(Protocol):
    """Frames of one video at 30 fps, 1-based."""

    path: Path

    def frame_count(self) -> int: ...

    def read(self, indices: Sequence[int]) -> list[Image.Image]: ...


class FrameFolder:
    """A folder of extracted frames `<video>_%06d.jpg` (or any `<prefix>%06d.<ext>`), 1-based."""

    _name = re.compile(r"^(?P<prefix>.*?)(?P<num>\d{6})\.(?P<ext>jpg|jpeg|png)$", re.IGNORECASE)

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise InputError(f"{self.path}: frame folder not found; pass a folder of <video>_000001.jpg frames")
        numbers: dict[tuple[str, str], list[int]] = {}
        for name in os.listdir(self.path):
            m = self._name.match(name)
            if m:
                numbers.setdefault((m["prefix"], m["ext"]), []).append(int(m["num"]))
        if not numbers:
            raise InputError(
                f"{self.path}: no frames named <prefix>%06d.jpg in this folder; "
                "extract them with ffmpeg -r 30 ... <video>_%06d.jpg"
            )
        (self._prefix, self._ext), nums = max(numbers.items(), key=lambda kv: len(kv[1]))
        self._count = max(nums)

    def frame_count(self) -> int:
        return self._count

    def frame_path(self, index: int) -> Path:
        return self.path / f"{self._prefix}{index:06d}.{self._ext}"

    def read(self, indices: Sequence[int]) -> list[Image.Image]:
        cache: dict[int, Image.Image] = {}
        for i in indices:
            if i not in cache:
                path = self.frame_path(i)
                try:
                    with Image.open(path) as img:
                        cache[i] = img.convert("RGB")
                except OSError as exc:
                    raise InputError(f"{path}: cannot read frame ({exc}); re-extract the frames") from None
        return [cache[i] for i in indices]


class VideoFile:
    """A video file decoded with PyAV and resampled to 30 fps slots."""

    def __init__(self, path: str | os.PathLike, fps: int = AVA_FPS):
        import av

        self.path = Path(path)
        self.fps = fps
        if not self.path.is_file():
            raise InputError(f"{self.path}: video file not found")
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                if stream.duration is not None and stream.time_base is not None:
                    duration = Fraction(stream.duration) * stream.time_base
                elif container.duration is not None:
                    duration = Fraction(container.duration, av.time_base)
                else:
                    duration = Fraction(sum(1 for _ in container.decode(stream)), 1) / Fraction(
                        stream.average_rate or fps
                    )
                self.width, self.height = stream.codec_context.width, stream.codec_context.height
        except (av.error.FFmpegError, IndexError) as exc:
            raise InputError(f"{self.path}: not a readable video ({exc}); pass an mp4/mkv/webm file") from None
        self._count = max(1, math.ceil(duration * fps - Fraction(1, 10**6)))
        self._frames: list[np.ndarray] | None = None

    def frame_count(self) -> int:
        return self._count

    def read(self, indices: Sequence[int]) -> list[Image.Image]:
        if self._count * self.width * self.height * 3 <= WHOLE_VIDEO_CACHE_BYTES:
            if self._frames is None:  # short video: decode once, serve every later keyframe from memory
                self._frames = self._decode(list(range(1, self._count + 1)), seek=False)
            return [Image.fromarray(self._frames[min(i, self._count) - 1]) for i in indices]
        wanted = sorted(set(indices))
        decoded = dict(zip(wanted, self._decode(wanted, seek=True), strict=True))
        return [Image.fromarray(decoded[i]) for i in indices]

    def _decode(self, wanted: list[int], seek: bool) -> list[np.ndarray]:
        """RGB arrays for the sorted 1-based 30 fps slots `wanted`."""
        import av

        targets = [Fraction(i - 1, self.fps) for i in wanted]
        found: list[np.ndarray] = []
        with av.open(str(self.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            tb = stream.time_base
            if seek:
                seek_to = max(Fraction(0), targets[0] - 1)
                container.seek(int(seek_to / tb), stream=stream, backward=True, any_frame=False)
            prev, prev_rgb = None, None
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                ftime = Fraction(frame.pts) * tb
                while len(found) < len(targets) and targets[len(found)] < ftime:
                    # this slot starts before the current frame: it shows the previous one
                    if prev_rgb is None:
                        prev_rgb = (prev if prev is not None else frame).to_ndarray(format="rgb24")
                    found.append(prev_rgb)
                if len(found) >= len(targets):
                    break
                prev, prev_rgb = frame, None
            while len(found) < len(targets):  # slots at or past the last frame show the last frame
                if prev is None:
                    raise InputError(f"{self.path}: no frame decoded near {float(targets[len(found)]):.2f} s")
                if prev_rgb is None:
                    prev_rgb = prev.to_ndarray(format="rgb24")
                found.append(prev_rgb)
        return found


def open_frames(path: str | os.PathLike, fps: int = AVA_FPS) -> FrameSource:
    """A frame folder or a video file, by what `path` is."""
    path = Path(path)
    if path.is_dir():
        return FrameFolder(path)
    if path.is_file():
        return VideoFile(path, fps=fps)
    raise InputError(f"{path}: neither a frame folder nor a video file")


def find_video(root: str | os.PathLike, video_id: str) -> Path:
    """`root/<video_id>/` (frames) or `root/<video_id>.<ext>` (a video file)."""
    root = Path(root)
    folder = root / video_id
    if folder.is_dir():
        return folder
    for ext in VIDEO_EXTENSIONS:
        candidate = root / f"{video_id}{ext}"
        if candidate.is_file():
            return candidate
    raise InputError(
        f"{root}: no frame folder or video file for video '{video_id}'; "
        f"expected {folder}/ or {video_id}.mp4 in that folder"
    )


def load_clip(
    source: FrameSource,
    timestamp: float,
    spec: ClipSpec = ClipSpec(),
    start_seconds: float = 0.0,
    flip: bool = False,
) -> tuple[np.ndarray, tuple[int, int]]:
    """The normalised clip `[3, T, H, W]` for one keyframe and the original frame size (W, H)."""
    indices = clip_frame_indices(timestamp, source.frame_count(), spec, start_seconds)
    frames = source.read(indices)
    return frames_to_clip(frames, spec, flip=flip), frames[0].size
