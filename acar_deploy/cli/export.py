"""`acar-deploy export` and `acar-deploy validate`: ONNX graphs + manifest, checked against eager."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from acar_deploy.cli.app import app
from acar_deploy.cli.errors import handle_errors
from acar_deploy.cli.options import Checkpoint, Config, Force, Format, Out, OutputFormat, parse_size_option
from acar_deploy.data.frame_size import FrameSize
from acar_deploy.jsonout import dumps


class PartsChoice(str, Enum):
    split = "split"
    fused = "fused"
    all = "all"


class NodeChoiceOption(str, Enum):
    onnx = "onnx"
    plugin = "plugin"


def _print_report(report, output_format: OutputFormat, extra: dict | None = None) -> None:
    if output_format == OutputFormat.json:
        typer.echo(dumps({**(extra or {}), **report.to_dict()}))
        return
    from rich.console import Console

    from acar_deploy.export.validate import render_table

    console = Console()
    console.print(render_table(report))
    for line in report.checks:
        console.print(f"  {line}")


@app.command(
    "export",
    epilog=(
        "Examples:\n\n"
        "  acar-deploy export --checkpoint AVA_SLOWFAST_R50_ACAR_HR2O.pth.tar --config acar_r50 --out export/r50\n\n"
        "  acar-deploy export --config acar_tiny --out export/tiny --parts all --size 96x96 --dynamic-size\n\n"
        "  acar-deploy export --checkpoint ckpt.pt --out export/r50-plugin --roi-align plugin --hr2o plugin --force\n\n"
        "  acar-deploy export --checkpoint ckpt.pt --config acar_r50 --out export/r50-faithful --no-restructure"
    ),
)
@handle_errors
def export(
    out: Out,
    checkpoint: Checkpoint = None,
    config: Config = None,
    parts: Annotated[
        PartsChoice, typer.Option(help="split: backbone.onnx + head.onnx; fused: acar.onnx; all: both.")
    ] = PartsChoice.split,
    roi_align: Annotated[
        NodeChoiceOption, typer.Option(help="RoIAlign as ONNX RoiAlign-16 or one ACAR_RoIAlign plugin node.")
    ] = NodeChoiceOption.onnx,
    hr2o: Annotated[
        NodeChoiceOption, typer.Option(help="HR2O attention as standard ops or one ACAR_HR2O plugin node per layer.")
    ] = NodeChoiceOption.onnx,
    opset: Annotated[
        int, typer.Option(min=18, help="ONNX opset; torch's exporter writes 18 and cannot convert this model lower.")
    ] = 18,
    size: Annotated[
        FrameSize | None,
        typer.Option("--size", parser=parse_size_option, metavar="HxW",
                     help="Frame size HEIGHTxWIDTH the graphs are built for (default: the config's short side at "
                          "4:3, e.g. 256x341)."),
    ] = None,
    dynamic_size: Annotated[
        bool, typer.Option("--dynamic-size", help="Make frame height/width dynamic (H, W) too.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the random init when there is no checkpoint.")] = 0,
    no_validate: Annotated[
        bool, typer.Option("--no-validate", help="Skip the ORT-vs-eager comparison (checker still runs).")
    ] = False,
    no_restructure: Annotated[
        bool,
        typer.Option("--no-restructure",
                     help="Export the faithful graph (3D convs, conv1 per actor) instead of the faster twin."),
    ] = False,
    output_format: Format = OutputFormat.text,
    force: Force = False,
) -> None:
    """Export ACAR-Net to ONNX (split and/or fused), check the graphs and compare ORT with eager.

    --out is the export folder (graphs + manifest.json). Without --checkpoint the weights are a seeded
    random init (with a warning).
    """
    from acar_deploy.export.exporter import ExportSettings, NodeChoice, Parts, export_model
    from acar_deploy.export.validate import ValidationError

    settings = ExportSettings(
        parts=Parts(parts.value),
        roi_align=NodeChoice(roi_align.value),
        hr2o=NodeChoice(hr2o.value),
        opset=opset,
        input_size=tuple(size) if size else None,
        dynamic_size=dynamic_size,
        seed=seed,
        validate=not no_validate,
        restructure=not no_restructure,
    )
    try:
        result = export_model(out, checkpoint, config, settings, force=force, progress=output_format is OutputFormat.text)
    except ValidationError as exc:
        _print_report(exc.report, output_format)
        raise
    for note in result.warnings:
        print(f"warning: {note}", file=sys.stderr)
    files = {part: str(path) for part, path in result.files.items()}
    if result.report is not None:
        _print_report(result.report, output_format, {"export": str(result.path), "files": files})
    elif output_format == OutputFormat.json:
        typer.echo(dumps({"export": str(result.path), "files": files}))
    if output_format == OutputFormat.text:
        typer.echo(f"wrote {result.path}: " + ", ".join(Path(f).name for f in files.values()) + ", manifest.json")


@app.command(
    "validate",
    epilog=(
        "Examples:\n\n"
        "  acar-deploy validate export/r50\n\n"
        "  acar-deploy validate export/r50 --checkpoint moved/AVA_SLOWFAST_R50_ACAR_HR2O.pth.tar --format json"
    ),
)
@handle_errors
def validate(
    path: Annotated[Path, typer.Argument(help="Export folder (holds manifest.json and the .onnx graphs).")],
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Checkpoint the export came from, if it moved (its sha256 must match the manifest)."),
    ] = None,
    output_format: Format = OutputFormat.text,
) -> None:
    """Check an export folder: onnx.checker, shape inference, ORT vs eager for R in {1,3,17}, B in {1,2}."""
    from acar_deploy.export.validate import validate_export

    report = validate_export(path, checkpoint, raise_on_failure=False,
                             progress=output_format is OutputFormat.text)
    _print_report(report, output_format)
    if not report.ok:
        from acar_deploy.export.validate import ValidationError

        raise ValidationError(report)
