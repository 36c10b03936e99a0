"""`acar-deploy bank project`: store every bank entry's keys and values (the bank_kv part) in the bank.

K and V depend only on an entry and the weights, and each entry serves up to 2w + 1 keyframes, so
the deploy path projects them once per bank entry, ahead of time, with the runner it deploys
(ORT / OpenVINO engine or export folder, or eager), and reads them memory-mapped afterwards. Each
video's `kv/` folder is built in a temporary folder and renamed into place when complete (a killed
run leaves every video with its old K/V, none, or the new complete K/V); a rerun keeps the videos
whose K/V are of the same weights and match their recorded sha256. `bank.json` names the weights
once every video is done, and readers check them against their own model. Under torchrun the
videos are split by rank (r, r + world, ...) as `bank extract` does; rank 0 writes `bank.json`'s
projection after a barrier, once every process has finished its videos.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acar_deploy.artifacts import atomic_dir, remove_stale_temporaries, sha256_file
from acar_deploy.bank.process_group import barrier, gather, rank_world
from acar_deploy.engines.runners.base import Runner, RunnerOptions
from acar_deploy.errors import InputError
from acar_deploy.formats import verify_folder
from acar_deploy.formats.bank import (
    BANK_FORMAT_VERSION,
    KEYS_NAME,
    MANIFEST_NAME,
    VALUES_NAME,
    BankManifest,
    BankProjection,
    ProjectionWeights,
    commit_kv_record,
    create_kv_arrays,
    kv_dir,
    open_video_arrays,
    stored_kv_record,
)
from acar_deploy.formats.manifest import ExportManifest

DEFAULT_BATCH = 32  # entries per bank_kv call: R50 K/V of 32 entries = 12 MiB fp32 per layer and array


@dataclass(frozen=True)
class ProjectSettings:
    bank: Path
    engine: str  # export folder, engine folder, or eager:CHECKPOINT:CONFIG
    force: bool = False  # replace K/V projected by other weights (videos intact with these weights are kept)
    threads: int = 0  # runtime intra-op threads (0: its default)
    batch: int = DEFAULT_BATCH
    progress: bool = True


@dataclass(frozen=True)
class ProjectResult:
    bank: Path
    weights: ProjectionWeights
    runner: str
    projected: list[str]  # videos whose K/V this run wrote (all processes of a torchrun group)
    kept: list[str]  # videos that already held intact K/V of these weights (sha256 checked)
    entries: int  # entries projected by this run
    seconds: float
    processes: int = 1  # torchrun's WORLD_SIZE

    def to_dict(self) -> dict:
        return {"bank": str(self.bank), "weights": self.weights.to_dict(), "runner": self.runner,
                "projected_videos": len(self.projected), "kept_videos": len(self.kept),
                "entries_projected": self.entries, "seconds": round(self.seconds, 3),
                "processes": self.processes}


def eager_projection_weights(checkpoint: str | Path | None, model_config) -> ProjectionWeights:
    """Weights of an eager model: its checkpoint file's sha256, or load_model's seed-0 random init."""
    digest = sha256_file(checkpoint) if checkpoint else None
    return ProjectionWeights(digest, None if digest else 0, model_config.name, int(model_config.head.depth))


def projection_weights(source: str | Path, runner: Runner | None = None) -> ProjectionWeights:
    """The weights behind an export folder, an engine folder (its export's) or `eager:CKPT:CONFIG` (needs `runner`)."""
    text = str(source)
    if text == "eager" or text.startswith("eager:"):
        model = getattr(runner, "model", None)
        if model is None:
            raise InputError(f"{text}: open the eager runner first to know its config")
        checkpoint = text.partition(":")[2].partition(":")[0]
        return eager_projection_weights(checkpoint or None, model.config)
    record = verify_folder(source)
    if record is None:
        raise InputError(f"{source}: no manifest.json or engine.json inside; pass an acfb export or engine folder")
    manifest = record if isinstance(record, ExportManifest) else record.export_manifest
    return ProjectionWeights.of_export(manifest)


def _check_fits(runner: Runner, manifest: BankManifest, bank: Path, weights: ProjectionWeights, source: str) -> None:
    probe = np.zeros((1, *manifest.feature_shape), np.float32)
    try:
        keys, _ = runner.project_bank(probe)
    except InputError:
        raise
    except Exception as exc:  # the runtime's own shape error: say which two things disagree
        raise InputError(f"{bank / MANIFEST_NAME}: field 'feature_shape' {list(manifest.feature_shape)} does not fit "
                         f"{source}'s bank_kv ({str(exc).splitlines()[0][:160]}); use the model the bank was "
                         "extracted for") from None
    if keys.shape != (weights.depth, 1, *manifest.feature_shape):
        raise InputError(f"{bank / MANIFEST_NAME}: field 'feature_shape' {list(manifest.feature_shape)} gives keys "
                         f"{list(keys.shape[2:])} with {source}; use the model the bank was extracted for")


def project_bank_kv(settings: ProjectSettings, on_video: Callable[[str], None] | None = None) -> ProjectResult:
    """Run bank_kv over every entry of every video and store keys/values per video; `on_video(id)` after each.

    Under torchrun each process takes the videos rank, rank + world, ...; the result counts all of them."""
    from acar_deploy.engines.runners.open import open_runner
    from acar_deploy.progress import progress_bar

    if settings.batch < 1:
        raise InputError(f"--batch {settings.batch}: needs 1 or more entries per call")
    bank = Path(settings.bank)
    manifest = BankManifest.load(bank)  # every process reads it before rank 0 rewrites it (after the barrier)
    rank, world = rank_world()
    mine = manifest.videos[rank::world]
    runner = open_runner(settings.engine, RunnerOptions(threads=settings.threads))
    start = time.perf_counter()
    projected: list[str] = []
    kept: list[str] = []
    entries = 0
    with runner, progress_bar(settings.progress) as bar:
        if not runner.supports_stored_kv:
            raise InputError(f"{settings.engine}: this model has no bank_kv part (not an acfb head); project with an "
                             "acfb export folder, an ORT/OpenVINO/TensorRT engine of one, or --checkpoint of an acfb "
                             "model")
        weights = projection_weights(settings.engine, runner)
        previous = manifest.projection
        if previous is not None and previous.weights != weights and not settings.force:
            raise InputError(f"{bank / MANIFEST_NAME}: field 'projection.weights' ({previous.weights.describe()}) is "
                             f"not {runner.name}'s ({weights.describe()}); pass --force to replace the stored K/V")
        _check_fits(runner, manifest, bank, weights, settings.engine)
        label = f"bank project ({runner.name})" + (f" [rank {rank}/{world}]" if world > 1 else "")
        task = bar.add_task(label, total=sum(video.entries for video in mine))
        for video in mine:
            folder = kv_dir(bank, video.video_id)
            remove_stale_temporaries(folder)  # a killed run's half-written kv folder
            record = stored_kv_record(bank, video.video_id)
            if record is not None and record.weights == weights and record.entries == video.entries \
                    and sha256_file(folder / KEYS_NAME) == record.keys_sha256 \
                    and sha256_file(folder / VALUES_NAME) == record.values_sha256:
                kept.append(video.video_id)  # done by an interrupted run (or an earlier one) with these weights
                bar.advance(task, video.entries)
                continue
            _project_video(runner, bank, manifest, video.video_id, weights, settings.batch, lambda n: bar.advance(task, n))
            projected.append(video.video_id)
            entries += video.entries
            if on_video is not None:
                on_video(video.video_id)
    barrier(world)  # every process has committed its videos
    done = gather((projected, kept, entries), world)
    order = {video.video_id: i for i, video in enumerate(manifest.videos)}
    projected = sorted((v for part in done for v in part[0]), key=order.__getitem__)
    kept = sorted((v for part in done for v in part[1]), key=order.__getitem__)
    entries = sum(part[2] for part in done)
    if rank == 0:
        missing = {v.video_id for v in manifest.videos} - set(projected) - set(kept)
        if missing:  # cannot happen when every process ran to the barrier; never name weights for a partial bank
            raise RuntimeError(f"{bank}: no process projected videos {sorted(missing)}")
        projection = BankProjection(weights, runner.name)
        BankManifest(**{**manifest.__dict__, "projection": projection, "format_version": BANK_FORMAT_VERSION}).write(bank)
    barrier(world)  # bank.json is written when any process returns
    return ProjectResult(bank, weights, runner.name, projected, kept, entries,
                         time.perf_counter() - start, world)


def _project_video(runner: Runner, bank: Path, manifest: BankManifest, video_id: str, weights: ProjectionWeights,
                   batch: int, advance: Callable[[int], None]) -> None:
    """K/V of one video in chunks of `batch` entries into memory-mapped arrays of a temporary `kv/` folder,
    renamed into place with kv.json written last (the video's commit)."""
    features, _ = open_video_arrays(bank, manifest, video_id)
    with atomic_dir(kv_dir(bank, video_id), force=True) as tmp:
        keys, values = create_kv_arrays(tmp, manifest, weights.depth, len(features))
        for lo in range(0, len(features), batch):
            hi = min(lo + batch, len(features))
            k, v = runner.project_bank(np.asarray(features[lo:hi]))
            keys[:, lo:hi], values[:, lo:hi] = k, v
            if not (np.isfinite(keys[:, lo:hi]).all() and np.isfinite(values[:, lo:hi]).all()):
                raise InputError(f"{bank / MANIFEST_NAME}: keys/values of video {video_id} overflow "
                                 f"{manifest.precision}; extract the bank with --precision fp32")
            advance(hi - lo)
        for array in (keys, values):
            if isinstance(array, np.memmap):
                array.flush()
        del keys, values
        commit_kv_record(tmp, video_id, len(features), weights)


__all__ = ["ProjectResult", "ProjectSettings", "eager_projection_weights", "project_bank_kv", "projection_weights"]
