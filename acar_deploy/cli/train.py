"""`acar-deploy train`: train or fine-tune the eager model (one process, or many under torchrun)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from acar_deploy.cli.app import app
from acar_deploy.cli.errors import handle_errors
from acar_deploy.cli.options import Config, Device, Force, Format, Out, OutputFormat
from acar_deploy.jsonout import dumps


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
    config: Config,
    data: Annotated[Path, typer.Option(help="Dataset folder with dataset.json (e.g. from `acar-deploy synth`).")],
    out: Out,
    epochs: Annotated[int | None, typer.Option(min=1, help="Number of epochs (default: train.n_epochs of the config).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Clips per process per step (default: from the config).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the latest checkpoint in --out.")] = False,
    init: Annotated[
        Path | None, typer.Option(help="Start from these weights (any layout `info` reads); classifier re-initialised "
                                       "if its class count differs.")
    ] = None,
    device: Annotated[Device, typer.Option(help="cpu, or cuda (mixed precision).")] = Device.cpu,
    workers: Annotated[int | None, typer.Option(min=0, help="Decoding processes per training process.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for initialisation, data order and augmentation.")] = 0,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads per process (default: torch's choice).")] = None,
    no_val: Annotated[bool, typer.Option("--no-val", help="Skip the per-epoch validation frame-mAP.")] = False,
    bank: Annotated[Path | None, typer.Option(help="acfb models: feature bank of the train split.")] = None,
    val_bank: Annotated[Path | None, typer.Option(help="acfb models: feature bank of the val split.")] = None,
    output_format: Format = OutputFormat.text,
    force: Force = False,
) -> None:
    """Official loss, SGD + warm-up/step schedule, frozen BN, a checkpoint and val frame-mAP per epoch.

    --out is the run folder (ckpt_<epoch>.pt, history.json, val predictions); --force deletes checkpoints
    already there and starts over. The --config YAML's `train:` section sets the recipe.
    """
    from acar_deploy.train import TrainSettings
    from acar_deploy.train import train as run_training

    result = run_training(
        TrainSettings(config=config, data=data, out=out, epochs=epochs, batch_size=batch_size, resume=resume,
                      init=init, device=device.value, workers=workers, seed=seed, threads=threads, validate=not no_val,
                      force=force, bank=bank, val_bank=val_bank, progress=output_format is OutputFormat.text)
    )
    if int(os.environ.get("RANK", "0")) != 0:  # other processes of a torchrun group stay quiet
        return
    summary = {
        "run_dir": str(result.run_dir),
        "final_checkpoint": str(result.final_checkpoint) if result.checkpoints else None,
        "history": [vars(h) for h in result.history],
    }
    if output_format is OutputFormat.json:
        typer.echo(dumps(summary))
    elif result.checkpoints:
        last = result.history[-1] if result.history else None
        typer.echo(f"final checkpoint: {result.final_checkpoint}"
                   + (f" (val frame-mAP {last.val_map:.4f})" if last is not None and last.val_map is not None else ""))
