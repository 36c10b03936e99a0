"""`acar-deploy train`: train or fine-tune the eager model (one process, or many under torchrun)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from acar_deploy.cli.errors import handle_errors
from acar_deploy.cli.main import app
from acar_deploy.cli.options import Device, OutputFormat


@app.command(
    "train",
    epilog=(
        "Examples:\n\n"
        "  acar-deploy train --config data/synth/config.yaml --data data/synth --out runs/synth\n\n"
        "  acar-deploy train --config data/synth/config.yaml --data data/synth --out runs/synth --resume\n\n"
        "  torchrun --nproc-per-node 2 -m acar_deploy.train --config data/synth/config.yaml "
        "--data data/synth --out runs/ddp\n\n"
        "  acar-deploy train --config acar_r50 --data data/ava --out runs/ft --init AVA_SLOWFAST_R50_ACAR_HR2O.pth.tar "
        "--device cuda"
    ),
)
@handle_errors
def train(
    config: Annotated[str, typer.Option(help="Model config: built-in name or YAML (its `train:` section sets the recipe).")],
    data: Annotated[Path, typer.Option(help="Dataset folder with dataset.json (e.g. from `acar-deploy synth`).")],
    out: Annotated[Path, typer.Option(help="Run folder: ckpt_<epoch>.pt, history.json, val predictions.")],
    epochs: Annotated[int | None, typer.Option(help="Number of epochs (default: train.n_epochs of the config).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Clips per process per step (default: from the config).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the latest checkpoint in --out.")] = False,
    init: Annotated[
        Path | None, typer.Option(help="Start from these weights (any layout `info` reads); classifier re-initialised "
                                       "if its class count differs.")
    ] = None,
    device: Annotated[Device, typer.Option(help="cpu, or cuda (mixed precision).")] = Device.cpu,
    workers: Annotated[int | None, typer.Option(help="Decoding processes per training process.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for initialisation, data order and augmentation.")] = 0,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads per process (default: torch's choice).")] = None,
    no_val: Annotated[bool, typer.Option("--no-val", help="Skip the per-epoch validation frame-mAP.")] = False,
    bank: Annotated[Path | None, typer.Option(help="acfb models: feature bank of the train split.")] = None,
    val_bank: Annotated[Path | None, typer.Option(help="acfb models: feature bank of the val split.")] = None,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="Print text or JSON.")] = OutputFormat.text,
    force: Annotated[bool, typer.Option(help="Delete checkpoints already in --out and start over.")] = False,
) -> None:
    """Official loss, SGD + warm-up/step schedule, frozen BN, a checkpoint and val frame-mAP per epoch."""
    from acar_deploy.train import TrainSettings
    from acar_deploy.train import train as run_training

    result = run_training(
        TrainSettings(config=config, data=data, out=out, epochs=epochs, batch_size=batch_size, resume=resume,
                      init=init, device=device.value, workers=workers, seed=seed, threads=threads, validate=not no_val,
                      force=force, bank=bank, val_bank=val_bank)
    )
    if int(os.environ.get("RANK", "0")) != 0:  # other processes of a torchrun group stay quiet
        return
    summary = {
        "run_dir": str(result.run_dir),
        "final_checkpoint": str(result.final_checkpoint) if result.checkpoints else None,
        "history": [vars(h) for h in result.history],
    }
    if output_format is OutputFormat.json:
        typer.echo(json.dumps(summary, indent=2))
    elif result.checkpoints:
        last = result.history[-1] if result.history else None
        typer.echo(f"final checkpoint: {result.final_checkpoint}"
                   + (f" (val frame-mAP {last.val_map:.4f})" if last is not None and last.val_map is not None else ""))
