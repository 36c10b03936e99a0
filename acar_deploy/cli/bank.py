"""`acar-deploy bank extract|info`: build and inspect an Actor-Context Feature Bank."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from acar_deploy.cli.app import app
from acar_deploy.cli.errors import handle_errors
from acar_deploy.cli.options import AcarCommand, Device, Force, Format, OutputFormat

bank_app = typer.Typer(no_args_is_help=True, help="Actor-Context Feature Bank: extract first-order maps, inspect.")
app.add_typer(bank_app, name="bank")


@bank_app.command(
    "extract",
    cls=AcarCommand,
    epilog="Examples:\n\n"
    "  acar-deploy bank extract --checkpoint runs/synth/ckpt_8.pt --data data/synth --out banks/train\n\n"
    "  acar-deploy bank extract --checkpoint runs/synth/ckpt_8.pt --data data/synth --out banks/val --split val "
    "--precision fp32 --resume\n\n"
    "  torchrun --nproc-per-node 2 -m acar_deploy bank extract --checkpoint CKPT --data DIR --out BANK",
)
@handle_errors
def extract(
    checkpoint: Annotated[Path, typer.Option(help="No-bank ACAR checkpoint whose first-order maps are archived.")],
    data: Annotated[Path, typer.Option(help="Dataset folder with dataset.json.")],
    out: Annotated[Path, typer.Option(help="Bank folder to write (bank.json, videos/<id>/*.npy).")],
    config: Annotated[str | None, typer.Option(help="Model config (not needed for acar-deploy checkpoints).")] = None,
    split: Annotated[str, typer.Option(help="train (ground truth + proposals) or val (proposals).")] = "train",
    precision: Annotated[str, typer.Option(help="Storage precision of the features: fp16 or fp32.")] = "fp16",
    device: Annotated[Device, typer.Option(help="cpu or cuda.")] = Device.cpu,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted extraction of the same bank.")] = False,
    output_format: Format = OutputFormat.text,
    force: Force = False,
) -> None:
    """Archive the first-order actor-context relation maps of every box of every keyframe, per video."""
    from acar_deploy.bank.extract import ExtractSettings, extract_bank

    result = extract_bank(ExtractSettings(checkpoint=checkpoint, data=data, out=out, config=config, split=split,
                                          precision=precision, resume=resume, force=force, device=device.value))
    if int(os.environ.get("RANK", "0")) != 0:  # other processes of a torchrun group stay quiet
        return
    summary = {"out": str(result.out), "videos": len(result.manifest.videos), "entries": result.manifest.entries,
               "extracted_videos": len(result.extracted), "resumed_videos": len(result.resumed)}
    if output_format is OutputFormat.json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(f"wrote {result.out}: {summary['entries']} entries in {summary['videos']} videos "
                   f"({summary['resumed_videos']} kept from an interrupted run)")


@bank_app.command("info", cls=AcarCommand, epilog="Examples:\n\n  acar-deploy bank info banks/train --window 10 --format json")
@handle_errors
def info(
    bank: Annotated[Path, typer.Argument(help="Bank folder (from `acar-deploy bank extract`).")],
    window: Annotated[int, typer.Option(help="Half-width w of the window [t-w, t+w] in seconds.")] = 10,
    causal: Annotated[bool, typer.Option("--causal", help="Window statistics for [t-w, t] instead.")] = False,
    output_format: Format = OutputFormat.text,
) -> None:
    """Size, entries, videos and entries per window of a feature bank."""
    from acar_deploy.bank.info import BankInfoSettings, bank_info

    result = bank_info(BankInfoSettings(path=bank, half_width=window, causal=causal))
    if output_format is OutputFormat.json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    span = f"[t-{window}, t]" if causal else f"[t-{window}, t+{window}]"
    typer.echo(
        f"{result.path}: {result.size_bytes / 2**20:.2f} MiB, {result.entries} entries "
        f"({result.precision}, {list(result.feature_shape)}) in {result.videos} videos, {result.keyframes} keyframes\n"
        f"split {result.split} ({result.boxes}); source {result.source.get('checkpoint')} ({result.source.get('config')})\n"
        f"entries per window {span}: min {result.window_entries_min}, mean {result.window_entries_mean:.1f}, "
        f"max {result.window_entries_max}"
    )
