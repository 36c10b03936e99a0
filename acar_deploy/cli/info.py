"""`acar-deploy info`: what a checkpoint holds (layout, architecture, parameters, expected input)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from acar_deploy.cli.app import app
from acar_deploy.cli.errors import handle_errors
from acar_deploy.cli.options import Config, Format, OutputFormat
from acar_deploy.jsonout import dumps


@app.command(
    "info",
    help="Describe a checkpoint: detected layout, architecture, parameters per part, classes, expected input.\n\n"
    "Reads official model-zoo files (flat DDP state_dict), official training checkpoints, Kinetics SlowFast "
    "backbones and this project's checkpoints (which carry their config, so --config is optional there).\n\n"
    "Examples:\n\n"
    "  acar-deploy info model_zoo/AVA_SLOWFAST_R50_ACAR_HR2O.pth.tar --config acar_r50\n\n"
    "  acar-deploy info AVA_SLOWFAST_R101_ACAR_HR2O_DEPTH1.pth.tar --config configs/AVA/eval_SLOWFAST_R101_ACAR_HR2O_DEPTH1.yaml\n\n"
    "  acar-deploy info checkpoints/acar_tiny.pt --format json",
)
@handle_errors
def info_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file (.pth.tar / .pt).")],
    config: Config = None,
    output_format: Format = OutputFormat.text,
) -> None:
    from acar_deploy.model.checkpoint import summarize_checkpoint

    summary = summarize_checkpoint(checkpoint, config)
    if output_format is OutputFormat.json:
        typer.echo(dumps(summary))
        return
    arch, params, inp = summary["architecture"], summary["parameters"], summary["input"]
    norm = inp["normalization"]
    head = arch["head"] + (f", HR2O depth {arch['hr2o_depth']}" if arch["hr2o_depth"] is not None else "")
    lines = [
        f"checkpoint   {summary['checkpoint']}",
        f"format       {summary['format']}",
        f"config       {summary['config']}",
        f"backbone     {arch['backbone']} blocks {arch['layers']}, alpha {arch['alpha']}, beta {arch['beta']}, "
        f"lateral {arch['lateral']}, slow frames {arch['slow_frames']}",
        f"head         {head}, context channels {arch['context_channels']}",
        f"parameters   backbone {params['backbone']:,}  head {params['head']:,}  total {params['total']:,}",
        f"classes      {summary['num_classes']}",
        f"input        clips {_shape(inp['clips'])} (short side {inp['short_side']}), rois {_shape(inp['rois'])} "
        "(batch_index, x1, y1, x2, y2 in [0, 1])",
        f"normalise    (pixels / {norm['norm_value']:g} - mean {norm['mean']}) / std {norm['std']}, RGB",
    ]
    typer.echo("\n".join(lines))


def _shape(dims: list) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"
