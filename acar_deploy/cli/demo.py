"""`acar-deploy demo`: the whole pipeline on embedded synthetic data (the README's first command)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from acar_deploy.cli.app import app
from acar_deploy.cli.errors import handle_errors
from acar_deploy.cli.options import Force, Format, Out, OutputFormat, Threads
from acar_deploy.jsonout import dumps


@app.command(
    "demo",
    help="Synthesise AVA-format data, train a small ACAR model on CPU, evaluate frame-mAP, export "
    "(split and fused; standard and plugin nodes), build ONNX Runtime fp32/fp16/int8 engines, OpenVINO fp32/int8 "
    "engines (and bf16 without --quick) when OpenVINO is installed and TensorRT fp16/int8 when a GPU and TensorRT "
    "are present, benchmark them against eager in one run, run the parity gate, "
    "render keyframes, measure the feature bank's gain on temporal synthetic data and write report.md. "
    "No network access is needed.\n\n"
    "Every stage's output stays under --out (a folder), and report.md lists the command that reruns each stage.\n\n"
    "Examples:\n\n"
    "  acar-deploy demo                      # full demo (the larger profile)\n\n"
    "  acar-deploy demo --quick --out /tmp/d  # CI-sized (about 5 minutes on 2 cores)",
)
@handle_errors
def demo_command(
    out: Out = Path("demo_out"),
    quick: Annotated[bool, typer.Option("--quick", help="Smaller data, fewer epochs and iterations.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the data, training and inputs.")] = 0,
    threads: Threads = 2,
    force: Force = False,
    output_format: Format = OutputFormat.text,
) -> None:
    from acar_deploy.demo import DemoSettings, run_demo

    result = run_demo(DemoSettings(out=out, quick=quick, seed=seed, threads=threads, force=force,
                                   progress=output_format == OutputFormat.text))
    if output_format == OutputFormat.json:
        typer.echo(dumps({
            "out": str(result.out),
            "report": str(result.report),
            "val_map": result.val_map,
            "engines": [str(p) for p in result.engines],
            "parity_passed": result.parity_passed,
            "renders": [str(p) for p in result.renders],
            "skipped": result.notes,
            "bank_gain": result.bank_gain,
            "stages": [{"name": s.name, "seconds": s.seconds, "summary": s.summary} for s in result.stages],
        }))
    else:
        typer.echo(f"report: {result.report}")
