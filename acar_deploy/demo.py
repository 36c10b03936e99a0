"""`acar-deploy demo`: the whole pipeline on embedded synthetic data, with no downloads.

synthesise an AVA-format dataset -> train a small ACAR model on CPU -> frame-mAP -> export (split
and fused; standard and plugin nodes) -> ONNX Runtime fp32 / fp16 / int8 engines, OpenVINO fp32 / int8
(and bf16 in the full profile) engines when OpenVINO is installed, TensorRT fp16 / int8 when a GPU and
TensorRT are present -> latency against eager in one interleaved run -> parity gate -> rendered
keyframes -> the feature bank's gain on temporal synthetic data (bank model vs the same model
without bank, `train/bank_gain.py`) -> `report.md`.

Every stage calls the same library function as its CLI command and keeps its output under `out`,
so a user can rerun any single command on it; `report.md` lists those commands.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DemoProfile:
    """How big each stage is; `quick` fits CI (about 5 minutes on 2 cores), `full` shows more (a laptop)."""

    videos: int
    seconds: int
    epochs: int
    calib_clips: int
    bench_iters: int
    bench_actors: tuple[int, ...]
    bench_size: tuple[int, int]
    parity_max_keyframes: int | None
    render_videos: int
    plugin_parts: str  # the plugin-node export: "split" (quick) or "all" (split + fused)
    openvino_precisions: tuple[str, ...]  # OpenVINO engines built when `openvino` imports
    bank_videos: int  # the feature-bank stage's temporal synthetic data (train/bank_gain.py)
    bank_seconds: int
    bank_extractor_epochs: int  # the no-bank model, from scratch on the temporal data
    bank_extractor_head_epochs: int  # then its head alone: the extractor whose maps fill the banks
    bank_extra_epochs: int  # head-only epochs of the bank model and of the no-bank baseline


# Both train on the recipe tests/test_train_learns.py checks (48 videos x 3 s, 8 epochs: val frame-mAP
# ~0.7 against ~0.35 chance); smaller synthetic sets at this learning rate can diverge.
QUICK = DemoProfile(videos=48, seconds=3, epochs=8, calib_clips=8, bench_iters=5, bench_actors=(4, 1, 8),
                    bench_size=(96, 128), parity_max_keyframes=None, render_videos=1, plugin_parts="split",
                    openvino_precisions=("fp32", "int8"), bank_videos=24, bank_seconds=6, bank_extractor_epochs=6,
                    bank_extractor_head_epochs=12, bank_extra_epochs=12)
FULL = DemoProfile(videos=48, seconds=3, epochs=8, calib_clips=32, bench_iters=50, bench_actors=(8, 1, 4, 16, 32),
                   bench_size=(96, 128), parity_max_keyframes=None, render_videos=3, plugin_parts="all",
                   openvino_precisions=("fp32", "bf16", "int8"), bank_videos=24, bank_seconds=6,
                   bank_extractor_epochs=6, bank_extractor_head_epochs=24, bank_extra_epochs=30)


@dataclass(frozen=True)
class DemoSettings:
    out: Path = Path("demo_out")
    quick: bool = False
    seed: int = 0
    threads: int = 2
    force: bool = False
    progress: bool = True

    @property
    def profile(self) -> DemoProfile:
        return QUICK if self.quick else FULL


@dataclass
class StageRecord:
    name: str
    seconds: float
    summary: str
    command: str


@dataclass
class DemoResult:
    out: Path
    report: Path
    stages: list[StageRecord] = field(default_factory=list)
    val_map: float | None = None
    engines: list[Path] = field(default_factory=list)
    parity_passed: dict[str, bool] = field(default_factory=dict)
    renders: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # runtimes skipped and why; printed in report.md
    bank_gain: dict[str, Any] | None = None  # the feature-bank stage's BankGainResult.to_json()

    def moved(self, work: Path, final: Path) -> DemoResult:
        """The same result with paths under the temporary folder `work` pointing into `final`."""
        move = lambda p: final / Path(p).relative_to(work)  # noqa: E731
        return replace(self, out=final, report=move(self.report), engines=[move(p) for p in self.engines],
                       renders=[move(p) for p in self.renders])


def tensorrt_available() -> bool:
    """TensorRT engines are built only where both TensorRT and a CUDA GPU are present."""
    if importlib.util.find_spec("tensorrt") is None:
        return False
    import torch

    return torch.cuda.is_available()


def openvino_available() -> bool:
    """OpenVINO engines are built where the optional `openvino` package imports (`[openvino]` extra)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def _cmd(*parts: Any) -> str:
    return "acar-deploy " + " ".join(shlex.quote(str(p)) for p in parts)


class _Stages:
    """Runs named stages with a rich status line each and records their time and summary."""

    def __init__(self, result: DemoResult, progress: bool, shown: tuple[str, str]):
        from rich.console import Console

        self.result = result
        self.shown = shown  # (temporary folder, final folder): commands name where the outputs end up
        self.console = Console(stderr=True, quiet=not progress)
        self.total = 0

    def run(self, name: str, command: str, func: Callable[[], str]) -> None:
        command = command.replace(*self.shown)
        start = time.perf_counter()
        with self.console.status(f"[bold]{name}[/bold]: {command}"):
            summary = func()
        seconds = time.perf_counter() - start
        self.result.stages.append(StageRecord(name, seconds, summary, command))
        self.console.print(f"[green]✓[/green] [bold]{name}[/bold] ({seconds:.1f} s): {summary}")


def run_demo(settings: DemoSettings) -> DemoResult:
    """Run every stage into `settings.out` and write `report.md`; returns what each stage produced.

    The stages run in a temporary sibling folder that replaces `settings.out` only once the report
    is written, so `--force` never loses the old demo to a failed or killed run.
    """
    from acar_deploy.artifacts import atomic_dir

    final = Path(settings.out)
    # atomic_dir checks first (a file in the way, an existing demo without --force: one line each)
    with atomic_dir(final, force=settings.force) as work:
        result = _run_stages(work, final, settings)
    return result.moved(work, final)


def _run_stages(out: Path, final: Path, settings: DemoSettings) -> DemoResult:
    """The stages, writing under `out` (the temporary folder); commands and report name `final`."""
    import torch

    from acar_deploy.bench.latency import BenchSettings, run_benchmark
    from acar_deploy.bench.report import write_bench_report
    from acar_deploy.data.synth import SynthSettings, synthesize
    from acar_deploy.detect import DetectSettings, detect
    from acar_deploy.engines.build import build_engine
    from acar_deploy.engines.settings import BuildSettings, Int8Policy, Precision, Runtime
    from acar_deploy.eval import frame_map
    from acar_deploy.export.exporter import ExportSettings, NodeChoice, Parts, export_model
    from acar_deploy.train.bank_gain import BankGainSettings, measure_bank_gain
    from acar_deploy.train.loop import TrainSettings, train
    from acar_deploy.verify.parity import ParityGateFailed, ParitySettings, check_parity

    torch.set_num_threads(settings.threads)
    profile = settings.profile
    result = DemoResult(out=out, report=out / "report.md")
    stages = _Stages(result, settings.progress, shown=(str(out), str(final)))
    data, run_dir = out / "data", out / "train"
    state: dict[str, Any] = {}

    def synth_stage() -> str:
        made = synthesize(SynthSettings(out_dir=data, videos=profile.videos, seconds=profile.seconds,
                                        seed=settings.seed, progress=False))
        state["synth"] = made
        return (f"{len(made.train_videos)} train / {len(made.val_videos)} val videos, "
                f"{made.train_boxes} / {made.val_boxes} annotated boxes")

    stages.run("synthesise data", _cmd("synth", data, "--videos", profile.videos, "--video-seconds", profile.seconds,
                                       "--seed", settings.seed), synth_stage)

    config = data / "config.yaml"

    def train_stage() -> str:
        trained = train(TrainSettings(config=str(config), data=data, out=run_dir, epochs=profile.epochs,
                                      seed=settings.seed, progress=False))
        state["train"] = trained
        state["checkpoint"] = trained.final_checkpoint
        last = trained.history[-1]
        return f"{len(trained.history)} epochs, final loss {last.loss:.4f}, val frame-mAP {100 * (last.val_map or 0):.2f}"

    stages.run("train", _cmd("train", "--config", config, "--data", data, "--out", run_dir,
                             "--epochs", profile.epochs), train_stage)
    checkpoint: Path = state["checkpoint"]

    def evaluate_stage() -> str:
        epoch = state["train"].history[-1].epoch
        predictions = run_dir / f"val_predictions_{epoch}.csv"
        scored = frame_map(data / "val.csv", predictions, labelmap=data / "labelmap.pbtxt",
                           exclusions=data / "val_excluded_timestamps.csv")
        state["frame_map"] = scored
        state["val_predictions"] = predictions
        result.val_map = float(scored.mAP)
        chance = _chance_map(data)
        state["chance_map"] = chance
        return f"frame-mAP {100 * scored.mAP:.2f} on the val split (chance level {100 * chance:.2f})"

    stages.run("evaluate", _cmd("evaluate", "--gt", data / "val.csv", "--pred", run_dir / "val_predictions_N.csv",
                                "--labelmap", data / "labelmap.pbtxt",
                                "--exclusions", data / "val_excluded_timestamps.csv"), evaluate_stage)

    export_std, export_plugin = out / "export" / "acar", out / "export" / "acar-plugin"

    def export_stage() -> str:
        lines = []
        for path, node, parts in ((export_std, NodeChoice.onnx, Parts.all),
                                  (export_plugin, NodeChoice.plugin, Parts(profile.plugin_parts))):
            made = export_model(path, checkpoint, None,
                                ExportSettings(parts=parts, roi_align=node, hr2o=node, seed=settings.seed))
            state[f"export_{node.value}"] = made
            worst = max((row.get("max_abs", 0.0) for row in made.manifest.get("validation", [])), default=0.0)
            lines.append(f"{path.name}: {', '.join(sorted(made.manifest['parts']))} (max |err| vs eager {worst:.1e})")
        return "; ".join(lines)

    stages.run("export", _cmd("export", "--checkpoint", checkpoint, "--out", export_std, "--parts", "all") + " (and "
               + f"--parts {profile.plugin_parts} --roi-align plugin --hr2o plugin --out {export_plugin})", export_stage)

    builds: list[tuple[Runtime, Precision]] = [(Runtime.ORT, Precision.FP32), (Runtime.ORT, Precision.FP16),
                                               (Runtime.ORT, Precision.INT8)]
    if openvino_available():
        builds += [(Runtime.OPENVINO, Precision(p)) for p in profile.openvino_precisions]
    else:
        from acar_deploy.engines.openvino_core import OPENVINO_INSTALL_HINT

        result.notes.append(f"OpenVINO engines skipped: the `openvino` package does not import ({OPENVINO_INSTALL_HINT})")
    if tensorrt_available():
        builds += [(Runtime.TRT, Precision.FP16), (Runtime.TRT, Precision.INT8)]
    else:
        result.notes.append("TensorRT engines skipped: they need TensorRT and a CUDA GPU")

    def build_stage() -> str:
        lines = []
        for runtime, precision in builds:
            target = out / "engines" / f"acar-{runtime.value}-{precision.value}"
            made = build_engine(
                BuildSettings(export_dir=export_std, runtime=runtime, precision=precision, out_dir=target,
                              int8=Int8Policy(calib_data=data, calib_clips=profile.calib_clips)),
                progress=False,
            )
            result.engines.append(made.path)
            lines.append(f"{target.name} ({made.build_seconds:.1f} s)")
        return ", ".join(lines)

    stages.run("build engines", _cmd("build", export_std, "--runtime", "ort", "--precision", "int8",
                                     "--calib-data", data, "--out", out / "engines" / "acar-ort-int8")
               + " (and " + ", ".join(f"{r.value} {p.value}" for r, p in builds if (r, p) != (Runtime.ORT, Precision.INT8))
               + ")", build_stage)

    bench_dir = out / "bench"

    def bench_stage() -> str:
        bench = run_benchmark(
            BenchSettings(engines=tuple(str(p) for p in result.engines), checkpoint=checkpoint, config=str(config),
                          actors=profile.bench_actors, size=profile.bench_size, iters=profile.bench_iters,
                          threads=settings.threads, seed=settings.seed),
            progress=False,
        )
        write_bench_report(bench, bench_dir)
        state["bench"] = bench
        primary = profile.bench_actors[0]
        parts = []
        for runtime in bench.runtimes:
            row = next(r for r in runtime.by_actors if r.actors == primary)
            ratio = f" ({row.ratio_to_eager:.2f}x eager)" if row.ratio_to_eager is not None else ""
            parts.append(f"{runtime.name} {1000 * row.per_clip.mean:.1f} ms{ratio}")
        return f"per clip, {primary} actors: " + ", ".join(parts)

    stages.run("benchmark", _cmd("bench", *[p for p in result.engines], "--checkpoint", checkpoint,
                                 "--config", config, "--actors", ",".join(map(str, profile.bench_actors)),
                                 "--size", "x".join(map(str, profile.bench_size)), "--iters", profile.bench_iters,
                                 "--out", bench_dir), bench_stage)

    def parity_stage() -> str:
        lines = []
        reports = {}
        for engine in result.engines:
            started = time.perf_counter()
            try:  # a failed gate is a result to report, not a reason to stop the demo
                report = check_parity(
                    ParitySettings(engine=str(engine), data=data, checkpoint=checkpoint, config=str(config),
                               max_keyframes=profile.parity_max_keyframes,
                                   threads=settings.threads, out=out / "parity" / engine.name),
                    progress=False,
                )
            except ParityGateFailed as failed:
                report = failed.report
            reports[engine.name] = report
            result.parity_passed[engine.name] = report.passed
            lines.append(f"{engine.name} {'PASS' if report.passed else 'FAIL'} "
                         f"(mAP {report.map_diff_points:+.2f} pts, {time.perf_counter() - started:.1f} s)")
        state["parity"] = reports
        return ", ".join(lines)

    stages.run("parity gate", _cmd("parity", out / "engines" / "acar-ort-int8", "--checkpoint", checkpoint,
                                   "--config", config, "--data", data), parity_stage)

    def render_stage() -> str:
        synth = state["synth"]
        renders = out / "renders"
        for video in synth.val_videos[: profile.render_videos]:
            made = detect(DetectSettings(checkpoint=checkpoint, media=data / "videos" / f"{video}.mp4",
                                         boxes=data / "val_proposals.csv", out=renders / f"{video}.csv",
                                         render_dir=renders / video, labelmap=data / "labelmap.pbtxt",
                                         force=True, progress=False))
            result.renders.extend(made.rendered)
        return f"{len(result.renders)} keyframes rendered with boxes and top actions"

    first_val = state["synth"].val_videos[0]
    stages.run("render", _cmd("detect", "--checkpoint", checkpoint, "--video", data / "videos" / f"{first_val}.mp4",
                              "--boxes", data / "val_proposals.csv", "--out", out / "renders" / f"{first_val}.csv",
                              "--render", out / "renders" / first_val), render_stage)

    def bank_stage() -> str:
        gain = measure_bank_gain(BankGainSettings(
            out=out / "bank", videos=profile.bank_videos, seconds=profile.bank_seconds,
            extractor_epochs=profile.bank_extractor_epochs, extractor_head_epochs=profile.bank_extractor_head_epochs,
            extra_epochs=profile.bank_extra_epochs,
            seed=settings.seed, workers=1, threads=1))  # benchmarks/bank_gain.py's settings: the same run
        state["bank_gain"] = gain
        result.bank_gain = {**gain.to_json(), "commands": [c.replace(str(out), str(final)) for c in gain.commands]}
        return (f"val frame-mAP {100 * gain.no_bank.val_map:.2f} without bank -> {100 * gain.bank.val_map:.2f} with "
                f"bank ({100 * gain.margin:+.2f} pts) after {profile.bank_extra_epochs} more epochs each")

    stages.run("feature bank (ACFB)", _cmd("synth", out / "bank" / "data", "--temporal", "--videos", profile.bank_videos,
                                           "--video-seconds", profile.bank_seconds, "--seed", settings.seed)
               + " (then train, bank extract and train --bank: see the feature bank section)", bank_stage)

    export_bank, bank_bench_dir = out / "export" / "acfb", out / "bank" / "bench"
    bank_checkpoint, val_bank = state["bank_gain"].bank.checkpoint, state["bank_gain"].val_bank

    def bank_deploy_stage() -> str:
        export_model(export_bank, bank_checkpoint, None,
                     ExportSettings(input_size=profile.bench_size, seed=settings.seed))
        bench = run_benchmark(
            BenchSettings(engines=(str(export_bank),), checkpoint=bank_checkpoint, actors=(2,),
                          bank_entries=(0, 16), size=profile.bench_size, iters=profile.bench_iters,
                          threads=settings.threads, seed=settings.seed, count_flops=False, bank=val_bank),
            progress=False,
        )
        write_bench_report(bench, bank_bench_dir)
        state["bank_bench"] = bench
        replay = bench.replay
        assert replay is not None  # settings.bank was given
        rows = ", ".join(f"{rt.name} {1000 * rt.keyframe.mean:.1f} ms" for rt in replay.runtimes)
        return f"per keyframe replaying val video {replay.video} ({len(replay.keyframes)} keyframes): {rows}"

    size = "x".join(map(str, profile.bench_size))
    stages.run("feature bank export + bench",
               _cmd("bench", export_bank, "--checkpoint", bank_checkpoint, "--size", size, "--actors", 2,
                    "--bank-entries", "0,16", "--iters", profile.bench_iters, "--no-flops",
                    "--bank", val_bank, "--out", bank_bench_dir)
               + " (after " + _cmd("export", "--checkpoint", bank_checkpoint, "--size", size,
                                   "--out", export_bank) + ")", bank_deploy_stage)

    write_report(result, state, settings)
    _relocate_markdown(out, final)
    return result


def _relocate_markdown(work: Path, final: Path) -> None:
    """The reports (report.md and the stages' *.md) name `final`, where they will be read, not the
    temporary folder the stages ran in. JSON records keep the path they were made at (provenance;
    some are hashed by the records that follow them)."""
    for page in work.rglob("*.md"):
        text = page.read_text()
        if str(work) in text:
            page.write_text(text.replace(str(work), str(final)))


def _chance_map(data: Path) -> float:
    """Expected AP of random scores: per class, the fraction of val boxes that carry it."""
    from acar_deploy.data.ava_csv import read_annotations
    from acar_deploy.data.labelmap import read_labelmap

    gt = read_annotations(data / "val.csv")
    labelmap = read_labelmap(data / "labelmap.pbtxt")
    keys = {(v, t, tuple(b)) for v, t, b, a in zip(gt.video_id, gt.timestamp, gt.boxes.tolist(), gt.action_id,
                                                    strict=True) if a >= 0}
    boxes = max(len(keys), 1)
    rates = []
    for class_id in labelmap.ids:
        positives = {(v, t, tuple(b)) for v, t, b, a in zip(gt.video_id, gt.timestamp, gt.boxes.tolist(),
                                                            gt.action_id, strict=True) if a == class_id}
        if positives:
            rates.append(len(positives) / boxes)
    return sum(rates) / len(rates) if rates else 0.0


# What benchmarks/bank_gain.py measured over seeds 0-6 with its own (longer) settings, not the quick profile's (docs/bank.md).
BANK_SEEDS_SENTENCE = ("With the benchmark's longer settings (extractor 24 head-only epochs, both runs 30 epochs), "
                       "seeds 0-6: the bank learnt the event (AP watch >= 0.9) in 5 of 7, every seed whose extractor "
                       "saw the screen (AP listen 1.00); mean frame-mAP margin +1.6 points, 5 of 7 positive, the "
                       "other classes moving by a few points between the two runs")


def bank_gain_section(gain: Any) -> list[str]:
    """report.md's feature-bank section: the two continued runs' val frame-mAP and AP watch, the margin."""
    from acar_deploy.data.synth import SCREEN_HEARD, TEMPORAL_CLASSES, WATCH

    watch, heard = TEMPORAL_CLASSES[WATCH], TEMPORAL_CLASSES[SCREEN_HEARD]
    ap = lambda v: "n/a" if v is None else f"{100 * v:.2f}"  # noqa: E731
    s = gain.settings
    head = f", then {s.extractor_head_epochs} head-only epochs" if s.extractor_head_epochs else ""
    lines = ["## Feature bank (ACFB) on temporal synthetic data", "",
             f"`synth --temporal` ({s.videos} videos x {s.seconds} s): half the videos show a \"TV\" at one keyframe "
             f"only and are labelled `{watch}` at every keyframe (and `{heard}` at that keyframe); each has a twin "
             f"video without it. A no-bank model ({s.extractor_epochs} epochs from scratch{head}; val frame-mAP "
             f"{100 * gain.extractor_map:.2f}, AP `{heard}` {ap(gain.extractor_ap_heard)}: how well it sees the screen "
             f"where it is visible) fills the banks; both runs below then fine-tune the head only (backbone frozen) "
             f"for {s.extra_epochs} epochs from it, same recipe and seed.", "",
             f"| model | val frame-mAP | AP {watch} |", "|---|---:|---:|",
             f"| no bank | {100 * gain.no_bank.val_map:.2f} | {ap(gain.no_bank.ap_watch)} |",
             f"| bank | {100 * gain.bank.val_map:.2f} | {ap(gain.bank.ap_watch)} |",
             f"| margin | **{100 * gain.margin:+.2f}** | "
             f"{'n/a' if gain.margin_watch is None else f'{100 * gain.margin_watch:+.2f}'} |", "",
             f"{BANK_SEEDS_SENTENCE} (docs/bank.md).", "",
             "Reproduce:", "", "```bash", *gain.commands, "```", ""]
    return lines


def write_report(result: DemoResult, state: dict[str, Any], settings: DemoSettings) -> Path:
    """report.md: what each stage did, the latency and parity tables, the plots and rendered keyframes."""
    from acar_deploy.artifacts import atomic_file
    from acar_deploy.bench.report import environment_block, execution_lines, latency_table, stage_table
    from acar_deploy.verify.parity import markdown_parity

    out = result.out
    rel = lambda p: os.path.relpath(p, out)  # noqa: E731 - links in report.md are relative to it
    lines = ["# acar-deploy demo report", ""]
    lines += [f"Profile: {'quick' if settings.quick else 'full'}; seed {settings.seed}; {settings.threads} threads; "
              f"total {sum(s.seconds for s in result.stages):.1f} s.", ""]
    lines += ["## Stages", "", "| stage | time | result |", "|---|---:|---|"]
    lines += [f"| {s.name} | {s.seconds:.1f} s | {s.summary} |" for s in result.stages]
    lines += ["", "## Training and frame-mAP", ""]
    history = state["train"].history
    lines += ["| epoch | loss | lr | val frame-mAP |", "|---:|---:|---:|---:|"]
    lines += [f"| {h.epoch} | {h.loss:.4f} | {h.lr:.4g} | "
              f"{'' if h.val_map is None else f'{100 * h.val_map:.2f}'} |" for h in history]
    scored = state["frame_map"]
    lines += ["", f"Final val frame-mAP: **{100 * scored.mAP:.2f}** (chance level {100 * state['chance_map']:.2f}).", ""]
    lines += bank_gain_section(state["bank_gain"])
    if (bank_bench := state.get("bank_bench")) is not None and bank_bench.replay is not None:
        from acar_deploy.bench.report import replay_section

        lines += ["### The bank model deployed", "",
                  "Exported to ONNX (backbone, bank_kv, bank head) and benchmarked against eager with one val video "
                  f"of the bank replayed keyframe by keyframe ([results]({rel(out / 'bank' / 'bench' / 'results.md')})):",
                  "", *replay_section(bank_bench.replay)[2:]]
    bench = state["bench"]
    lines += ["## Latency (measured in one interleaved run)", "", latency_table(bench), "", stage_table(bench), ""]
    if execution := execution_lines(bench):  # e.g. an OpenVINO bf16 engine that ran f32 on this CPU
        lines += ["What each runtime ran:", "", *execution, ""]
    for png in ("latency_vs_actors.png", "stages.png"):
        lines.append(f"![{png}]({rel(out / 'bench' / png)})")
    lines += ["", "Tiny model on synthetic 96x128 clips: the ratios show the pipeline works, not R50 figures "
              "(see benchmarks/README.md for those).", ""]
    lines += ["## Parity gate", "", "| engine | result | mAP eager | mAP engine | diff (pts) | top-1 changed |",
              "|---|---|---:|---:|---:|---:|"]
    for name, report in state["parity"].items():
        lines.append(f"| {name} | {'PASS' if report.passed else 'FAIL: ' + '; '.join(report.failures)} | "
                     f"{100 * report.map_eager:.2f} | {100 * report.map_engine:.2f} | {report.map_diff_points:+.2f} | "
                     f"{100 * report.top1_changed:.1f} % |")
    for name, report in state["parity"].items():
        lines += ["", f"### {name}", "", markdown_parity(report).strip()]
    if result.notes:
        lines += ["", "## Skipped", "", *[f"- {n}" for n in result.notes]]
    lines += ["", "## Rendered keyframes", ""]
    lines += [f"![{p.name}]({rel(p)})" for p in result.renders]
    lines += ["", "## Rerun any stage", "", "```bash"] + [s.command for s in result.stages] + ["```", ""]
    lines += ["## Environment", "", environment_block(bench.environment), ""]
    with atomic_file(result.report, mode="w") as fh:
        fh.write("\n".join(lines))
    return result.report
