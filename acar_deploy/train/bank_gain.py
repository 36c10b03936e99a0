"""What the Actor-Context Feature Bank buys: bank model vs the same model without bank, same recipe.

On `synth --temporal` data (the "watch" label of an event video is visible at one keyframe only):
train a no-bank model from scratch, then its head alone (`config_continue.yaml`'s head-only
recipe); that model is the extractor -> `bank extract` of the train and val splits -> fine-tune the
head of the extractor twice (backbone frozen) for the same epochs with the same seed, once as the
bank model (`config_acfb.yaml`, `--bank`) and once without bank (`config_continue.yaml`) -> frame-mAP
of both on the val split (and the AP of the temporal class). The margin is bank minus no bank. The
bank can only carry the event if the extractor encodes it: its AP of the "listen" label (the screen,
where it is visible) and `event_separation` say how well it does. Every step is the library
function of a CLI command, so `commands` reproduces the run by hand.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acar_deploy.errors import check_range


@dataclass(frozen=True)
class BankGainSettings:
    """One seeded bank-vs-no-bank comparison; every output goes under `out`."""

    out: Path
    videos: int = 24  # synth --videos (even: each event video has a twin without the event)
    seconds: int = 6  # synth --video-seconds (>= 5)
    extractor_epochs: int = 6  # the no-bank model, from scratch
    extractor_head_epochs: int = 24  # then its head alone (same recipe as below); its first-order maps fill the bank
    extra_epochs: int = 30  # both continued runs (bank and no bank, head only) train this many epochs more
    seed: int = 0
    init: Path | None = None  # start the extractor from these weights (e.g. a model of the plain synth data)
    workers: int | None = 1  # decoding processes per run (None: the training default)
    threads: int | None = 1
    force: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        check_range("videos", self.videos, 2)
        check_range("extractor_epochs", self.extractor_epochs, 1)
        check_range("extractor_head_epochs", self.extractor_head_epochs, 0)
        check_range("extra_epochs", self.extra_epochs, 1)


@dataclass(frozen=True)
class ContinuedRun:
    """One of the two continued runs: its last checkpoint, val frame-mAP per epoch, final AP watch."""

    run_dir: Path
    checkpoint: Path
    val_maps: list[float]
    ap_watch: float | None

    @property
    def val_map(self) -> float:
        return self.val_maps[-1]


@dataclass(frozen=True)
class BankGainResult:
    settings: BankGainSettings
    data: Path
    extractor: Path  # checkpoint whose first-order maps fill the banks
    extractor_map: float
    extractor_sees_event: float | None  # see `event_separation`
    extractor_ap_heard: float | None  # its val AP of the label that holds where the screen is visible
    train_bank: Path
    val_bank: Path
    no_bank: ContinuedRun
    bank: ContinuedRun
    commands: list[str] = field(default_factory=list)

    @property
    def margin(self) -> float:
        """Val frame-mAP of the bank model minus the no-bank model's, after the same extra epochs."""
        return self.bank.val_map - self.no_bank.val_map

    @property
    def margin_watch(self) -> float | None:
        if self.bank.ap_watch is None or self.no_bank.ap_watch is None:
            return None
        return self.bank.ap_watch - self.no_bank.ap_watch

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.settings.seed, "videos": self.settings.videos, "seconds": self.settings.seconds,
            "extractor_epochs": self.settings.extractor_epochs,
            "extractor_head_epochs": self.settings.extractor_head_epochs, "extra_epochs": self.settings.extra_epochs,
            "extractor_map": self.extractor_map, "extractor_sees_event": self.extractor_sees_event,
            "extractor_ap_heard": self.extractor_ap_heard,
            "no_bank": {"val_maps": self.no_bank.val_maps, "ap_watch": self.no_bank.ap_watch},
            "bank": {"val_maps": self.bank.val_maps, "ap_watch": self.bank.ap_watch},
            "margin": self.margin, "margin_watch": self.margin_watch, "commands": self.commands,
        }


def _cmd(*parts: Any) -> str:
    return "acar-deploy " + " ".join(shlex.quote(str(p)) for p in parts)


def _val_ap(data: Path, predictions: Path, action: int) -> float | None:
    from acar_deploy.eval import frame_map

    scored = frame_map(data / "val.csv", predictions, labelmap=data / "labelmap.pbtxt",
                       exclusions=data / "val_excluded_timestamps.csv")
    return scored.per_class.get(action)


def event_separation(predictions: Path, seed: int, seconds: int) -> float | None:
    """How well a model sees the event where it is visible: its mean watch score at an event video's
    keyframe r minus the twin's at r, over the val pairs (None without a complete pair).

    The bank entries are the extractor's first-order maps, so the bank can only carry the event if
    the extractor encodes it; this is the measurable symptom (docs/bank.md)."""
    import numpy as np

    from acar_deploy.data.ava_csv import read_predictions
    from acar_deploy.data.synth import WATCH, event_keyframe, temporal_kind

    table = read_predictions(predictions)
    watch = table.action_id == WATCH
    seconds_of = table.timestamp.astype(np.int64)  # AVA timestamps are read as text

    def mean_score(video: str, t: int) -> float | None:
        rows = watch & (table.video_id == video) & (seconds_of == t)
        return float(table.score[rows].mean()) if rows.any() else None

    gaps = []
    for video in sorted(set(table.video_id[watch])):
        number = int(video.removeprefix("synth"))
        if temporal_kind(number) != "event":
            continue
        r = event_keyframe(seed, number, seconds)
        event, twin = mean_score(video, r), mean_score(f"synth{number + 1:03d}", r)
        if event is not None and twin is not None:
            gaps.append(event - twin)
    return float(np.mean(gaps)) if gaps else None


def measure_bank_gain(settings: BankGainSettings) -> BankGainResult:
    """synth --temporal -> no-bank extractor -> banks -> bank and no-bank continued runs -> margin."""
    from acar_deploy.artifacts import atomic_dir, write_json
    from acar_deploy.bank.extract import ExtractSettings, extract_bank
    from acar_deploy.data.synth import SCREEN_HEARD, WATCH, SynthSettings, synthesize
    from acar_deploy.train.loop import TrainSettings, train

    final = Path(settings.out)
    with atomic_dir(final, force=settings.force) as out:
        data = out / "data"
        common = {"seed": settings.seed, "workers": settings.workers, "threads": settings.threads,
                  "progress": settings.progress}
        flags = ("--seed", settings.seed) + (("--workers", settings.workers) if settings.workers is not None else ()) + (
            ("--threads", settings.threads) if settings.threads is not None else ())
        commands = [_cmd("synth", final / "data", "--temporal", "--videos", settings.videos,
                         "--video-seconds", settings.seconds, "--seed", settings.seed)]
        synthesize(SynthSettings(out_dir=data, videos=settings.videos, seconds=settings.seconds, seed=settings.seed,
                                 temporal=True, progress=False))

        extractor_run = train(TrainSettings(config=str(data / "config.yaml"), data=data, out=out / "nobank",
                                            epochs=settings.extractor_epochs, init=settings.init, **common))
        commands.append(_cmd("train", "--config", final / "data/config.yaml", "--data", final / "data",
                             "--out", final / "nobank", "--epochs", settings.extractor_epochs, *flags)
                        + ("" if settings.init is None else f" --init {shlex.quote(str(settings.init))}"))
        extractor_dir = "nobank"
        if settings.extractor_head_epochs:  # the head-only recipe makes the extractor see the screen (docs/bank.md)
            scratch = extractor_run.final_checkpoint
            extractor_run = train(TrainSettings(config=str(data / "config_continue.yaml"), data=data,
                                                out=out / "nobank_head", init=scratch,
                                                epochs=settings.extractor_head_epochs, **common))
            commands.append(_cmd("train", "--config", final / "data/config_continue.yaml", "--data", final / "data",
                                 "--out", final / "nobank_head", "--init", final / "nobank" / scratch.name,
                                 "--epochs", settings.extractor_head_epochs, *flags))
            extractor_dir = "nobank_head"
        extractor = extractor_run.final_checkpoint
        extractor_predictions = out / extractor_dir / f"val_predictions_{extractor_run.history[-1].epoch}.csv"
        banks = {}
        for split in ("train", "val"):
            banks[split] = out / "banks" / split
            extract_bank(ExtractSettings(checkpoint=extractor, data=data, out=banks[split], split=split,
                                         progress=False))
            commands.append(_cmd("bank", "extract", "--checkpoint", final / extractor_dir / extractor.name,
                                 "--data", final / "data", "--out", final / "banks" / split, "--split", split))

        def continued(name: str, config: str, **bank: Any) -> ContinuedRun:
            run = train(TrainSettings(config=str(data / config), data=data, out=out / name, init=extractor,
                                      epochs=settings.extra_epochs, **bank, **common))
            maps = [float(h.val_map or 0.0) for h in run.history]
            last = run.history[-1].epoch
            return ContinuedRun(final / name, final / name / run.final_checkpoint.name, maps,
                                _val_ap(data, out / name / f"val_predictions_{last}.csv", WATCH))

        bank_run = continued("bank", "config_acfb.yaml", bank=banks["train"], val_bank=banks["val"])
        commands.append(_cmd("train", "--config", final / "data/config_acfb.yaml", "--data", final / "data",
                             "--out", final / "bank", "--init", final / extractor_dir / extractor.name,
                             "--bank", final / "banks/train", "--val-bank", final / "banks/val",
                             "--epochs", settings.extra_epochs, *flags))
        no_bank_run = continued("nobank_more", "config_continue.yaml")
        commands.append(_cmd("train", "--config", final / "data/config_continue.yaml", "--data", final / "data",
                             "--out", final / "nobank_more", "--init", final / extractor_dir / extractor.name,
                             "--epochs", settings.extra_epochs, *flags))
        sees = event_separation(extractor_predictions, settings.seed, settings.seconds)
        result = BankGainResult(settings=settings, data=final / "data",
                                extractor=final / extractor_dir / extractor.name,
                                extractor_map=float(extractor_run.val_map or 0.0), extractor_sees_event=sees,
                                extractor_ap_heard=_val_ap(data, extractor_predictions, SCREEN_HEARD),
                                train_bank=final / "banks/train",
                                val_bank=final / "banks/val", no_bank=no_bank_run, bank=bank_run, commands=commands)
        write_json(out / "bank_gain.json", result.to_json())
    return result


__all__ = ["BankGainResult", "BankGainSettings", "ContinuedRun", "event_separation", "measure_bank_gain"]
