"""`acar-deploy parity`: the engine must match eager numerically and in frame-mAP, or exit 1."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from acar_deploy.cli.app import app
from acar_deploy.cli.errors import handle_errors
from acar_deploy.cli.options import Checkpoint, Config, Force, Format, OptionalOut, OutputFormat, Threads
from acar_deploy.jsonout import dumps


@app.command(
    "parity",
    epilog=(
        "Examples:\n\n"
        "  acar-deploy parity engines/synth-ort-int8 --checkpoint runs/synth/ckpt_8.pt --data data/synth "
        "--config data/synth/config.yaml\n\n"
        "  acar-deploy parity engines/r50-ort-fp32 --checkpoint model.pt --config acar_r50 "
        "--data data/ava --max-keyframes 200 --atol 1e-3 --rtol 1e-3 --format json"
    ),
)
@handle_errors
def parity(
    engine: Annotated[str, typer.Argument(help="Engine or export folder to check against eager.")],
    data: Annotated[Path, typer.Option(help="AVA-format dataset folder (dataset.json), e.g. `acar-deploy synth` output.")],
    checkpoint: Checkpoint = None,
    config: Config = None,
    split: Annotated[str, typer.Option(help="Dataset split to run.")] = "val",
    max_keyframes: Annotated[
        int | None, typer.Option("--max-keyframes", min=1, help="At most this many keyframes (default: all).")
    ] = None,
    max_map_drop: Annotated[
        float | None, typer.Option(min=0, help="Max |frame-mAP difference| in points (default 0.5).")
    ] = None,
    atol: Annotated[float | None, typer.Option(min=0, help="Absolute tolerance per element (fp32 default 1e-3).")] = None,
    rtol: Annotated[float | None, typer.Option(min=0, help="Relative tolerance per element (fp32 default 1e-3).")] = None,
    thresholds: Annotated[
        Path | None,
        typer.Option(help="Thresholds YAML (`ort-int8: {max_map_drop: 0.5, atol: 0.05}` per line); default: "
                          "`<config>.parity.yaml` beside a --config YAML file, if there is one."),
    ] = None,
    bank: Annotated[Path | None, typer.Option(help="acfb models: feature bank of the split (bank extract).")] = None,
    threads: Threads = 2,
    out: OptionalOut = None,
    output_format: Format = OutputFormat.text,
    force: Force = False,
) -> None:
    """Run eager and ENGINE on the same clips and person boxes; compare outputs and frame-mAP.

    Exits 1 when a threshold is exceeded (the message says which); writes parity.json, parity.md and both
    prediction CSVs to --out (default runs/parity/<engine name>). Thresholds: built-in defaults, then the
    thresholds YAML, then --max-map-drop / --atol / --rtol.
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
        max_keyframes=max_keyframes,
        max_map_drop=max_map_drop,
        atol=atol,
        rtol=rtol,
        thresholds=thresholds,
        threads=threads,
        bank=bank,
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
        typer.echo(dumps({**report.to_dict(), "out": None if out is None else str(out)}))
    else:
        typer.echo(markdown(report))
        if out is not None:
            typer.echo(f"wrote {out}/parity.json, parity.md")
