"""`acar-deploy parity`: the engine must match eager numerically and in frame-mAP, or exit 1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from acar_deploy.cli.app import app
from acar_deploy.cli.errors import handle_errors
from acar_deploy.cli.options import OutputFormat


@app.command(
    "parity",
    epilog=(
        "Examples:\n\n"
        "  acar-deploy parity --checkpoint runs/synth/model.pt --engine engines/synth-ort-int8 --data data/synth\n\n"
        "  acar-deploy parity --checkpoint model.pt --config acar_r50 --engine engines/r50-ort-fp32 "
        "--data data/ava --clips 200 --atol 1e-3 --rtol 1e-3 --format json"
    ),
)
@handle_errors
def parity(
    engine: Annotated[str, typer.Option(help="Engine or export folder to check against eager.")],
    data: Annotated[Path, typer.Option(help="AVA-format dataset folder (dataset.json), e.g. `acar-deploy synth` output.")],
    checkpoint: Annotated[Path | None, typer.Option(help="Eager weights (this project's or official layout).")] = None,
    config: Annotated[
        str | None, typer.Option(help="Model config; its `<config>.parity.yaml` pins the thresholds.")
    ] = None,
    split: Annotated[str, typer.Option(help="Dataset split to run.")] = "val",
    clips: Annotated[int | None, typer.Option(help="At most this many keyframes (default: all).")] = None,
    max_map_drop: Annotated[
        float | None, typer.Option(help="Max |frame-mAP difference| in points (default 0.5).")
    ] = None,
    atol: Annotated[float | None, typer.Option(help="Absolute tolerance per element (fp32 default 1e-3).")] = None,
    rtol: Annotated[float | None, typer.Option(help="Relative tolerance per element (fp32 default 1e-3).")] = None,
    thresholds: Annotated[
        Path | None, typer.Option(help="Thresholds YAML (`ort-int8: {max_map_drop: 0.5, atol: 0.05}` per line).")
    ] = None,
    threads: Annotated[int, typer.Option(help="Threads for torch and ONNX Runtime.")] = 2,
    out: Annotated[Path | None, typer.Option(help="Report folder (default runs/parity/<engine name>).")] = None,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="Print text or JSON.")] = OutputFormat.text,
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
) -> None:
    """Run eager and ENGINE on the same clips and person boxes; compare outputs and frame-mAP.

    Exits 1 when a threshold is exceeded (the message says which); writes parity.json and parity.md.
    """
    from acar_deploy.verify.parity import (
        ParityGateFailed,
        ParitySettings,
        check_parity,
        default_parity_out,
        markdown_parity,
    )

    settings = ParitySettings(
        engine=engine,
        data=data,
        checkpoint=checkpoint,
        config=config,
        split=split,
        clips=clips,
        max_map_drop=max_map_drop,
        atol=atol,
        rtol=rtol,
        thresholds=thresholds,
        threads=threads,
        out=out if out is not None else default_parity_out(engine),
        force=force,
    )
    try:
        report = check_parity(settings, progress=output_format is OutputFormat.text)
    except ParityGateFailed as failed:
        _print(failed.report, output_format, markdown_parity, settings.out)
        raise
    _print(report, output_format, markdown_parity, settings.out)


def _print(report, output_format: OutputFormat, markdown, out: Path | None) -> None:
    if output_format is OutputFormat.json:
        typer.echo(json.dumps({**report.to_dict(), "out": None if out is None else str(out)}, indent=2, default=str))
    else:
        typer.echo(markdown(report))
        if out is not None:
            typer.echo(f"wrote {out}/parity.json, parity.md")
