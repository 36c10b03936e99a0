"""Benchmark report: results.json (everything), results.md (tables) and two PNG plots.

The markdown is what goes into benchmarks/README.md; the JSON is what tests and later runs compare.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from acar_deploy.artifacts import atomic_dir, write_json
from acar_deploy.bench.bank import BankBenchResult
from acar_deploy.bench.bank_replay import BankReplayResult
from acar_deploy.bench.results import EAGER, BenchResult
from acar_deploy.bench.stats import PERCENTILE_METHOD_NOTE
from acar_deploy.engines.runners.base import execution_details


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def latency_table(result: BenchResult) -> str:
    """One row per runtime and actor count: per-clip statistics in ms, throughput, ratio to eager."""
    lines = [
        "| runtime | actors | mean ms | p50 | p90 | p99 | min | std | clips/s | x eager (mean) | x eager (p50 / min) "
        "| head ms | head ms/actor | measured |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for rt in result.runtimes:
        for r in sorted(rt.by_actors, key=lambda r: r.actors):
            c = r.per_clip
            head = r.head.mean / result.settings.clips if r.head else None
            per_actor = None if head is None else head / r.actors
            ratio = "-" if r.ratio_to_eager is None else f"{r.ratio_to_eager:.3f}"
            robust = "-" if r.ratio_to_eager_p50 is None else f"{r.ratio_to_eager_p50:.3f} / {r.ratio_to_eager_min:.3f}"
            lines.append(
                f"| {rt.name} | {r.actors} | {_ms(c.mean)} | {_ms(c.p50)} | {_ms(c.p90)} | {_ms(c.p99)} | "
                f"{_ms(c.min)} | {_ms(c.std)} | {r.throughput_clips_per_s:.3f} | {ratio} | {robust} | {_ms(head)} | "
                f"{_ms(per_actor)} | {r.measured} |"
            )
    return "\n".join(lines)


def stage_table(result: BenchResult) -> str:
    """Mean seconds per stage at the primary actor count, with achieved GFLOP/s and peak memory."""
    keys: list[str] = []
    for rt in result.runtimes:
        keys += [k for k in rt.stages_s if k not in keys]
    head = "| runtime | " + " | ".join(f"{k} ms" for k in keys) + (
        " | backbone GFLOP/s | head GFLOP/s | peak RSS MiB | GPU MiB | CUDA graphs |"
    )
    lines = [head, "|---|" + "---:|" * (len(keys) + 4) + "---|"]
    for rt in result.runtimes:
        cells = [_ms(rt.stages_s.get(k)) for k in keys]
        g = rt.gflops_per_s
        gpu = rt.memory.get("gpu_used")
        graphs = "-" if rt.cuda_graphs is None else ("yes" if rt.cuda_graphs else "no")
        lines.append(
            f"| {rt.name} | " + " | ".join(cells)
            + f" | {g.get('backbone', float('nan')):.1f} | {g.get('head', float('nan')):.1f} | "
            f"{_mib(rt.memory.get('peak_rss'))} | {_mib(gpu)} | {graphs} |"
        )
    return "\n".join(lines)


def head_slope_lines(result: BenchResult) -> list[str]:
    lines = []
    for rt in result.runtimes:
        if rt.head_slope_s_per_actor is not None:
            lines.append(f"- {rt.name}: head {rt.head_slope_s_per_actor * 1e3:.2f} ms per additional actor "
                         "(least-squares slope over the actor counts)")
    return lines


def execution_lines(result: BenchResult) -> list[str]:
    """One line per runtime whose effective precision or warnings say more than its name."""
    return [f"- {rt.name}: " + "; ".join(details) for rt in result.runtimes
            if (details := execution_details(rt.metadata))]


def environment_block(env: dict[str, Any]) -> str:
    gpu = env.get("gpu")
    gpu_text = "none" if not gpu else f"{gpu['name']} (driver {gpu.get('driver') or '?'}, CUDA {gpu.get('cuda_runtime')})"
    versions = ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items() if v)
    def loads(values: Any) -> str:
        return "-" if not values else " / ".join(f"{v:.2f}" for v in values)

    load_text = f"{loads(env.get('load_average_at_start'))} at the start, {loads(env.get('load_average_1_5_15'))} at the end"
    return "\n".join([
        f"- CPU: {env.get('cpu_model')} ({env.get('logical_cpus')} logical CPUs; "
        f"{', '.join(env.get('cpu_flags') or []) or 'no AVX-512 flags'})",
        f"- threads: {env.get('threads')} (torch.set_num_threads and ORT intra_op_num_threads)",
        f"- load average (1/5/15 min): {load_text} (other processes share the CPU)",
        f"- GPU: {gpu_text}",
        f"- OS: {env.get('os')}; Python {env.get('python')}",
        f"- versions: {versions}",
    ])


def markdown_report(result: BenchResult | BankBenchResult) -> str:
    if isinstance(result, BankBenchResult):
        return bank_markdown_report(result)
    s = result.settings
    h, w = s.size
    parts = [
        "# Latency benchmark",
        "",
        f"{s.clips} clip(s) of 32x{h}x{w} per call; actors per clip {', '.join(map(str, s.actors))} "
        f"(full pipeline at {s.primary_actors}); {result.iterations} interleaved iterations after "
        f"{s.warmup} warm-up iterations per runtime; {s.threads} threads. Baseline: `{EAGER}` "
        "(eval mode, torch.inference_mode, fp32, default memory format).",
        "",
        "## Per clip",
        "",
        latency_table(result),
        "",
        "## Stages (primary actor count, per call)",
        "",
        stage_table(result),
        "",
        *head_slope_lines(result),
        "",
    ]
    if execution := execution_lines(result):
        parts += ["## What each runtime ran", "", *execution, ""]
    if result.flops is not None:
        f = result.flops
        per_actor = ", ".join(f"{a}: {f.head_per_actor(a) / 1e9:.4g}" for a in sorted(f.head_by_actors))
        parts += [
            "## FLOPs (eager model, torch FlopCounterMode, 1 MAC = 2 FLOP, RoIAlign not counted)",
            "",
            f"- backbone: {f.backbone_per_clip / 1e9:.4g} GFLOP per clip",
            f"- head: {f.head_marginal_per_actor / 1e9:.4g} GFLOP per additional actor "
            "(F(2 actors) - F(1 actor)); whole head per clip / actors, by actor count: " + per_actor,
            "",
        ]
    if result.preprocess is not None:
        parts += [f"Preprocessing (uint8 frames -> normalised float clip, data pipeline `frames_to_clip`): "
                  f"{_ms(result.preprocess.mean)} ms per clip (mean of {result.preprocess.n}).", ""]
    parts += [
        "## Method",
        "",
        "- timer: time.perf_counter around `runner.infer` (host wall clock, outputs back on the host)",
        "- runtimes interleaved round robin per iteration, starting runtime rotated each iteration",
        f"- percentiles: {PERCENTILE_METHOD_NOTE}",
        "- secondary actor counts: full(primary) - head(primary) + head(actors) of the same iteration "
        "when the runner runs the head alone ('head-only'), else the full pipeline ('full')",
        "- x eager: runtime mean / eager mean at the same actor count, from this run (p50 / min: the same "
        "with medians and minima, less sensitive to other processes)",
        "- peak RSS: VmHWM, reset before each runtime's solo warm-up (includes everything loaded)",
        "",
        "## Environment",
        "",
        environment_block(result.environment),
        "",
    ]
    if result.notes:
        parts += ["## Notes", "", *[f"- {n}" for n in result.notes], ""]
    return "\n".join(parts)


def plot_latency_vs_actors(result: BenchResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for rt in result.runtimes:
        rows = sorted(rt.by_actors, key=lambda r: r.actors)
        ax.errorbar(
            [r.actors for r in rows], [r.per_clip.mean * 1e3 for r in rows],
            yerr=[r.per_clip.std * 1e3 for r in rows], marker="o", capsize=3, label=rt.name,
        )
    ax.set_xlabel("actors per clip")
    ax.set_ylabel("latency per clip (ms, mean ± std)")
    ax.set_title("Per-clip latency vs actors")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_stages(result: BenchResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys: list[str] = []
    for rt in result.runtimes:
        keys += [k for k in rt.stages_s if k not in keys]
    names = [rt.name for rt in result.runtimes]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    bottom = [0.0] * len(names)
    for key in keys:
        values = [rt.stages_s.get(key, 0.0) * 1e3 for rt in result.runtimes]
        ax.bar(names, values, bottom=bottom, label=key)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel(f"ms per call ({result.settings.primary_actors} actors)")
    ax.set_title("Stage split per runtime")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bank_table(result: BankBenchResult) -> str:
    """One row per runtime, M and actor count: per-keyframe ms with K/V precomputed, the bank head alone,
    the ratios to eager, and the K/V projection per entry (measured once per M at the primary count)."""
    lines = [
        "| runtime | M | actors | keyframe ms (mean) | p50 | min | bank head ms | x eager (keyframe) "
        "| x eager (head) | K/V lookup ms | bank_kv ms per entry |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rt in result.runtimes:
        for p in rt.points:
            kv = rt.kv_per_entry.get(p.entries)
            ratio = "-" if p.ratio_to_eager is None else f"{p.ratio_to_eager:.3f}"
            head_ratio = "-" if p.head_ratio_to_eager is None else f"{p.head_ratio_to_eager:.3f}"
            lines.append(
                f"| {rt.name} | {p.entries} | {p.actors} | {_ms3(p.keyframe.mean)} | {_ms3(p.keyframe.p50)} | "
                f"{_ms3(p.keyframe.min)} | {_ms3(None if p.head is None else p.head.mean)} | {ratio} | {head_ratio} | "
                f"{_ms3(None if p.lookup is None else p.lookup.mean)} | "
                f"{_ms3(None if kv is None or p.actors != result.settings.primary_actors else kv.mean)} |"
            )
    return "\n".join(lines)


def _ms3(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def bank_markdown_report(result: BankBenchResult) -> str:
    s = result.settings
    g = result.geometry
    h, w = s.size
    parts = [
        "# Bank head latency (acfb model)",
        "",
        f"{s.clips} clip(s) of {h}x{w} per call; bank entries per keyframe M = {', '.join(map(str, s.bank_entries))} "
        f"(random, {g.channels}x{g.size[0]}x{g.size[1]}, K/V for {g.depth} layers); actors per clip "
        f"{', '.join(map(str, s.actors))}; {result.iterations} interleaved iterations after {s.warmup} warm-up "
        f"iterations per runtime; {s.threads} threads. Baseline: `{EAGER}` (ACFBHead.project_bank once per entry, "
        "forward_projected per keyframe).",
        "",
        "## Per keyframe (per clip), K/V precomputed",
        "",
        bank_table(result),
        "",
        "## Method",
        "",
        "- keyframe: `runner.infer` with `bank_entries` / `bank_window`, entries the runner projected on the "
        "previous call (K/V from its per-entry cache): backbone + K/V lookup + bank head",
        "- bank head: the runner's `head` stage of that call; K/V lookup: its `bank_kv` stage (hashing the entries)",
        "- bank_kv per entry: the `bank_kv` stage of a call with entries the runner has not seen, / entries "
        "(each entry is projected once while it stays in the window: a keyframe adds about M / (2w + 1) new ones)",
        "- every box attends the M entries of its own clip; runtimes interleaved round robin per iteration",
        f"- percentiles: {PERCENTILE_METHOD_NOTE}",
        "",
        "## Environment",
        "",
        environment_block(result.environment),
        "",
    ]
    if execution := [f"- {rt.name}: " + "; ".join(d) for rt in result.runtimes if (d := execution_details(rt.metadata))]:
        parts[-4:-4] = ["## What each runtime ran", "", *execution, ""]
    if result.replay is not None:
        parts[-4:-4] = replay_section(result.replay)
    if result.notes:
        parts += ["## Notes", "", *[f"- {n}" for n in result.notes], ""]
    return "\n".join(parts)


def replay_section(replay: BankReplayResult) -> list[str]:
    """Markdown lines: the replayed video's window sizes and each runtime's per-keyframe latency."""
    frames = replay.keyframes
    m = [k.entries for k in frames]
    new = [k.new_entries for k in frames]
    actors = [k.actors for k in frames]
    rule = f"[t - {replay.half_width}, t]" if replay.causal else f"[t - {replay.half_width}, t + {replay.half_width}]"
    lines = [f"## Replay of a real bank: video `{replay.video}`", "",
             f"{len(frames)} keyframes of `{replay.bank}` in order, window {rule}: M = {min(m)}..{max(m)} entries "
             f"(mean {np.mean(m):.1f}), {np.mean(new):.1f} new per keyframe on average, {min(actors)}..{max(actors)} "
             "actors (the bank's boxes at that second); random clips. Each runtime walks the video once from a cold "
             "K/V cache, interleaved per keyframe.", "",
             "| runtime | per keyframe mean ms | p50 | p90 | max | x eager | K/V stage mean ms |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for rt in replay.runtimes:
        k = rt.keyframe
        ratio = "-" if rt.ratio_to_eager is None else f"{rt.ratio_to_eager:.3f}"
        lines.append(f"| {rt.name} | {_ms(k.mean)} | {_ms(k.p50)} | {_ms(k.p90)} | {_ms(k.max)} | {ratio} | "
                     f"{_ms3(None if rt.kv_stage is None else rt.kv_stage.mean)} |")
    return [*lines, ""]


def plot_latency_vs_entries(result: BankBenchResult, path: Path) -> None:
    """Two panels over M at the primary actor count: the whole keyframe (K/V precomputed) and the bank
    head alone (its own scale: next to the backbone it would be a flat line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    actors = result.settings.primary_actors
    fig, (ax_keyframe, ax_head) = plt.subplots(1, 2, figsize=(10.4, 4.2))
    for rt in result.runtimes:
        rows = sorted((p for p in rt.points if p.actors == actors), key=lambda p: p.entries)
        xs = [p.entries for p in rows]
        ax_keyframe.errorbar(xs, [p.keyframe.mean * 1e3 for p in rows], yerr=[p.keyframe.std * 1e3 for p in rows],
                             marker="o", capsize=3, label=rt.name)
        heads = [p.head for p in rows]
        if all(h is not None for h in heads):
            ax_head.errorbar(xs, [h.mean * 1e3 for h in heads], yerr=[h.std * 1e3 for h in heads],  # type: ignore[union-attr]
                             marker="o", capsize=3, label=rt.name)
    ax_keyframe.set_title("Keyframe (backbone + bank head, K/V precomputed)", fontsize=10)
    ax_head.set_title("Bank head alone", fontsize=10)
    for ax in (ax_keyframe, ax_head):
        ax.set_xlabel("bank entries per keyframe (M)")
        ax.set_ylabel(f"ms per keyframe ({actors} actors, mean ± std)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_files(result: BenchResult | BankBenchResult) -> tuple[str, ...]:
    if isinstance(result, BankBenchResult):
        return ("results.json", "results.md", "latency_vs_entries.png")
    return ("results.json", "results.md", "latency_vs_actors.png", "stages.png")


def write_bench_report(result: BenchResult | BankBenchResult, out: Path, force: bool = False) -> Path:
    """Write `report_files(result)` into `out` atomically: results.json, results.md and the plots."""
    if isinstance(result, BankBenchResult):
        with atomic_dir(out, force=force) as tmp:
            write_json(tmp / "results.json", result.to_dict())
            (tmp / "results.md").write_text(markdown_report(result), encoding="utf-8")
            plot_latency_vs_entries(result, tmp / "latency_vs_entries.png")
        return out
    with atomic_dir(out, force=force) as tmp:
        write_json(tmp / "results.json", result.to_dict())
        (tmp / "results.md").write_text(markdown_report(result), encoding="utf-8")
        plot_latency_vs_actors(result, tmp / "latency_vs_actors.png")
        plot_stages(result, tmp / "stages.png")
    return out
