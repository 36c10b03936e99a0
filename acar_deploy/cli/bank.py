"""`acar-deploy bank extract|project|info`: build, project (K/V) and inspect an Actor-Context Feature Bank."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from acar_deploy.cli.app import app
from acar_deploy.cli.errors import handle_errors
from acar_deploy.cli.options import AcarCommand, Checkpoint, Config, Device, Force, Format, OutputFormat

bank_app = typer.Typer(no_args_is_help=True, help="Actor-Context Feature Bank: extract first-order maps, store their K/V, inspect.")
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


@bank_app.command(
    "project",
    cls=AcarCommand,
    epilog="Examples:\n\n"
    "  acar-deploy bank project banks/val --engine export/acfb_tiny\n\n"
    "  acar-deploy bank project banks/val --engine engines/acfb_tiny-openvino-fp32 --force --format json\n\n"
    "  acar-deploy bank project banks/val --checkpoint runs/bank/ckpt_4.pt\n\n"
    "  torchrun --nproc-per-node 2 -m acar_deploy bank project BANK --engine export/acfb_tiny --threads 1",
)
@handle_errors
def project(
    bank: Annotated[Path, typer.Argument(help="Bank folder (from `acar-deploy bank extract`); K/V are stored in it.")],
    engine: Annotated[str | None, typer.Option(
        help="acfb export folder, ORT/OpenVINO/TensorRT engine folder of one, or eager:CKPT:CONFIG: runs its "
             "bank_kv part.")] = None,
    checkpoint: Checkpoint = None,
    config: Config = None,
    threads: Annotated[int, typer.Option("--threads", min=0, help="Runtime threads (0: its default).")] = 0,
    output_format: Format = OutputFormat.text,
    force: Annotated[bool, typer.Option("--force", help="Replace K/V projected by other weights (videos already projected by these are kept).")] = False,
) -> None:
    """Store every entry's bank keys and values (the bank_kv part) in the bank, per video, memory-mapped
    (under torchrun the videos are split across the processes)."""
    from acar_deploy.engines.bank_projection import ProjectSettings, project_bank_kv
    from acar_deploy.errors import InputError

    if (engine is None) == (checkpoint is None):
        raise InputError("bank project: pass exactly one of --engine DIR and --checkpoint CKPT")
    source = engine if engine is not None else f"eager:{checkpoint}:{config or ''}"
    result = project_bank_kv(ProjectSettings(bank=bank, engine=source, force=force, threads=threads,
                                             progress=output_format is OutputFormat.text))
    if int(os.environ.get("RANK", "0")) != 0:  # other processes of a torchrun group stay quiet
        return
    if output_format is OutputFormat.json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    typer.echo(f"stored K/V of {result.entries} entries in {len(result.projected)} videos of {result.bank} "
               f"({len(result.kept)} already done) with {result.runner} ({result.weights.describe()}) "
               f"in {result.seconds:.1f} s" + (f" ({result.processes} processes)" if result.processes > 1 else ""))


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
        f"max {result.window_entries_max}\n"
        + (f"keys/values stored by {result.projection['runner']} (checkpoint sha256 "
           f"{result.projection['weights']['checkpoint_sha256']}, depth {result.projection['weights']['depth']})"
           if result.projection else "keys/values not stored (acar-deploy bank project)")
    )
