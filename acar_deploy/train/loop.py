"""Training the eager model: official loss and schedule, DDP through torchrun, exact resume.

One process per device; `torchrun --nproc-per-node N -m acar_deploy.train ...` sets
RANK/WORLD_SIZE and each process joins a gloo (CPU) or NCCL (GPU) group. Each process loads its
share of every global batch (DistributedSampler) and the loss is the official rescaling
`bce * rois_here / rois_everywhere * world_size`, so the averaged DDP gradient equals the gradient
of one process over the whole global batch.

A checkpoint per epoch (`ckpt_<epoch>.pt`, this project's format) holds the weights, the
optimizer state, the iteration and every process's RNG states; data order and augmentation depend
only on (seed, epoch, index), so `--resume` continues bit-exactly where the run stopped.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acar_deploy.errors import InputError, OutputExistsError, check_range
from acar_deploy.progress import progress_bar
from acar_deploy.train.config import TrainConfig, load_train_config, with_overrides

CHECKPOINT_PATTERN = re.compile(r"^ckpt_(\d+)\.pt$")


@dataclass(frozen=True)
class TrainSettings:
    """What `acar-deploy train` does; None means 'from the config file'."""

    config: str  # built-in model config name or YAML (official layout or ours, with a `train:` section)
    data: Path  # dataset folder with dataset.json (e.g. from `acar-deploy synth`)
    out: Path  # run folder: ckpt_<epoch>.pt, history.json, val_predictions_<epoch>.csv
    epochs: int | None = None
    batch_size: int | None = None
    resume: bool = False
    init: Path | None = None  # fine-tune from these weights (classifier re-initialised if classes differ)
    device: str = "cpu"
    workers: int | None = None  # decoding processes per training process; None: cores - 1 (max 4)
    seed: int = 0
    threads: int | None = None  # torch CPU threads per process; None: torch's default
    validate: bool = True
    force: bool = False
    progress: bool = True
    bank: Path | None = None  # acfb models: feature bank of the train split (acar-deploy bank extract)
    val_bank: Path | None = None  # acfb models: feature bank of the val split, for validation

    def __post_init__(self) -> None:
        check_range("--epochs", self.epochs, 1)
        check_range("--batch-size", self.batch_size, 1)
        check_range("--workers", self.workers, 0)
        check_range("--threads", self.threads, 1)


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    lr: float
    val_map: float | None = None


@dataclass
class TrainResult:
    run_dir: Path
    checkpoints: list[Path]
    history: list[EpochRecord] = field(default_factory=list)

    @property
    def final_checkpoint(self) -> Path:
        return self.checkpoints[-1]

    @property
    def val_map(self) -> float | None:
        return self.history[-1].val_map if self.history else None


# --- distributed --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> Distributed:
    """Join the process group torchrun describes in the environment (no-op for one process)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def all_reduce_sum(value: float, dist_info: Distributed, device: Any) -> float:
    if not dist_info.enabled:
        return float(value)
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


# --- model pieces ---------------------------------------------------------------------------------


def set_train_mode(model: Any, freeze_bn: bool, freeze_backbone: bool = False) -> None:
    """train() but BatchNorm layers in eval mode (frozen statistics) when freeze_bn, as `freeze_bn: True`;
    the whole backbone in eval mode when it is frozen (head-only fine-tuning)."""
    import torch

    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    if freeze_backbone:
        getattr(model, "module", model).backbone.eval()


def make_optimizer(model: Any, config: TrainConfig) -> Any:
    import torch

    opt = config.optimizer
    return torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.scheduler.base_lr,
        momentum=opt.momentum,
        weight_decay=opt.weight_decay,
        nesterov=opt.nesterov,
    )


def train_step(
    model: Any,
    optimizer: Any,
    batch: dict[str, Any],
    device: Any,
    dist_info: Distributed = Distributed(),
    scaler: Any = None,
) -> tuple[float, int]:
    """One optimisation step on this process's part of the global batch -> (global mean loss, global rois)."""
    import torch

    from acar_deploy.bank.dataset import bank_inputs
    from acar_deploy.train.loss import ava_loss

    clips = batch["clips"].to(device, non_blocking=True)
    rois = batch["rois"].to(device, non_blocking=True)
    bank = bank_inputs(batch, device)
    targets = batch["targets"].to(device, non_blocking=True)
    num_rois = int(rois.shape[0])
    total_rois = all_reduce_sum(num_rois, dist_info, device)
    if total_rois == 0:
        return 0.0, 0
    optimizer.zero_grad(set_to_none=True)
    use_amp = scaler is not None
    with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
        if num_rois > 0:
            logits = model(clips, rois, *bank)
        else:  # keep DDP's collective in step: a forward whose loss is 0
            if bank:
                bank = (bank[0][:0], torch.zeros(1, 0, dtype=torch.bool, device=device))
            logits = model(clips[:1], torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0]], device=device), *bank)
    if num_rois > 0:
        loss = ava_loss(logits, targets) * (num_rois / total_rois * dist_info.world_size)
    else:
        loss = logits.float().sum() * 0.0
    if use_amp:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    mean_loss = all_reduce_sum(float(loss.detach()), dist_info, device) / dist_info.world_size
    return mean_loss, int(total_rois)


# --- checkpoints ------------------------------------------------------------------------------------


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), run_dir / name) for name in os.listdir(run_dir) if (m := CHECKPOINT_PATTERN.match(name))]
    return sorted(found)


def rng_state() -> dict[str, Any]:
    """This process's RNG states as plain data (loadable with weights_only)."""
    import torch

    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states(dist_info: Distributed) -> list[dict[str, Any]]:
    if not dist_info.enabled:
        return [rng_state()]
    import torch.distributed as dist

    states: list[Any] = [None] * dist_info.world_size
    dist.all_gather_object(states, rng_state())
    return states


def load_init_weights(model: Any, path: Path) -> list[str]:
    """Copy weights from any checkpoint layout `load_model` reads; returns the keys left at init.

    Strict, except the classifier (`head.fc2` / `head.fc`), which keeps its initialisation when the
    checkpoint's class count differs (fine-tuning to another label set).
    """
    from acar_deploy.model.checkpoint import _state_dict_for_model, check_finite_weights, resolve_checkpoint

    obj, fmt, _, source = resolve_checkpoint(path, model.config)
    state = _state_dict_for_model(obj, fmt)
    check_finite_weights(state, source)
    own = model.state_dict()
    classifier = {k for k in own if k.startswith(("head.fc2.", "head.fc."))}
    skipped = sorted(k for k in classifier if k in state and tuple(state[k].shape) != tuple(own[k].shape))
    state = {k: v for k, v in state.items() if k not in skipped}
    missing = [k for k in own if k not in state and k not in skipped and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        bad = (missing + unexpected + mismatched)[:3]
        raise InputError(
            f"{source}: --init weights do not fit config {model.config.name!r} ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(mismatched)} shape-mismatched keys, e.g. {', '.join(bad)}); "
            "pass the config the checkpoint was trained with"
        )
    model.load_state_dict({**own, **state}, strict=True)
    return skipped


# --- the loop ---------------------------------------------------------------------------------------


def _check_run_dir(settings: TrainSettings) -> list[tuple[int, Path]]:
    """Checkpoints to resume from; refuses a run folder with checkpoints unless --resume or --force.

    Nothing is created or deleted here: with --force the old checkpoints stay until the new run
    has finished (see `_run_folder`).
    """
    from acar_deploy.artifacts import check_output_path, remove_stale_temporaries

    run_dir = check_output_path(settings.out, "folder")
    remove_stale_temporaries(run_dir)  # a killed --force run's staging folder (only dead writers')
    existing = list_checkpoints(run_dir)
    if existing and not settings.resume and not settings.force:
        raise OutputExistsError(f"{run_dir} already holds checkpoints: pass --resume to continue or --force to restart")
    return existing if settings.resume else []


def _run_folder(settings: TrainSettings, dist_info: Distributed) -> Any:
    """Where this run writes: the run folder itself, or (--force over an existing folder) a staging
    folder beside it that replaces the old one only once every epoch is done.

    A killed --force run thus leaves the old run untouched (its staging folder is removed by the
    next run on that output); a fresh run writes in place, so a killed one can be --resume'd.
    """
    import contextlib

    from acar_deploy.artifacts import atomic_dir

    run_dir = Path(settings.out)
    if not dist_info.is_main:
        return contextlib.nullcontext(run_dir)
    if settings.force and not settings.resume and run_dir.exists():
        return atomic_dir(run_dir, force=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    return contextlib.nullcontext(run_dir)


def train(
    settings: TrainSettings,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
) -> TrainResult:
    """Train (or resume) per `settings`; returns the checkpoints and the per-epoch loss, lr and val mAP.

    `on_epoch_end` runs after each epoch's checkpoint is written (progress reporting, tests that
    interrupt a run).
    """
    import torch

    from acar_deploy.data.clips import ClipSpec
    from acar_deploy.data.dataset import (
        Augmentation,
        KeyframeDataset,
        collate_keyframes,
        default_workers,
        load_dataset,
        make_loader,
        model_class_ids,
    )
    from acar_deploy.model.acar import ACARModel
    from acar_deploy.model.checkpoint import read_checkpoint, save_checkpoint
    from acar_deploy.model.config import get_config
    from acar_deploy.train.schedule import learning_rate

    if settings.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device on this machine; use --device cpu")
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    import torch.distributed as torch_dist

    group_existed = torch_dist.is_available() and torch_dist.is_initialized()
    dist_info = init_distributed(settings.device)
    device = torch.device(f"cuda:{dist_info.local_rank}" if settings.device.startswith("cuda") else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)

    model_config = get_config(settings.config)
    config_path = Path(settings.config) if Path(settings.config).is_file() else None
    train_config = with_overrides(load_train_config(config_path), n_epochs=settings.epochs, batch_size=settings.batch_size)
    data = load_dataset(settings.data)
    existing = _check_run_dir(settings)

    spec = ClipSpec.from_model_config(model_config, fps=data.fps)
    train_set = KeyframeDataset(
        data.train_keyframes(), data.media_dir, model_class_ids(model_config.head.num_classes), spec=spec,
        start_seconds=data.start_seconds,
        augmentation=Augmentation(flip=train_config.flip, jitter_scale=train_config.jitter_scale),
        seed=settings.seed,
    )
    if len(train_set) == 0:
        raise InputError(f"{settings.data}: the train split has no keyframes with boxes")
    train_set, collate, val_bank = _with_bank(train_set, settings, model_config)
    workers = default_workers() if settings.workers is None else settings.workers
    loader = make_loader(train_set, train_config.batch_size, shuffle=True, num_workers=workers,
                         rank=dist_info.rank, world_size=dist_info.world_size, seed=settings.seed, collate=collate)
    steps_per_epoch = len(loader)

    torch.manual_seed(settings.seed)
    model = ACARModel(model_config)
    start_epoch = 0
    resume_state = None
    if existing:
        last_epoch, last_path = existing[-1]
        resume_state = read_checkpoint(last_path)
        model.load_state_dict(resume_state["state_dict"], strict=True)
        start_epoch = int(resume_state["epoch"])
    elif settings.init is not None:
        load_init_weights(model, Path(settings.init))
    if train_config.freeze_backbone:
        model.backbone.requires_grad_(False)
    model.to(device)
    ddp_model = model
    if dist_info.enabled:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = make_optimizer(model, train_config)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
    history: list[EpochRecord] = []
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        if scaler is not None and resume_state.get("grad_scaler"):
            scaler.load_state_dict(resume_state["grad_scaler"])
        history = [EpochRecord(**h) for h in resume_state.get("history", [])]
        states = resume_state.get("rng", [])
        if len(states) == dist_info.world_size:
            set_rng_state(states[dist_info.rank])
    else:
        torch.manual_seed(settings.seed + dist_info.rank)  # dropout differs per process, like separate GPUs

    contexts = None
    if train_config.freeze_backbone:
        from acar_deploy.train.context_cache import context_cache_for

        model.backbone.eval()
        contexts = context_cache_for(train_set, model, device, collate or collate_keyframes, len(loader.sampler),
                                     train_config.flip, train_config.context_cache_mib)
    checkpoints = [p for _, p in existing]
    final_dir = Path(settings.out)
    progress = progress_bar(settings.progress and dist_info.is_main, "loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.4g}")
    with _run_folder(settings, dist_info) as run_dir, progress:
        for epoch in range(start_epoch + 1, train_config.n_epochs + 1):
            loader.sampler.set_epoch(epoch)
            train_set.set_epoch(epoch)
            set_train_mode(ddp_model, train_config.freeze_bn, train_config.freeze_backbone)
            task = progress.add_task(f"epoch {epoch}/{train_config.n_epochs}", total=steps_per_epoch, loss=0.0, lr=0.0)
            loss_sum, roi_sum, lr = 0.0, 0, 0.0
            batches = loader if contexts is None else contexts.batches(list(loader.sampler), train_config.batch_size)
            for i, batch in enumerate(batches):
                iteration = (epoch - 1) * steps_per_epoch + i
                lr = learning_rate(iteration, steps_per_epoch, train_config.scheduler)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss, rois = train_step(ddp_model, optimizer, batch, device, dist_info, scaler)
                loss_sum += loss * rois
                roi_sum += rois
                progress.update(task, advance=1, loss=loss_sum / max(roi_sum, 1), lr=lr)
            record = EpochRecord(epoch=epoch, loss=loss_sum / max(roi_sum, 1), lr=lr)
            rng = gather_rng_states(dist_info)
            if dist_info.is_main:
                if settings.validate and data.has_val:
                    record.val_map = _validate(model, data, model_config, spec, device, run_dir, epoch, workers,
                                               val_bank)
                history.append(record)
                path = run_dir / f"ckpt_{epoch}.pt"
                save_checkpoint(
                    model, path, force=True, epoch=epoch, iteration=epoch * steps_per_epoch,
                    optimizer=optimizer.state_dict(), scheduler={"type": "step", "last_iteration": epoch * steps_per_epoch - 1},
                    grad_scaler=scaler.state_dict() if scaler is not None else {},
                    rng=rng, history=[vars(h) for h in history], train_config=_plain(train_config),
                    seed=settings.seed, world_size=dist_info.world_size,
                )
                checkpoints.append(final_dir / path.name)
                _write_history(run_dir, history)
                progress.console.print(
                    f"epoch {epoch}: loss {record.loss:.4f}, lr {record.lr:.4g}"
                    + (f", val frame-mAP {record.val_map:.4f}" if record.val_map is not None else "")
                )
            else:
                history.append(record)
            if dist_info.enabled:
                import torch.distributed as dist

                dist.barrier()
            if on_epoch_end is not None:
                on_epoch_end(record)
    if dist_info.enabled and not group_existed:
        torch_dist.destroy_process_group()
    return TrainResult(run_dir=final_dir, checkpoints=checkpoints, history=history)


def _plain(obj: Any) -> Any:
    from dataclasses import asdict

    def conv(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v

    return conv(asdict(obj))


def _write_history(run_dir: Path, history: list[EpochRecord]) -> None:
    from acar_deploy.artifacts import write_json

    write_json(run_dir / "history.json", [vars(h) for h in history])


def _validate(model: Any, data: Any, model_config: Any, spec: Any, device: Any, run_dir: Path, epoch: int,
              workers: int, val_bank: Any = None) -> float:
    """Frame-mAP on the val split (proposals >= 0.85), predictions written to val_predictions_<epoch>.csv."""
    from acar_deploy.detect import evaluate_split

    result = evaluate_split(model, data, spec, device, run_dir / f"val_predictions_{epoch}.csv", workers=workers,
                            bank=val_bank)
    return result.mAP


def _with_bank(train_set: Any, settings: TrainSettings, model_config: Any) -> tuple[Any, Any, Any]:
    """(dataset, collate, val bank): an acfb model's samples carry their bank window; others unchanged."""
    if model_config.head.type != "acfb":
        if settings.bank is not None or settings.val_bank is not None:
            raise InputError(f"--bank: the model config's head.type is {model_config.head.type!r}; "
                             "a feature bank is used by acfb models only")
        return train_set, None, None
    if settings.bank is None:
        raise InputError("an acfb model trains with a feature bank: pass --bank (acar-deploy bank extract)")
    if settings.validate and settings.val_bank is None:
        raise InputError("an acfb model validates with the val split's feature bank: pass --val-bank "
                         "(acar-deploy bank extract --split val) or --no-val")
    from acar_deploy.bank.dataset import BankKeyframeDataset, collate_with_bank, open_bank_for

    head = model_config.head
    bank = open_bank_for(settings.bank, model_config, "train")
    val_bank = open_bank_for(settings.val_bank, model_config, "val") if settings.val_bank is not None else None
    return BankKeyframeDataset(train_set, bank, head.bank_window, head.bank_causal), collate_with_bank, val_bank
