"""`acar-deploy bench`: per-clip latency of engines against eager PyTorch, in one interleaved run."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer

from acar_deploy.cli.app import app
from acar_deploy.cli.errors import handle_errors
from acar_deploy.cli.options import OutputFormat
from acar_deploy.errors import InputError


def parse_actor_counts(text: str) -> tuple[int, ...]:
    """'8,1,32' -> (8, 1, 32); the first value is the primary count."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"--actors {text!r}: expected comma-separated integers, e.g. 8,1,32") from None
    if not values:
        raise InputError("--actors is empty: give e.g. 8,1,32")
    return values


def parse_clip_size(text: str) -> tuple[int, int]:
    """'256x341' (HEIGHTxWIDTH) -> (256, 341)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--size {text!r}: expected HEIGHTxWIDTH, e.g. 256x341") from None
    return h, w


@app.command(
    "bench",
    epilog=(
        "Examples:\n\n"
        "  acar-deploy bench engines/r50-ort-fp32 engines/r50-ort-int8 --config acar_r50 --actors 8 --iters 5\n\n"
        "  acar-deploy bench export/tiny --checkpoint tiny.pt --config acar_tiny --size 64x64 --seconds 20 "
        "--out benchmarks/results/tiny --format json"
    ),
)
@handle_errors
def bench(
    engines: Annotated[list[str], typer.Argument(help="Engine or export folders to time against eager.")],
    checkpoint: Annotated[
        Path | None, typer.Option(help="Eager weights; without it eager uses seeded random weights (latency only).")
    ] = None,
    config: Annotated[
        str | None, typer.Option(help="Model config (built-in name or YAML); default: the one the engine records.")
    ] = None,
    actors: Annotated[
        str, typer.Option(help="Actors per clip, comma-separated; the first runs the full pipeline every iteration.")
    ] = "8,1,32",
    clips: Annotated[int, typer.Option(help="Clips per inference call (B).")] = 1,
    size: Annotated[str, typer.Option(help="Clip HEIGHTxWIDTH in pixels.")] = "256x341",
    warmup: Annotated[int, typer.Option(help="Untimed iterations per runtime before timing.")] = 2,
    iters: Annotated[int, typer.Option(help="Timed interleaved iterations.")] = 10,
    seconds: Annotated[
        float | None, typer.Option(help="Time budget for the timed loop instead of --iters.")
    ] = None,
    threads: Annotated[int, typer.Option(help="Threads for torch and ONNX Runtime (all runtimes).")] = 2,
    seed: Annotated[int, typer.Option(help="Seed for inputs and random eager weights.")] = 0,
    no_flops: Annotated[bool, typer.Option("--no-flops", help="Skip the FLOP count (saves one eager pass).")] = False,
    out: Annotated[
        Path | None, typer.Option(help="Result folder (results.json, results.md, plots).")
    ] = None,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="Print text tables or JSON.")] = (
        OutputFormat.text
    ),
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
) -> None:
    """Time eager PyTorch and every ENGINE on the same inputs, interleaved, and report per-clip latency.

    Reports mean / p50 / p90 / p99 / min / std per clip, throughput, the stage split, scaling with the
    number of actors, peak memory, achieved GFLOP/s and each engine's ratio to eager from this run.
    """
    from acar_deploy.bench.latency import BenchSettings, run_benchmark
    from acar_deploy.bench.report import markdown_report

    if out is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        out = Path("benchmarks/results") / f"bench-{stamp}"
    settings = BenchSettings(
        engines=tuple(engines),
        checkpoint=checkpoint,
        config=config,
        actors=parse_actor_counts(actors),
        clips=clips,
        size=parse_clip_size(size),
        warmup=warmup,
        iters=iters,
        seconds=seconds,
        threads=threads,
        seed=seed,
        count_flops=not no_flops,
        out=out,
        force=force,
    )
    result = run_benchmark(settings, progress=output_format is OutputFormat.text)
    if output_format is OutputFormat.json:
        typer.echo(json.dumps({**result.to_dict(), "out": str(out)}, indent=2, default=str))
    else:
        typer.echo(markdown_report(result))
        typer.echo(f"wrote {out}/results.json, results.md, latency_vs_actors.png, stages.png")
