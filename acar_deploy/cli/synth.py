"""`acar-deploy synth`: a synthetic AVA-format dataset (videos, CSVs, label map, CPU config)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from acar_deploy.cli.app import app
from acar_deploy.cli.errors import handle_errors
from acar_deploy.cli.options import Force, Format, OutputFormat, Size
from acar_deploy.jsonout import dumps


@app.command(
    "synth",
    epilog=(
        "Examples:\n\n"
        "  acar-deploy synth data/synth\n\n"
        "  acar-deploy synth data/synth --videos 24 --video-seconds 5 --size 120x160 --seed 3 --frame-folders --force"
    ),
)
@handle_errors
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Dataset folder to write (dataset.json, videos/, CSVs, config.yaml).")],
    videos: Annotated[int, typer.Option(min=2, help="Number of videos; the last quarter is the val split.")] = 48,
    video_seconds: Annotated[
        int, typer.Option("--video-seconds", min=3, help="Length of each video; keyframes at 1 .. seconds-1.")
    ] = 3,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same dataset.")] = 0,
    size: Size = "96x128",  # type: ignore[assignment]  # parsed by Size
    frame_folders: Annotated[
        bool, typer.Option("--frame-folders", help="Also write frame folders <id>/<id>_%06d.jpg and train from them.")
    ] = False,
    temporal: Annotated[
        bool, typer.Option("--temporal", help="Add a watch-TV event that only the clip of one keyframe shows, labelled watch at "
                     "every keyframe and listen at that one (for the feature bank).")
    ] = False,
    output_format: Format = OutputFormat.text,
    force: Force = False,
) -> None:
    """Write short videos of actors whose AVA actions can be seen, with annotations, proposals and a config."""
    from acar_deploy.data.synth import SynthSettings, synthesize

    result = synthesize(
        SynthSettings(out_dir=out_dir, videos=videos, seconds=video_seconds, seed=seed, width=size.width,
                      height=size.height,
                      frame_folders=frame_folders, force=force, temporal=temporal,
                      progress=output_format is OutputFormat.text)
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
        typer.echo(dumps(summary))
    else:
        typer.echo(
            f"wrote {result.out_dir}: {summary['train_videos']} train / {summary['val_videos']} val videos, "
            f"{summary['train_boxes']} / {summary['val_boxes']} boxes\n"
            f"train with: acar-deploy train --config {summary['config']} --data {result.out_dir} --out runs/synth"
        )
