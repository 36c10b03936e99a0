"""`acar-deploy evaluate`: AVA frame-mAP of a prediction CSV against ground truth (no torch)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from acar_deploy.cli.app import app
from acar_deploy.cli.errors import handle_errors
from acar_deploy.cli.options import Format, OutputFormat
from acar_deploy.jsonout import dumps


class ProtocolChoice(str, Enum):
    head = "head"
    v2019 = "2019"


@app.command(
    "evaluate",
    help="AVA frame-mAP@0.5 of a prediction CSV, exactly as ActivityNet's get_ava_performance.py computes it.\n\n"
    "--protocol head (default) is ActivityNet HEAD: 2-column rows mark keyframes without actions and "
    "detections on keyframes outside the ground truth are ignored. --protocol 2019 is the version "
    "ACAR-Net and PySlowFast report with (%04d timestamps, an exclusions file, such detections count as "
    "false positives).\n\n"
    "Examples:\n\n"
    "  acar-deploy evaluate --gt ava_val_v2.2.csv --pred predict.csv\n\n"
    "  acar-deploy evaluate --gt ava_val_v2.1.csv --pred predict.csv --protocol 2019 "
    "--exclusions ava_val_excluded_timestamps_v2.1.csv --format json",
)
@handle_errors
def evaluate_command(
    gt: Annotated[
        Path,
        typer.Option("--gt", help="Ground-truth CSV: video_id,timestamp,x1,y1,x2,y2,action_id[,person_id]."),
    ],
    pred: Annotated[
        Path, typer.Option("--pred", help="Prediction CSV: video_id,timestamp,x1,y1,x2,y2,action_id,score.")
    ],
    labelmap: Annotated[
        Path | None,
        typer.Option("--labelmap", help="Label map pbtxt; default: the packaged AVA v2.1 list (60 classes)."),
    ] = None,
    exclusions: Annotated[
        Path | None, typer.Option("--exclusions", help="CSV of video_id,timestamp keyframes to leave out.")
    ] = None,
    protocol: Annotated[
        ProtocolChoice, typer.Option("--protocol", help="Official evaluator version.")
    ] = ProtocolChoice.head,
    output_format: Format = OutputFormat.text,
) -> None:
    from acar_deploy.data.labelmap import read_labelmap
    from acar_deploy.eval import frame_map

    classes = read_labelmap(labelmap)
    result = frame_map(gt, pred, labelmap=classes, exclusions=exclusions, protocol=protocol.value)
    if output_format is OutputFormat.json:
        typer.echo(dumps(result.to_json()))
        return

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"AVA frame-mAP@0.5 ({protocol.value} protocol)")
    table.add_column("id", justify="right")
    table.add_column("class")
    table.add_column("AP", justify="right")
    for class_id, name in zip(classes.ids, classes.names, strict=True):
        ap = result.per_class[class_id]
        table.add_row(str(class_id), name, "no ground truth" if ap is None else f"{ap:.4f}")
    console = Console()
    console.print(table)
    evaluated = sum(ap is not None for ap in result.per_class.values())
    console.print(f"mAP = {result.mAP:.4f} over {evaluated} classes with ground truth")
