"""Parity gate: an engine must give eager's numbers on real clips and person boxes, and eager's mAP.

Both runners see the same keyframes of an AVA-format dataset (clip + the person proposals that pass
the inference score threshold). Numeric parity compares outputs element-wise (eager is the
reference); task parity evaluates both with the official frame-mAP (`acar_deploy.eval.frame_map`)
against the ground truth. The gate fails (exit 1) when any pinned threshold is exceeded; the
report says which.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from acar_deploy.engines.runners.base import execution_details
from acar_deploy.errors import GateFailedError, InputError, check_range
from acar_deploy.jsonout import to_jsonable
from acar_deploy.progress import progress_bar
from acar_deploy.verify.compare import OutputDiff, compare_output, top_action_changed
from acar_deploy.verify.thresholds import ParityThresholds, engine_kind, resolve_thresholds

OUTPUTS = ("logits", "scores")


@dataclass(frozen=True)
class ParitySettings:
    engine: str  # engine or export folder
    data: Path  # AVA-format dataset folder with dataset.json (e.g. `acar-deploy synth` output)
    checkpoint: Path | None = None  # None: seeded random weights (only meaningful for numeric parity)
    config: str | None = None  # None: the config the checkpoint carries
    split: str = "val"
    max_keyframes: int | None = None  # at most this many keyframes (in file order); None: all
    max_map_drop: float | None = None  # CLI overrides; None keeps the YAML / built-in value
    atol: float | None = None
    rtol: float | None = None
    thresholds: Path | None = None  # explicit thresholds YAML; default `<config>.parity.yaml`
    out: Path | None = None
    force: bool = False
    threads: int = 2
    min_score: float | None = None  # proposal score threshold; None: the dataset layer's default (0.85)
    bank: Path | None = None  # acfb models: feature bank of the split (acar-deploy bank extract)

    def __post_init__(self) -> None:
        check_range("--max-keyframes", self.max_keyframes, 1)  # -1 used to check all but the last keyframe
        check_range("--max-map-drop", self.max_map_drop, 0)
        check_range("--atol", self.atol, 0)
        check_range("--rtol", self.rtol, 0)
        check_range("--threads", self.threads, 1)
        check_range("--min-score", self.min_score, 0, 1)


@dataclass(frozen=True)
class ClassApDiff:
    class_id: int
    name: str
    ap_eager: float
    ap_engine: float

    @property
    def diff_points(self) -> float:
        return (self.ap_engine - self.ap_eager) * 100.0


@dataclass(frozen=True)
class ParityReport:
    engine: str
    engine_kind: str  # e.g. "ort-int8"
    data: str
    split: str
    keyframes: int
    boxes: int
    outputs: tuple[OutputDiff, ...]
    map_eager: float  # fraction (0..1)
    map_engine: float
    top_classes: tuple[ClassApDiff, ...]  # the five largest |AP difference|
    top1_changed: float
    thresholds: ParityThresholds
    threshold_sources: tuple[str, ...]
    failures: tuple[str, ...]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def map_diff_points(self) -> float:
        """mAP(engine) - mAP(eager), in points (x100); negative is a drop."""
        return (self.map_engine - self.map_eager) * 100.0

    def output(self, name: str) -> OutputDiff:
        return next(o for o in self.outputs if o.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "acar-deploy-parity",
            "format_version": 1,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "passed": self.passed,
            "failures": list(self.failures),
            "engine": self.engine,
            "engine_kind": self.engine_kind,
            "data": self.data,
            "split": self.split,
            "keyframes": self.keyframes,
            "boxes": self.boxes,
            "numeric": {o.name: o.to_dict() for o in self.outputs},
            "task": {
                "frame_map_eager": self.map_eager,
                "frame_map_engine": self.map_engine,
                "map_diff_points": self.map_diff_points,
                "top1_changed_fraction": self.top1_changed,
                "largest_ap_differences": [
                    {"class_id": c.class_id, "name": c.name, "ap_eager": c.ap_eager, "ap_engine": c.ap_engine,
                     "diff_points": c.diff_points}
                    for c in self.top_classes
                ],
            },
            "thresholds": {k: getattr(self.thresholds, k) for k in self.thresholds.__dataclass_fields__},
            "threshold_sources": list(self.threshold_sources),
            "metadata": self.metadata,
        }


class ParityGateFailed(GateFailedError):
    """Raised after the report is written; carries it for API callers."""

    def __init__(self, report: ParityReport):
        super().__init__(f"parity gate failed for {report.engine} ({report.engine_kind}): " + "; ".join(report.failures))
        self.report = report


# --- data ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitFiles:
    """The files of one split of a dataset folder (read through `acar_deploy.data.dataset.load_dataset`)."""

    root: Path
    media_root: Path
    annotations: Path
    proposals: Path
    exclusions: Path | None
    labelmap: Path | None
    start_seconds: float


def read_split(root: Path, split: str) -> SplitFiles:
    from acar_deploy.data.dataset import load_dataset

    folder = load_dataset(root)

    def required(key: str) -> Path:
        path = folder.path(key)
        if path is None:
            raise InputError(f"{root / 'dataset.json'}: files.{key} is missing; the dataset has no '{split}' split")
        return path

    return SplitFiles(
        root=folder.root,
        media_root=folder.media_dir,
        annotations=required(f"{split}_annotations"),
        proposals=required(f"{split}_proposals"),
        exclusions=folder.path(f"{split}_exclusions"),
        labelmap=folder.path("labelmap"),
        start_seconds=folder.start_seconds,
    )


def split_keyframes(ds: SplitFiles, min_score: float | None = None, limit: int | None = None) -> list[Any]:
    """Inference keyframes: proposals >= the score threshold (default: the inference threshold), in
    (video, timestamp) order, the first `limit` of them."""
    from acar_deploy.data import ava_csv
    from acar_deploy.data.dataset import INFERENCE_PROPOSAL_SCORE, inference_keyframes

    min_score = INFERENCE_PROPOSAL_SCORE if min_score is None else min_score
    props = ava_csv.read_proposals(ds.proposals)
    rows = [(v, int(t), *map(float, b), float(s))
            for v, t, b, s in zip(props.video_id, props.timestamp, props.boxes, props.score, strict=True)]
    keyframes = inference_keyframes(rows, min_score=min_score)
    if limit is not None:
        keyframes = keyframes[:limit]
    if not keyframes:
        raise InputError(f"{ds.proposals}: no proposals with score >= {min_score}; nothing to compare")
    return keyframes


# --- runs ---------------------------------------------------------------------------------------


@dataclass
class _RunOutputs:
    logits: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def of(cls, results: list[Any]) -> _RunOutputs:
        """Per-box logits and scores of `predict_split` results."""
        return cls([r.logits[None] for r in results], [r.scores[None] for r in results])

    def stacked(self, name: str) -> np.ndarray:
        values = getattr(self, name)
        return np.concatenate(values, 0) if values else np.zeros((0, 0), np.float32)


def _prediction_rows(results: list[Any], class_ids: tuple[int, ...]) -> list[tuple]:
    """One `(video, timestamp, x1, y1, x2, y2, action_id, score)` row per box (`BoxScores`) and class."""
    rows = []
    for r in results:
        for j, class_id in enumerate(class_ids):
            rows.append((r.video_id, r.timestamp, *(float(v) for v in r.box), int(class_id), float(r.scores[j])))
    return rows


def _as_predictions(rows: list[tuple], stamps: dict[tuple[str, int], str]) -> Any:
    """Rows -> `AvaPredictions`, spelling each timestamp as the ground truth does."""
    from acar_deploy.data.ava_csv import AvaPredictions

    n = len(rows)
    return AvaPredictions(
        video_id=np.array([r[0] for r in rows], dtype=object if n == 0 else None),
        timestamp=np.array([stamps.get((r[0], r[1]), str(r[1])) for r in rows], dtype=object if n == 0 else None),
        boxes=np.array([r[2:6] for r in rows], np.float64).reshape(-1, 4),
        action_id=np.array([r[6] for r in rows], np.int64),
        score=np.array([r[7] for r in rows], np.float64),
        source="predictions",
    )


def check_parity(settings: ParitySettings, progress: bool = True) -> ParityReport:
    """Run eager and the engine on the same keyframes; write parity.json/.md; raise when the gate fails."""
    from acar_deploy.artifacts import check_can_write
    from acar_deploy.data.clips import ClipSpec
    from acar_deploy.data.dataset import KeyframeDataset
    from acar_deploy.data.labelmap import read_labelmap
    from acar_deploy.engines.runners.eager import EagerRunner
    from acar_deploy.model.checkpoint import load_model

    if settings.out is not None:
        check_can_write(Path(settings.out), settings.force)
    ds = read_split(Path(settings.data), settings.split)
    model = load_model(settings.checkpoint, settings.config)
    config = model.config
    keyframes = split_keyframes(ds, settings.min_score, settings.max_keyframes)
    model_classes = read_labelmap().ids  # logit j = the j-th id of the 60-class AVA map (official idx_to_class)
    if len(model_classes) != config.head.num_classes:
        raise InputError(f"the model has {config.head.num_classes} classes but the AVA label map lists "
                         f"{len(model_classes)}; parity needs the 60-class AVA head")
    spec = ClipSpec.from_model_config(config, short_side=config.input.short_side)
    dataset = KeyframeDataset(keyframes, ds.media_root, model_classes, spec=spec, start_seconds=ds.start_seconds)
    from acar_deploy.bank.dataset import open_bank_for, with_bank

    bank = open_bank_for(settings.bank, config, settings.split) if settings.bank is not None else None

    from acar_deploy.engines.runners.base import RunnerOptions
    from acar_deploy.engines.runners.open import open_runner
    from acar_deploy.formats import verify_folder

    verify_folder(settings.engine)
    if bank is not None and bank.has_kv and not str(settings.engine).startswith("eager"):
        # the engine reads the K/V stored in the bank (refused when other weights projected them);
        # eager, the reference, projects them from the entries on the fly
        from acar_deploy.engines.bank_projection import projection_weights

        bank.use_stored_kv(projection_weights(settings.engine))
        bank.check_arrays()
    dataset, collate = with_bank(dataset, config, bank)
    if not str(settings.engine).startswith("eager"):
        from acar_deploy.engines.compat import check_engine_fits

        check_engine_fits(settings.engine, num_frames=config.input.num_frames, num_classes=config.head.num_classes)
    # Eager and the engine alternate per keyframe: ORT's pool threads must not spin between calls.
    options = RunnerOptions(threads=settings.threads, allow_spinning=False)
    eager = EagerRunner(model, name="eager", options=options)
    engine = open_runner(settings.engine, options)
    kind = "-".join(engine_kind(engine.metadata))
    thresholds, sources = resolve_thresholds(
        engine.metadata, settings.config, settings.thresholds,
        {"max_map_drop": settings.max_map_drop, "atol": settings.atol, "rtol": settings.rtol},
    )
    from acar_deploy.detect import predict_split

    with eager, engine, progress_bar(progress) as bar:
        task = bar.add_task("parity (eager, then engine)", total=2 * len(dataset))
        ref_boxes = predict_split(eager, dataset, progress=lambda: bar.advance(task), collate=collate, stored_kv=False)
        out_boxes = predict_split(engine, dataset, progress=lambda: bar.advance(task), collate=collate)
    ref, out = _RunOutputs.of(ref_boxes), _RunOutputs.of(out_boxes)
    pred_eager = _prediction_rows(ref_boxes, model_classes)
    pred_engine = _prediction_rows(out_boxes, model_classes)
    boxes_total = len(ref_boxes)

    atol = thresholds.atol or 0.0
    rtol = thresholds.rtol or 0.0
    diffs = tuple(compare_output(n, ref.stacked(n), out.stacked(n), atol, rtol) for n in OUTPUTS)
    top1 = top_action_changed(ref.stacked("scores"), out.stacked("scores"))
    map_eager, ap_eager, names = _frame_map(ds, pred_eager)
    map_engine, ap_engine, _ = _frame_map(ds, pred_engine)
    classes = [ClassApDiff(c, names.get(c, str(c)), ap_eager[c], ap_engine.get(c, float("nan"))) for c in ap_eager]
    classes.sort(key=lambda c: -abs(c.diff_points) if np.isfinite(c.diff_points) else 0.0)
    report = ParityReport(
        engine=str(settings.engine),
        engine_kind=kind,
        data=str(settings.data),
        split=settings.split,
        keyframes=len(dataset),
        boxes=boxes_total,
        outputs=diffs,
        map_eager=map_eager,
        map_engine=map_engine,
        top_classes=tuple(classes[:5]),
        top1_changed=top1,
        thresholds=thresholds,
        threshold_sources=tuple(sources),
        failures=tuple(gate_failures(thresholds, diffs, map_eager, map_engine, top1)),
        metadata={"engine": to_jsonable(engine.metadata), "eager": to_jsonable(eager.metadata),
                  "checkpoint": None if settings.checkpoint is None else str(settings.checkpoint),
                  "config": config.name,
                  "bank_kv": None if bank is None else "stored in the bank" if bank.stored_kv else "projected"},
    )
    if settings.out is not None:
        write_parity_report(report, Path(settings.out), force=settings.force,
                            predictions={"eager": pred_eager, "engine": pred_engine})
    if not report.passed:
        raise ParityGateFailed(report)
    return report


def gate_failures(
    thresholds: ParityThresholds, diffs: tuple[OutputDiff, ...], map_eager: float, map_engine: float, top1: float
) -> list[str]:
    """One message per exceeded threshold, naming the value and the limit."""
    failures = []
    if thresholds.numeric_gated:
        for d in diffs:
            if d.within < thresholds.min_within:
                failures.append(
                    f"{d.name}: {d.within:.2%} of elements within atol {d.atol:g} + rtol {d.rtol:g}*|eager| "
                    f"(need {thresholds.min_within:.2%}; max abs error {d.max_abs:.3g}, worst at {list(d.worst_index)}: "
                    f"{d.worst_value:.5g} vs eager {d.worst_reference:.5g})"
                )
    if thresholds.min_cosine is not None:
        for d in diffs:
            if d.cosine < thresholds.min_cosine:
                failures.append(f"{d.name}: cosine similarity {d.cosine:.6f} < min_cosine {thresholds.min_cosine:g}")
    diff_points = (map_engine - map_eager) * 100.0
    if thresholds.max_map_drop is not None and abs(diff_points) > thresholds.max_map_drop:
        failures.append(
            f"frame-mAP {map_engine * 100:.2f} vs eager {map_eager * 100:.2f}: |difference| {abs(diff_points):.2f} "
            f"points > max_map_drop {thresholds.max_map_drop:g}"
        )
    if thresholds.max_top1_changed is not None and top1 > thresholds.max_top1_changed:
        failures.append(f"top action changed for {top1:.2%} of boxes > max_top1_changed {thresholds.max_top1_changed:.2%}")
    return failures


def _frame_map(ds: SplitFiles, predictions: list[tuple]) -> tuple[float, dict[int, float], dict[int, str]]:
    """Official frame-mAP of `predictions` against the split's ground truth: (mAP, AP per class, names)."""
    from acar_deploy.data import ava_csv
    from acar_deploy.data.labelmap import read_labelmap
    from acar_deploy.eval.frame_map import frame_map

    labelmap = read_labelmap(ds.labelmap)
    gt = ava_csv.read_annotations(ds.annotations)
    stamps = {(str(v), int(t)): str(t) for v, t in zip(gt.video_id, gt.timestamp, strict=True)}
    exclusions = ava_csv.read_exclusions(ds.exclusions) if ds.exclusions is not None else None
    result = frame_map(gt, _as_predictions(predictions, stamps), labelmap=labelmap, exclusions=exclusions)
    per_class = {int(k): float(v) for k, v in result.per_class.items() if v is not None}  # None: no ground truth
    return float(result.mAP), per_class, labelmap.as_dict()


# --- report -------------------------------------------------------------------------------------


def markdown_parity(report: ParityReport) -> str:
    status = "PASSED" if report.passed else "FAILED"
    details = [f"- engine {d}" for d in execution_details(report.metadata.get("engine") or {})]
    lines = [
        f"# Parity: {report.engine} ({report.engine_kind}) — {status}",
        "",
        f"{report.keyframes} keyframes, {report.boxes} boxes from `{report.data}` ({report.split} split); "
        "reference: eager PyTorch fp32.",
        "",
        *details,
        *([""] if details else []),
        "## Numeric parity (engine vs eager)",
        "",
        "| output | elements | max abs | mean abs | max rel | cosine | within atol+rtol·|ref| |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for d in report.outputs:
        within = (f"{d.within:.2%} (atol {d.atol:g}, rtol {d.rtol:g})" if report.thresholds.numeric_gated
                  else "not gated (no atol/rtol)")
        lines.append(f"| {d.name} | {d.elements} | {d.max_abs:.3g} | {d.mean_abs:.3g} | {d.max_rel:.3g} | "
                     f"{d.cosine:.6f} | {within} |")
    lines += [
        "",
        "## Task parity (official frame-mAP, IoU 0.5)",
        "",
        f"- frame-mAP eager {report.map_eager * 100:.2f}, engine {report.map_engine * 100:.2f}: "
        f"difference {report.map_diff_points:+.2f} points",
        f"- boxes whose top action changed: {report.top1_changed:.2%}",
        "",
        "| class | AP eager | AP engine | diff (points) |",
        "|---|---:|---:|---:|",
    ]
    for c in report.top_classes:
        lines.append(f"| {c.class_id} {c.name} | {c.ap_eager * 100:.2f} | {c.ap_engine * 100:.2f} | {c.diff_points:+.2f} |")
    t = report.thresholds
    lines += [
        "",
        "## Gate",
        "",
        f"- thresholds: max_map_drop {t.max_map_drop}, atol {t.atol}, rtol {t.rtol}, min_within {t.min_within}, "
        f"min_cosine {t.min_cosine}, max_top1_changed {t.max_top1_changed}",
        f"- from: {'; '.join(report.threshold_sources)}",
    ]
    lines += [f"- FAILED: {f}" for f in report.failures] or ["- all thresholds met"]
    return "\n".join(lines) + "\n"


def write_parity_report(
    report: ParityReport, out: Path, force: bool = False, predictions: dict[str, list[tuple]] | None = None
) -> Path:
    """parity.json, parity.md and (when given) the two prediction CSVs, written atomically."""
    from acar_deploy.artifacts import atomic_dir, write_json

    with atomic_dir(out, force=force) as tmp:
        write_json(tmp / "parity.json", report.to_dict())
        (tmp / "parity.md").write_text(markdown_parity(report), encoding="utf-8")
        for name, rows in (predictions or {}).items():
            with open(tmp / f"predictions_{name}.csv", "w", encoding="utf-8") as fh:
                for v, t, x1, y1, x2, y2, c, s in rows:
                    fh.write(f"{v},{t},{x1:.3f},{y1:.3f},{x2:.3f},{y2:.3f},{c},{s:.6f}\n")
    return out


def default_parity_out(engine: str | os.PathLike) -> Path:
    return Path("runs") / "parity" / Path(engine).resolve().name
