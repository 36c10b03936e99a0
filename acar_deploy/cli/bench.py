"""`acar-deploy bench`: per-clip latency of engines against eager PyTorch, in one interleaved run."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer

from acar_deploy.bench.results import DEFAULT_BANK_ENTRIES
from acar_deploy.cli.app import app
from acar_deploy.cli.errors import handle_errors
from acar_deploy.cli.options import (
    Checkpoint,
    Config,
    Force,
    Format,
    OptionalOut,
    OutputFormat,
    Size,
    Threads,
)
from acar_deploy.errors import InputError
from acar_deploy.jsonout import dumps


def parse_actor_counts(text: str, option: str = "--actors", example: str = "8,1,32") -> tuple[int, ...]:
    """'8,1,32' -> (8, 1, 32); for --actors the first value is the primary count."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"{option} {text!r}: expected comma-separated integers, e.g. {example}") from None
    if not values:
        raise InputError(f"{option} is empty: give e.g. {example}")
    return values


@app.command(
    "bench",
    epilog=(
        "Examples:\n\n"
        "  acar-deploy bench engines/r50-ort-fp32 engines/r50-ort-int8 --config acar_r50 --actors 8 --iters 5\n\n"
        "  acar-deploy bench export/tiny --checkpoint tiny.pt --config acar_tiny --size 64x64 --time-budget 20 "
        "--out benchmarks/results/tiny --format json\n\n"
        "  acar-deploy bench export/acfb engines/acfb-ort-fp16 --size 256x454 --actors 3 --bank-entries 0,8,32,64\n\n"
        "  acar-deploy bench export/acfb --checkpoint acfb.pt --size 64x64 --bank banks/val --bank-keyframes 30"
    ),
)
@handle_errors
def bench(
    engines: Annotated[list[str], typer.Argument(help="Engine or export folders to time against eager.")],
    checkpoint: Checkpoint = None,
    config: Config = None,
    actors: Annotated[
        str, typer.Option(help="Actors per clip, comma-separated; the first runs the full pipeline every iteration.")
    ] = "8,1,32",
    batch: Annotated[int, typer.Option("--batch", min=1, help="Clips per inference call (B).")] = 1,
    size: Size = "256x341",  # type: ignore[assignment]  # parsed by Size
    warmup: Annotated[int, typer.Option(min=0, help="Untimed iterations per runtime before timing.")] = 2,
    iters: Annotated[int, typer.Option(min=1, help="Timed interleaved iterations.")] = 10,
    time_budget: Annotated[
        float | None,
        typer.Option("--time-budget", min=0.001, help="Seconds for the timed loop, instead of --iters."),
    ] = None,
    threads: Threads = 2,
    seed: Annotated[int, typer.Option(help="Seed for inputs and random eager weights.")] = 0,
    bank_entries: Annotated[
        str, typer.Option("--bank-entries", help="acfb models: bank entries per keyframe (M), comma-separated.")
    ] = ",".join(map(str, DEFAULT_BANK_ENTRIES)),
    bank: Annotated[
        Path | None,
        typer.Option("--bank", help="acfb models: also replay one video of this extracted bank, keyframe by keyframe."),
    ] = None,
    bank_video: Annotated[
        str | None, typer.Option("--bank-video", help="The video to replay (default: the one with the most entries).")
    ] = None,
    bank_keyframes: Annotated[
        int | None, typer.Option("--bank-keyframes", min=1, help="Replay at most this many keyframes (default: all).")
    ] = None,
    eager_device: Annotated[
        str,
        typer.Option("--eager-device", help="Device of the eager baseline: auto (cuda when a TensorRT engine is "
                     "timed), cpu, cuda or cuda:N."),
    ] = "auto",
    no_flops: Annotated[bool, typer.Option("--no-flops", help="Skip the FLOP count (saves one eager pass).")] = False,
    out: OptionalOut = None,
    output_format: Format = OutputFormat.text,
    force: Force = False,
) -> None:
    """Time eager PyTorch and every ENGINE on the same inputs, interleaved, and report per-clip latency.

    Without --checkpoint eager uses seeded random weights (latency only); without --config the config
    the engine records. --out is a result folder (results.json, results.md, plots; default
    benchmarks/results/bench-<UTC time>).

    Reports mean / p50 / p90 / p99 / min / std per clip, throughput, the stage split, scaling with the
    number of actors, peak memory, achieved GFLOP/s and each engine's ratio to eager from this run.
    An acfb (feature-bank) model is timed per keyframe over --bank-entries instead: K/V precomputed,
    the bank head alone and the K/V projection per entry (docs/benchmark-and-parity.md). With --bank
    it also replays one video of an extracted bank keyframe by keyframe: real window sizes, real boxes,
    K/V projected only for entries new to each window (docs/bank.md).
    """
    from acar_deploy.bench.latency import BenchSettings, run_benchmark
    from acar_deploy.bench.report import markdown_report, report_files

    if out is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        out = Path("benchmarks/results") / f"bench-{stamp}"
    settings = BenchSettings(
        engines=tuple(engines),
        checkpoint=checkpoint,
        config=config,
        actors=parse_actor_counts(actors),
        clips=batch,
        size=tuple(size),
        warmup=warmup,
        iters=iters,
        seconds=time_budget,
        threads=threads,
        seed=seed,
        bank_entries=parse_actor_counts(bank_entries, "--bank-entries", "0,8,32,64"),
        bank=bank,
        bank_video=bank_video,
        bank_keyframes=bank_keyframes,
        eager_device=eager_device,
        count_flops=not no_flops,
        out=out,
        force=force,
    )
    result = run_benchmark(settings, progress=output_format is OutputFormat.text)
    if output_format is OutputFormat.json:
        typer.echo(dumps({**result.to_dict(), "out": str(out)}))
    else:
        typer.echo(markdown_report(result))
        typer.echo(f"wrote {out}/" + ", ".join(report_files(result)))
