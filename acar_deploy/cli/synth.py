"""`acar-deploy synth`: a synthetic AVA-format dataset (videos, CSVs, label map, CPU config)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from acar_deploy.cli.errors import handle_errors
from acar_deploy.cli.main import app
from acar_deploy.cli.options import OutputFormat


@app.command(
    "synth",
    epilog=(
        "Examples:\n\n"
        "  acar-deploy synth data/synth\n\n"
        "  acar-deploy synth data/synth --videos 24 --seconds 5 --seed 3 --frames --force"
    ),
)
@handle_errors
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Dataset folder to write (dataset.json, videos/, CSVs, config.yaml).")],
    videos: Annotated[int, typer.Option(help="Number of videos; the last quarter is the val split.")] = 48,
    seconds: Annotated[int, typer.Option(help="Length of each video; keyframes at 1 .. seconds-1.")] = 3,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same dataset.")] = 0,
    size: Annotated[str, typer.Option(help="Frame WIDTHxHEIGHT in pixels.")] = "128x96",
    frames: Annotated[
        bool, typer.Option("--frames", help="Also write frame folders <id>/<id>_%06d.jpg and train from them.")
    ] = False,
    temporal: Annotated[
        bool, typer.Option("--temporal", help="Add a watch-TV event that only the clip of one keyframe shows (for the feature bank).")
    ] = False,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="Print text or JSON.")] = OutputFormat.text,
    force: Annotated[bool, typer.Option(help="Replace an existing OUT_DIR.")] = False,
) -> None:
    """Write short videos of actors whose AVA actions can be seen, with annotations, proposals and a config."""
    from acar_deploy.data.synth import SynthSettings, parse_size, synthesize

    width, height = parse_size(size)
    result = synthesize(
        SynthSettings(out_dir=out_dir, videos=videos, seconds=seconds, seed=seed, width=width, height=height,
                      frame_folders=frames, force=force, temporal=temporal)
    )
    summary = {
        "out_dir": str(result.out_dir),
        "train_videos": len(result.train_videos),
        "val_videos": len(result.val_videos),
        "train_boxes": result.train_boxes,
        "val_boxes": result.val_boxes,
        "config": str(result.out_dir / "config.yaml"),
    }
    if output_format is OutputFormat.json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(
            f"wrote {result.out_dir}: {summary['train_videos']} train / {summary['val_videos']} val videos, "
            f"{summary['train_boxes']} / {summary['val_boxes']} boxes\n"
            f"train with: acar-deploy train --config {summary['config']} --data {result.out_dir} --out runs/synth"
        )
