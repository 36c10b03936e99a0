"""`acar-deploy detect`: AVA predictions (and rendered keyframes) for one video and its person boxes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from acar_deploy.cli.app import app
from acar_deploy.cli.errors import handle_errors
from acar_deploy.cli.options import Checkpoint, Config, Device, Force, Format, Out, OutputFormat
from acar_deploy.errors import InputError
from acar_deploy.jsonout import dumps


@app.command(
    "detect",
    epilog=(
        "Examples:\n\n"
        "  acar-deploy detect --checkpoint runs/synth/ckpt_8.pt --video data/synth/videos/synth009.mp4 "
        "--boxes data/synth/val_proposals.csv --out pred.csv --render renders/ --labelmap data/synth/labelmap.pbtxt\n\n"
        "  acar-deploy detect --checkpoint AVA_SLOWFAST_R50_ACAR_HR2O.pth.tar --config acar_r50 "
        "--frames frames/1j20qq1JyX4 --start-seconds 900 --boxes ava_val_predicted_boxes.csv --out pred.csv"
    ),
)
@handle_errors
def detect(
    checkpoint: Checkpoint,
    boxes: Annotated[Path, typer.Option(help="Person proposals CSV: video_id,timestamp,x1,y1,x2,y2,score.")],
    out: Out,
    video: Annotated[Path | None, typer.Option(help="Video file (decoded with PyAV at 30 fps).")] = None,
    frames: Annotated[Path | None, typer.Option(help="Frame folder <id>_%06d.jpg at 30 fps, 1-based.")] = None,
    config: Config = None,
    render: Annotated[
        Path | None, typer.Option(help="Folder for annotated keyframe PNGs, or a .mp4 file (one keyframe per second).")
    ] = None,
    score_threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="Use proposals scoring at least this.")] = 0.85,
    video_id: Annotated[
        str | None, typer.Option(help="Video id in the CSV (default: the file/folder name, or the only id).")
    ] = None,
    start_seconds: Annotated[float, typer.Option(min=0.0, help="Second the frames start at (900 for AVA frame folders).")] = 0.0,
    labelmap: Annotated[
        Path | None, typer.Option(help="Draw only the classes of this label map (default: all 60 AVA classes).")
    ] = None,
    top_k: Annotated[int, typer.Option(min=1, help="Actions drawn per box.")] = 3,
    device: Annotated[Device, typer.Option(help="cpu or cuda.")] = Device.cpu,
    output_format: Format = OutputFormat.text,
    bank: Annotated[Path | None, typer.Option(help="acfb models: feature bank holding this video.")] = None,
    force: Force = False,
) -> None:
    """Run the model on every keyframe with boxes; write AVA predictions, optionally draw the top actions.

    --out is the AVA predictions CSV to write. Without --config: the config an acar-deploy checkpoint carries.
    """
    if (video is None) == (frames is None):
        raise InputError("give exactly one of --video FILE or --frames DIR")
    from acar_deploy.detect import DetectSettings
    from acar_deploy.detect import detect as run_detect

    result = run_detect(
        DetectSettings(
            checkpoint=checkpoint, media=video if video is not None else frames, boxes=boxes, out=out,  # type: ignore[arg-type]
            config=config, render_dir=render, score_threshold=score_threshold, video_id=video_id,
            start_seconds=start_seconds, labelmap=labelmap, top_k=top_k, device=device.value, force=force,
            progress=output_format is OutputFormat.text,
            bank=bank,
        )
    )
    summary = {"out": str(result.out), "video_id": result.video_id, "keyframes": result.keyframes,
               "boxes": result.boxes, "rendered": [str(p) for p in result.rendered]}
    if output_format is OutputFormat.json:
        typer.echo(dumps(summary))
    else:
        typer.echo(f"{result.video_id}: {result.boxes} boxes on {result.keyframes} keyframes -> {result.out}"
                   + (f"; rendered {len(result.rendered)} keyframes" if result.rendered else ""))
