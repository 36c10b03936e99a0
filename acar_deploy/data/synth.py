"""Synthetic AVA-format data whose actions can be read off the pixels.

Each video shows 2-3 actors (coloured rectangles on a textured background). What they do is
determined by what is drawn, so a model that learns from the clips can reach a high frame-mAP:
- pose (exactly one, like AVA's 13 softmax pose classes): stand = tall box, sit = squat box,
  lie/sleep = flat wide box, walk = tall box moving sideways with a bobbing gait;
- carry/hold (an object): a yellow square on the body;
- hand wave: the head marker blinks (needs the temporal dimension);
- talk to (a person): the actor faces (white head marker on that side) at least one other actor;
- listen to (a person): the nearest actor on the side some other actor faces is this one
  (only visible through the other actor: relation reasoning helps).

With `temporal=True` (`--temporal`) half the videos also contain an event that only a model with
long-term support can see at most keyframes: a "TV" (cyan screen behind the actors, lighting them)
is on around one keyframe second r, in every frame that the clip of r spans and no other keyframe's
clip reaches, and every actor of such a video is labelled watch (e.g., TV) at EVERY keyframe.
Elsewhere the label is only recoverable from what happened seconds earlier or later (the feature
bank). At r itself the actors are also labelled listen (e.g., to music) (the TV's sound): a label
that holds only where the screen is visible, like most AVA labels, so that the model whose maps
fill the bank has a consistent reason to encode the screen. Each event video is followed by a twin
with the same scene and no event, so the label cannot be learnt from a video's look either.

Labels use real AVA action ids; the model keeps all 60 outputs (logit index = position of the id in
the 60-class AVA label map, as the official code's `idx_to_class`), and the reduced label map lists
only the 8 classes used, so evaluation averages over those.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acar_deploy.artifacts import atomic_dir, write_json
from acar_deploy.errors import InputError
from acar_deploy.progress import progress_bar

FPS = 30
STAND, SIT, LIE, WALK = 12, 11, 8, 14
CARRY, WAVE, LISTEN, TALK = 17, 69, 74, 79
SYNTH_CLASSES: dict[int, str] = {
    8: "lie/sleep",
    11: "sit",
    12: "stand",
    14: "walk",
    17: "carry/hold (an object)",
    69: "hand wave",
    74: "listen to (a person)",
    79: "talk to (e.g., self, a person, a group)",
}
POSES = (STAND, SIT, LIE, WALK)
# Body size as a fraction of the frame height (w, h); walking actors have the standing shape.
POSE_SHAPES: dict[int, tuple[float, float]] = {STAND: (0.2, 0.56), WALK: (0.2, 0.56), SIT: (0.3, 0.34), LIE: (0.46, 0.18)}
BODY_COLOURS = ((200, 60, 60), (60, 160, 70), (70, 90, 210), (170, 80, 190), (40, 170, 180), (220, 130, 40))
TALK_RANGE = 0.5  # a facing actor talks to the nearest actor on its side within this fraction of the width
WATCH = 61  # temporal option: "watch (e.g., TV)", a video-level event seen only around one second
SCREEN_HEARD = 37  # temporal option: "listen (e.g., to music)", only at the keyframe whose clip shows the screen
TEMPORAL_CLASSES: dict[int, str] = {SCREEN_HEARD: "listen (e.g., to music)", WATCH: "watch (e.g., TV)"}
SYNTH_CLIP_FRAMES, SYNTH_CLIP_STEP = 32, 2  # the synthetic config's clips: 16 frames at step 2
SCREEN_COLOUR = (40, 230, 230)


@dataclass(frozen=True)
class SynthSettings:
    """What `acar-deploy synth` writes."""

    out_dir: Path
    videos: int = 48
    seconds: int = 3
    seed: int = 0
    width: int = 128
    height: int = 96
    val_fraction: float = 0.25
    frame_folders: bool = False  # also write <video>/<video>_%06d.jpg folders
    force: bool = False
    progress: bool = True  # a progress bar on a terminal
    temporal: bool = False  # add the long-term "watch (e.g., TV)" event (see the module docstring)


@dataclass(frozen=True)
class SynthResult:
    out_dir: Path
    train_videos: list[str]
    val_videos: list[str]
    train_boxes: int
    val_boxes: int


@dataclass
class Actor:
    """One actor's appearance and motion for a whole video."""

    pose: int
    colour: tuple[int, int, int]
    x0: float  # centre x at t = 0, pixels
    bottom: float  # feet y, pixels
    facing: int  # -1 left, +1 right
    carry: bool
    wave: bool
    speed: float = 0.0  # pixels per second (walkers only)
    phase: float = 0.0
    size: tuple[float, float] = field(default=(0.0, 0.0))

    def box(self, t: float, width: int, height: int) -> tuple[float, float, float, float]:
        """Pixel box (x1, y1, x2, y2) at time t."""
        w, h = self.size
        cx = self.x0 + self.speed * t
        bob = 0.05 * height * abs(math.sin(2 * math.pi * 1.5 * t + self.phase)) if self.pose == WALK else 0.0
        x1, x2 = cx - w / 2, cx + w / 2
        y2 = self.bottom - bob
        return (max(0.0, x1), max(0.0, y2 - h), min(float(width), x2), min(float(height), y2))


def _make_actors(rng: np.random.Generator, width: int, height: int, seconds: int) -> list[Actor]:
    n = int(rng.integers(2, 4))
    slots = np.linspace(0, width, n + 1)
    colours = rng.permutation(len(BODY_COLOURS))
    actors = []
    for i in range(n):
        pose = int(rng.choice(POSES))
        w, h = POSE_SHAPES[pose]
        size = (w * height, h * height)
        lo, hi = slots[i] + size[0] / 2, slots[i + 1] - size[0] / 2
        x0 = float(rng.uniform(lo, hi)) if hi > lo else float((slots[i] + slots[i + 1]) / 2)
        x0 = float(np.clip(x0, size[0] / 2 + 1, width - size[0] / 2 - 1))  # whole body inside the frame
        speed = 0.0
        if pose == WALK:  # walk towards the side with more room, never leaving the frame
            room_right = width - size[0] / 2 - 1 - x0
            room_left = x0 - size[0] / 2 - 1
            direction = 1 if room_right >= room_left else -1
            room = max(room_right, room_left, 0.0)
            speed = direction * min(float(rng.uniform(0.1, 0.15)) * width, room / seconds)
        actors.append(
            Actor(
                pose=pose,
                colour=BODY_COLOURS[int(colours[i])],
                x0=x0,
                bottom=float(rng.uniform(0.8, 0.96) * height),
                facing=int(rng.choice([-1, 1])),
                carry=bool(rng.random() < 0.4),
                wave=bool(rng.random() < 0.35),
                speed=speed,
                phase=float(rng.uniform(0, math.pi)),
                size=size,
            )
        )
    return actors


def actor_labels(actors: list[Actor], t: float, width: int, height: int) -> list[list[int]]:
    """AVA action ids of every actor at time t (the rules the pixels encode)."""
    centres = [(a.box(t, width, height)[0] + a.box(t, width, height)[2]) / 2 for a in actors]
    labels: list[list[int]] = [[a.pose] for a in actors]
    for i, a in enumerate(actors):
        if a.carry:
            labels[i].append(CARRY)
        if a.wave:
            labels[i].append(WAVE)
        ahead = [
            (abs(centres[j] - centres[i]), j)
            for j in range(len(actors))
            if j != i and 0 < (centres[j] - centres[i]) * a.facing <= TALK_RANGE * width
        ]
        if ahead:
            labels[i].append(TALK)
            listener = min(ahead)[1]
            if LISTEN not in labels[listener]:
                labels[listener].append(LISTEN)
    return [sorted(x) for x in labels]


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    base = rng.uniform(70, 130, 3)
    ramp = np.linspace(-25, 25, height)[:, None, None]
    noise = rng.normal(0, 6, (height // 4 + 1, width // 4 + 1, 3)).repeat(4, 0).repeat(4, 1)[:height, :width]
    return np.clip(base + ramp + noise, 0, 255).astype(np.float32)


def render_frame(actors: list[Actor], background: np.ndarray, t: float, lit: bool = False) -> np.ndarray:
    """One RGB uint8 frame at time t; `lit`: the temporal event's screen also tints every body."""
    height, width = background.shape[:2]
    img = background.copy()
    for a in sorted(actors, key=lambda a: a.bottom):
        x1, y1, x2, y2 = (int(round(v)) for v in a.box(t, width, height))
        if x2 <= x1 or y2 <= y1:
            continue
        img[y1:y2, x1:x2] = tuple((c + s) // 2 for c, s in zip(a.colour, SCREEN_COLOUR, strict=True)) if lit else a.colour
        bw, bh = x2 - x1, y2 - y1
        m = max(4, int(round(min(bw, bh) * 0.45)))
        # head marker on the facing side, blinking at 4 Hz when waving
        on = not a.wave or (int(t * 8) % 2 == 0)
        hx = x2 - m if a.facing > 0 else x1
        img[y1 : y1 + m, hx : hx + m] = (250, 250, 250) if on else (20, 20, 20)
        if a.carry:
            cy = y1 + bh // 2
            cx = x1 + bw // 2 - m // 2
            img[cy : cy + m, cx : cx + m] = (245, 225, 30)
    return np.clip(img, 0, 255).astype(np.uint8)


TEMPORAL_KINDS = ("event", "twin")


def temporal_kind(number: int) -> str:
    """`synth --temporal`: video `number`'s kind. "event": the screen is on only around keyframe r and
    the label holds at every keyframe; "twin": the previous event video's scene without either."""
    return TEMPORAL_KINDS[number % len(TEMPORAL_KINDS)]


def event_keyframe(seed: int, number: int, seconds: int) -> int:
    """The keyframe second r around which an event video's screen is on."""
    return int(np.random.default_rng([seed, number, 61]).integers(1, seconds))


def screen_frames(reveal: int, seconds: int) -> range:
    """1-based frame numbers the event's screen is on: every frame the clip of keyframe `reveal` spans
    that no other keyframe's clip reaches (the synthetic config's clips, official centre crop; the
    clips of the first and last keyframe shift inwards at the video edges)."""
    from acar_deploy.data.clips import ClipSpec, clip_frame_indices

    spec = ClipSpec(num_frames=SYNTH_CLIP_FRAMES, step=SYNTH_CLIP_STEP, fps=FPS)
    total = seconds * FPS
    clips = {t: clip_frame_indices(t, total, spec) for t in range(1, seconds)}
    before = max((max(c) for t, c in clips.items() if t < reveal), default=0)
    after = min((min(c) for t, c in clips.items() if t > reveal), default=total + 1)
    return range(max(before + 1, min(clips[reveal])), min(after - 1, max(clips[reveal])) + 1)


def draw_screen(background: np.ndarray) -> np.ndarray:
    """The temporal event's "TV": a cyan screen over the upper 60 % of the background, behind the
    actors. Large on purpose: the tiny extractor must carry it into its first-order maps."""
    height, width = background.shape[:2]
    out = background.copy()
    out[int(0.03 * height): int(0.6 * height), int(0.04 * width): int(0.96 * width)] = SCREEN_COLOUR
    return out


def _write_video(path: Path, frames: list[np.ndarray]) -> None:
    import av

    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w", format="mp4") as container:
        try:
            stream = container.add_stream("libx264", rate=FPS, options={"crf": "12", "preset": "veryfast", "threads": "1"})
        except (av.error.FFmpegError, ValueError):  # no libx264 in this FFmpeg build
            stream = container.add_stream("mpeg4", rate=FPS, options={"qscale": "2"})
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        for i, arr in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_frame_folder(folder: Path, video_id: str, frames: list[np.ndarray]) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, arr in enumerate(frames, start=1):
        Image.fromarray(arr).save(folder / f"{video_id}_{i:06d}.jpg", quality=95)


def _norm_box(box: tuple[float, float, float, float], width: int, height: int) -> list[float]:
    x1, y1, x2, y2 = box
    return [round(x1 / width, 3), round(y1 / height, 3), round(x2 / width, 3), round(y2 / height, 3)]


def _jitter(rng: np.random.Generator, box: list[float], scale: float) -> list[float]:
    w, h = box[2] - box[0], box[3] - box[1]
    d = rng.uniform(-scale, scale, 4) * np.array([w, h, w, h])
    out = np.clip(np.asarray(box) + d, 0.0, 1.0)
    return [round(float(v), 3) for v in out]


# Read by `acar-deploy parity` beside config.yaml. The synthetic val split has only tens of boxes,
# so one swapped rank moves a class's AP by points: the mAP gate is looser than on AVA, while fp32
# engines (same math as eager) stay gated element-wise.
SYNTH_PARITY_THRESHOLDS = """\
# parity thresholds for the synthetic dataset (one line per runtime-precision; CLI flags override)
default:  {max_map_drop: 3.0}
ort-fp32: {max_map_drop: 0.1, atol: 1.0e-3, rtol: 1.0e-3}
trt-fp32: {max_map_drop: 0.1, atol: 1.0e-3, rtol: 1.0e-3}
"""


# acar_tiny (model.config.BUILTIN_CONFIGS) with 16-frame clips at the frames' own 96-pixel short side,
# written out here because the data layer does not import the model; tests/test_synth.py checks that
# it still equals acar_tiny with those two changes.
SYNTH_MODEL_CONFIG: dict[str, Any] = {
    "backbone": {"arch": "slowfast_tiny", "layers": [1, 1, 1, 1], "slow_width": 8, "alpha": 4, "beta": 0.25,
                 "fuse_only_conv": False, "fuse_kernel_size": 7, "slow_full_span": True},
    "head": {"type": "acar", "width": 320, "roi_spatial": 7, "num_classes": 60, "dropout": 0.0, "bias": False,
             "reduce_dim": 32, "hidden_dim": 16, "downsample": "max2x2", "depth": 2, "kernel_size": 3,
             "mlp_1x1": False},
    "input": {"norm_value": 255.0, "mean": [0.45, 0.45, 0.45], "std": [0.225, 0.225, 0.225], "num_frames": 16,
              "short_side": 96},
    "name": "acar_tiny_synth",
}


# The bank head's settings at model.config.HeadConfig's defaults (a 21 s window, fp16 storage);
# tests/test_synth.py checks they still are.
SYNTH_ACFB_HEAD: dict[str, Any] = {"type": "acfb", "bank_window": 10, "bank_causal": False, "bank_precision": "fp16"}


def synth_config_dict() -> dict[str, Any]:
    """A CPU-sized ACAR config for the synthetic data, plus an official-style `train:` section.

    acar_tiny with 16-frame clips at the frames' own size (96-pixel short side). Unlike the official
    recipe, BatchNorm statistics train (`freeze_bn: false`): there is no pretrained backbone whose
    statistics could be frozen, and a from-scratch tiny backbone learns several times faster so.
    """
    import copy

    data = copy.deepcopy(SYNTH_MODEL_CONFIG)
    data["train"] = {
        "batch_size": 4,
        "n_epochs": 8,
        "freeze_bn": False,
        "optimizer": {"type": "SGD", "kwargs": {"momentum": 0.9, "weight_decay": 1e-7, "nesterov": True}},
        "scheduler": {
            "type": "step",
            "milestone_epochs": [6.5],
            "lr_mults": [0.1],
            "base_lr": 0.01,
            "warmup_lr": 0.1,
            "warmup_epochs": 1,
        },
    }
    return data


CONTINUED_LR = 0.2  # bank model and no-bank baseline: head-only, constant lr, from a trained no-bank model
CONTINUED_EPOCHS = 20


def continued_config_dict() -> dict[str, Any]:
    """The synthetic config with the recipe of runs that continue from a trained no-bank model
    (`--init`): head-only fine-tuning (`freeze_backbone`: the backbone that filled the bank stays as
    it is, and each clip's context map is computed once) at a constant lr of CONTINUED_LR for
    CONTINUED_EPOCHS epochs. Full fine-tuning at the scratch recipe moves the other classes' APs by more
    than the bank's effect, and learns to use the bank far more slowly (docs/bank.md)."""
    data = synth_config_dict()
    data["train"]["n_epochs"] = CONTINUED_EPOCHS
    data["train"]["freeze_backbone"] = True
    data["train"]["scheduler"].update(base_lr=CONTINUED_LR, warmup_lr=CONTINUED_LR, milestone_epochs=[], lr_mults=[])
    return data


def synthesize(settings: SynthSettings) -> SynthResult:
    """Write the videos, CSVs, label map, config and `dataset.json` into `settings.out_dir`."""
    import yaml

    from acar_deploy.data.ava_csv import (
        NO_PERSON,
        AvaAnnotations,
        AvaExclusions,
        AvaProposals,
        write_annotations,
        write_exclusions,
        write_proposals,
    )
    from acar_deploy.data.labelmap import LabelMap, write_labelmap

    if settings.videos < 2:
        raise InputError(f"--videos {settings.videos}: need at least 2 videos (one for train, one for val)")
    if settings.seconds < 3:
        raise InputError(f"--video-seconds {settings.seconds}: need at least 3 seconds (keyframes at 1..seconds-1)")
    if settings.temporal and settings.seconds < 5:
        raise InputError(f"--video-seconds {settings.seconds}: --temporal needs at least 5 seconds so that most "
                         "keyframes are seconds away from the event")
    if settings.width < 32 or settings.height < 32:
        raise InputError(f"--size {settings.height}x{settings.width}: frames must be at least 32x32 (HEIGHTxWIDTH)")
    width, height = settings.width - settings.width % 2, settings.height - settings.height % 2
    rng = np.random.default_rng(settings.seed)
    video_ids = [f"synth{i:03d}" for i in range(settings.videos)]
    n_val = max(1, int(round(settings.videos * settings.val_fraction)))
    split = {vid: ("val" if i >= settings.videos - n_val else "train") for i, vid in enumerate(video_ids)}
    gt: dict[str, list[tuple]] = {"train": [], "val": []}
    proposals: dict[str, list[tuple]] = {"train": [], "val": []}
    exclusions: list[tuple[str, int]] = []
    with atomic_dir(settings.out_dir, force=settings.force) as tmp, progress_bar(settings.progress) as progress:
        (tmp / "videos").mkdir()
        task = progress.add_task("synthesizing videos", total=len(video_ids))
        twin: tuple[list[Actor], np.ndarray] = ([], np.zeros(0))  # the last event video's scene
        for number, vid in enumerate(video_ids):
            vrng = np.random.default_rng(rng.integers(0, 2**63))
            actors = _make_actors(vrng, width, height, settings.seconds)
            background = _background(vrng, width, height)
            kind = temporal_kind(number) if settings.temporal else "plain"
            if kind == "twin":  # the event video's twin: same scene, no event
                actors, background = twin
            twin = (actors, background)
            lit, reveal = background, 0
            if settings.temporal:  # own generator: the other draws stay those of the plain dataset
                reveal = event_keyframe(settings.seed, number, settings.seconds)
                lit = draw_screen(background) if kind == "event" else background
            shown = screen_frames(reveal, settings.seconds) if kind == "event" else range(0)
            on = [i + 1 in shown for i in range(settings.seconds * FPS)]
            frames = [render_frame(actors, lit if on[i] else background, i / FPS, on[i])
                      for i in range(settings.seconds * FPS)]
            _write_video(tmp / "videos" / f"{vid}.mp4", frames)
            if settings.frame_folders:
                _write_frame_folder(tmp / "frames" / vid, vid, frames)
            part = split[vid]
            for ts in range(1, settings.seconds):
                labels = actor_labels(actors, float(ts), width, height)
                if kind == "event":
                    labels = [sorted([*ids, WATCH, *([SCREEN_HEARD] if ts == reveal else [])]) for ids in labels]
                for pid, (actor, ids) in enumerate(zip(actors, labels, strict=True)):
                    box = _norm_box(actor.box(float(ts), width, height), width, height)
                    for action in ids:
                        gt[part].append((vid, ts, *box, action, pid))
                    score = float(vrng.uniform(0.86, 1.0))
                    proposals[part].append((vid, ts, *_jitter(vrng, box, 0.03), round(score, 3)))
                for _ in range(int(vrng.integers(0, 3))):  # false positives below the 0.85 threshold
                    x1, y1 = vrng.uniform(0, 0.7, 2)
                    fp = [round(float(x1), 3), round(float(y1), 3),
                          round(float(x1 + vrng.uniform(0.1, 0.3)), 3), round(float(y1 + vrng.uniform(0.15, 0.3)), 3)]
                    proposals[part].append((vid, ts, *fp, round(float(vrng.uniform(0.2, 0.8)), 3)))
            progress.advance(task)
        val_ids = [v for v in video_ids if split[v] == "val"]
        exclusions.append((val_ids[0], settings.seconds - 1))

        files = {
            "labelmap": "labelmap.pbtxt",
            "train_annotations": "train.csv",
            "val_annotations": "val.csv",
            "train_proposals": "train_proposals.csv",
            "val_proposals": "val_proposals.csv",
            "val_exclusions": "val_excluded_timestamps.csv",
            "config": "config.yaml",
            "parity_thresholds": "config.parity.yaml",
        }
        all_classes = {**SYNTH_CLASSES, **(TEMPORAL_CLASSES if settings.temporal else {})}
        classes = sorted(all_classes.items())
        write_labelmap(LabelMap(tuple(k for k, _ in classes), tuple(v for _, v in classes)), tmp / files["labelmap"])
        for part in ("train", "val"):
            rows = gt[part]
            write_annotations(
                AvaAnnotations(
                    video_id=np.array([r[0] for r in rows], dtype=object),
                    timestamp=np.array([f"{r[1]:04d}" for r in rows], dtype=object),
                    boxes=np.array([r[2:6] for r in rows], np.float64).reshape(-1, 4),
                    action_id=np.array([r[6] for r in rows], np.int64),
                    person_id=np.array([r[7] if len(r) > 7 else NO_PERSON for r in rows], np.int64),
                ),
                tmp / files[f"{part}_annotations"],
            )
            props = proposals[part]
            write_proposals(
                AvaProposals(
                    video_id=np.array([r[0] for r in props], dtype=object),
                    timestamp=np.array([f"{r[1]:04d}" for r in props], dtype=object),
                    boxes=np.array([r[2:6] for r in props], np.float64).reshape(-1, 4),
                    score=np.array([r[6] for r in props], np.float64),
                ),
                tmp / files[f"{part}_proposals"],
            )
        write_exclusions(
            AvaExclusions(np.array([v for v, _ in exclusions], dtype=object),
                          np.array([f"{t:04d}" for _, t in exclusions], dtype=object)),
            tmp / files["val_exclusions"],
        )
        with open(tmp / files["config"], "w", encoding="utf-8") as fh:
            fh.write("# CPU-sized ACAR config for the synthetic data: acar_tiny, 16 frames, 96-pixel short side.\n")
            yaml.safe_dump(synth_config_dict(), fh, sort_keys=False)
        if settings.temporal:  # the bank model (same network, HR2O over the feature bank) and its baseline
            acfb = continued_config_dict()
            acfb["name"] = "acfb_tiny_synth"
            acfb["head"].update(SYNTH_ACFB_HEAD)
            with open(tmp / "config_acfb.yaml", "w", encoding="utf-8") as fh:
                fh.write("# The synthetic config with an Actor-Context Feature Bank head (train with --bank and\n"
                         "# --init from a model of config.yaml); constant lr for the continued run.\n")
                yaml.safe_dump(acfb, fh, sort_keys=False)
            with open(tmp / "config_continue.yaml", "w", encoding="utf-8") as fh:
                fh.write("# config.yaml with config_acfb.yaml's recipe: the no-bank baseline that continues from\n"
                         "# the same --init for the same epochs as the bank model.\n")
                yaml.safe_dump(continued_config_dict(), fh, sort_keys=False)
        (tmp / files["parity_thresholds"]).write_text(SYNTH_PARITY_THRESHOLDS, encoding="utf-8")
        write_json(
            tmp / "dataset.json",
            {
                "format": "acar-deploy-dataset",
                "format_version": 1,
                "generator": {"name": "acar-deploy synth", **{k: v for k, v in asdict(settings).items()
                                                           if k not in ("out_dir", "force", "progress")
                                                           and not (k == "temporal" and not v)}},
                "media_dir": "frames" if settings.frame_folders else "videos",
                "videos_dir": "videos",
                "frames_dir": "frames" if settings.frame_folders else None,
                "fps": FPS,
                "start_seconds": 0,
                "frame_size": [width, height],
                "splits": {"train": [v for v in video_ids if split[v] == "train"], "val": val_ids},
                "files": files,
                "classes": [{"id": k, "name": v} for k, v in classes],
            },
        )
    return SynthResult(
        out_dir=Path(settings.out_dir),
        train_videos=[v for v in video_ids if split[v] == "train"],
        val_videos=val_ids,
        train_boxes=len({r[:6] for r in gt["train"]}),
        val_boxes=len({r[:6] for r in gt["val"]}),
    )


__all__ = ["SynthSettings", "SynthResult", "synthesize", "SYNTH_CLASSES", "TEMPORAL_CLASSES", "SCREEN_HEARD", "actor_labels",
           "render_frame", "draw_screen", "screen_frames"]
