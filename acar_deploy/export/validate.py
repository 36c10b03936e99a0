"""Validation of exported graphs: onnx.checker (full), shape inference, and ORT vs eager.

ORT is compared with eager PyTorch on realistic inputs for several box counts R and batch sizes B
(and a second frame size when the graph has dynamic frame sizes), per output, against the tolerance
that the part's spec declares. Used by `export_model` before anything is written, and on its own by
`validate_export(path)` / `acar-deploy validate`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acar_deploy.artifacts import sha256_file
from acar_deploy.errors import GateFailedError, InputError
from acar_deploy.export.specs import PartSpec, make_spec
from acar_deploy.formats import ExportManifest
from acar_deploy.progress import progress_bar


@dataclass(frozen=True)
class ValidationSettings:
    """Which cases ORT is compared with eager on; the seed makes the inputs reproducible."""

    rois: tuple[int, ...] = (1, 3, 17)
    batches: tuple[int, ...] = (1, 2)
    entries: tuple[int, ...] = (1, 4, 13)  # bank entries M (acfb parts); with B = 2 one clip has none
    seed: int = 0


@dataclass(frozen=True)
class ValidationRow:
    part: str
    output: str
    R: int | None
    B: int
    size: tuple[int, int]
    max_abs: float
    max_rel: float
    atol: float
    rtol: float
    ok: bool
    M: int | None = None  # bank entries (acfb parts only)

    def to_dict(self) -> dict[str, Any]:
        bank = {"M": self.M} if self.M is not None else {}
        return {
            "part": self.part, "output": self.output, "R": self.R, "B": self.B, **bank, "size": list(self.size),
            "max_abs": self.max_abs, "max_rel": self.max_rel, "atol": self.atol, "rtol": self.rtol,
            "ok": self.ok,
        }


@dataclass(frozen=True)
class ValidationReport:
    path: str
    rows: tuple[ValidationRow, ...]
    checks: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    @property
    def failures(self) -> tuple[ValidationRow, ...]:
        return tuple(r for r in self.rows if not r.ok)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "ok": self.ok, "checks": list(self.checks),
                "validation": [r.to_dict() for r in self.rows]}


class ValidationError(GateFailedError):
    """ORT differs from eager beyond a declared tolerance; `report` holds the whole table."""

    def __init__(self, report: ValidationReport):
        worst = max(report.failures, key=lambda r: r.max_abs / max(r.atol, 1e-30))
        r_text = f" R={worst.R}" if worst.R is not None else ""
        super().__init__(
            f"{report.path}: ONNX Runtime differs from eager beyond tolerance in {len(report.failures)} of "
            f"{len(report.rows)} cases (worst: {worst.part}/{worst.output}{r_text} B={worst.B} "
            f"{worst.size[0]}x{worst.size[1]}: max_abs {worst.max_abs:.3g} > atol {worst.atol:g})"
        )
        self.report = report


# ---- graph checks ------------------------------------------------------------------------------


def load_graph(path: str | os.PathLike, external_data: bool = False):
    """Load an ONNX file (with its external weight files if `external_data`); a missing, truncated or
    corrupted file is an InputError naming it."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: graph file not found; re-run `acar-deploy export` for this folder")
    try:
        model = onnx.load(str(path), load_external_data=external_data)
    except (DecodeError, RuntimeError, ValueError, OSError) as exc:
        raise InputError(
            f"{path}: not a readable ONNX graph (truncated or corrupted: {type(exc).__name__}); "
            "re-run `acar-deploy export --force`"
        ) from None
    if not model.graph.node:
        raise InputError(f"{path}: the ONNX graph is empty (truncated or corrupted); re-run `acar-deploy export --force`")
    return model


def check_graph(model, path: str | os.PathLike, spec: PartSpec) -> list[str]:
    """onnx.checker (full) and strict shape inference; inputs/outputs must be the spec's."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise GateFailedError(f"{path}: onnx.checker rejects the graph: {str(exc).splitlines()[0]}") from None
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, RuntimeError) as exc:
        raise GateFailedError(f"{path}: ONNX shape inference fails: {str(exc).splitlines()[0]}") from None
    names_in = [i.name for i in inferred.graph.input]
    names_out = [o.name for o in inferred.graph.output]
    want_in = [s.name for s in spec.inputs]
    want_out = [s.name for s in spec.outputs]
    if names_in != want_in or names_out != want_out:
        raise GateFailedError(
            f"{path}: graph inputs/outputs are {names_in} -> {names_out}, the {spec.part} spec says "
            f"{want_in} -> {want_out}"
        )
    for out, want in zip(inferred.graph.output, spec.outputs, strict=True):
        rank = len(out.type.tensor_type.shape.dim)
        if rank != len(want.shape):
            raise GateFailedError(f"{path}: output {out.name} has rank {rank}, expected {len(want.shape)}")
    return [f"{spec.part}: onnx.checker full check ok", f"{spec.part}: shape inference ok"]


# ---- ORT vs eager ------------------------------------------------------------------------------


def _errors(actual: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    if diff.size == 0:
        return 0.0, 0.0
    scale = np.maximum(np.abs(expected.astype(np.float64)), 1e-6)
    return float(diff.max()), float((diff / scale).max())


def _within(actual: np.ndarray, expected: np.ndarray, atol: float, rtol: float) -> bool:
    if actual.shape != expected.shape:
        return False
    return bool(np.all(np.abs(actual.astype(np.float64) - expected) <= atol + rtol * np.abs(expected.astype(np.float64))))


Case = tuple[int | None, int, tuple[int, int], int | None]


def validation_cases(spec: PartSpec, settings: ValidationSettings) -> list[Case]:
    """(R, B, frame size, M) cases: R is irrelevant for the backbone and bank_kv (None), M for non-bank parts."""
    sizes = [spec.geometry.input_size]
    if spec.geometry.dynamic_size:
        sizes.append(spec.geometry.second_input_size())
    rois: Sequence[int | None] = (None,) if spec.part in ("backbone", "bank_kv") else settings.rois
    batches = (1,) if spec.part == "bank_kv" else settings.batches
    entries: Sequence[int | None] = settings.entries if spec.part.startswith("bank_") else (None,)
    return [(r, b, s, m) for s in sizes for b in batches for r in rois for m in entries]


def compare_part(
    graph_path: str | os.PathLike,
    spec: PartSpec,
    eager_module,
    settings: ValidationSettings = ValidationSettings(),
    on_case: Callable[[], None] | None = None,
) -> list[ValidationRow]:
    """Run the graph in ONNX Runtime and `eager_module` on the same inputs; one row per output and case."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(graph_path), providers=["CPUExecutionProvider"])
    rows: list[ValidationRow] = []
    for index, (count, batch, size, entries) in enumerate(validation_cases(spec, settings)):
        rng = np.random.default_rng([settings.seed, index])
        bank = {"entries": entries} if entries is not None else {}
        feeds = spec.example_inputs(rng, batch, count or 1, size, **bank)
        with torch.inference_mode():
            expected = eager_module(*(torch.from_numpy(feeds[s.name].copy()) for s in spec.inputs))
        if isinstance(expected, torch.Tensor):
            expected = (expected,)
        expected = [e.detach().float().numpy() for e in expected]
        actual = session.run([s.name for s in spec.outputs], feeds)
        for out_spec, got, ref in zip(spec.outputs, actual, expected, strict=True):
            tol = spec.tolerance(out_spec.name)
            shape_ok = got.shape == ref.shape
            max_abs, max_rel = _errors(got, ref) if shape_ok else (float("inf"), float("inf"))
            rows.append(
                ValidationRow(
                    part=spec.part, output=out_spec.name, R=count, B=batch, size=tuple(size),
                    max_abs=max_abs, max_rel=max_rel, atol=tol.atol, rtol=tol.rtol,
                    ok=shape_ok and _within(got, ref, tol.atol, tol.rtol), M=entries,
                )
            )
        if on_case is not None:
            on_case()
    return rows


# ---- whole export folders ----------------------------------------------------------------------


def _eager_model_for(manifest: ExportManifest, folder: Path, checkpoint: str | os.PathLike | None):
    source = manifest.source
    ckpt = checkpoint if checkpoint is not None else source.get("checkpoint")
    if ckpt is not None:
        ckpt = Path(ckpt)
        if not ckpt.is_file():
            raise InputError(
                f"{ckpt}: checkpoint recorded in {manifest.path} not found; pass --checkpoint CKPT"
            )
        want = manifest.checkpoint_sha256
        if want and sha256_file(ckpt) != want:
            raise InputError(
                f"{ckpt}: sha256 differs from checkpoint_sha256 in {manifest.path}; "
                "pass the checkpoint the graphs were exported from"
            )
    from acar_deploy.model import load_model
    from acar_deploy.model.config import ModelConfig

    config = ModelConfig.from_dict(manifest.config, source=str(manifest.path))
    return load_model(ckpt, config, seed=int(source.get("seed", 0))).eval()


def validate_export(
    path: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    settings: ValidationSettings = ValidationSettings(),
    raise_on_failure: bool = True,
    progress: bool = False,
) -> ValidationReport:
    """Check every graph of an export folder and compare it with eager; raise ValidationError on a miss.

    The eager model is rebuilt from the checkpoint recorded in the manifest (or `checkpoint`, whose
    sha256 must match), or from the recorded seed when the export used a random init.
    """
    folder = Path(path)
    manifest = ExportManifest.load(folder)
    geometry = manifest.geometry()
    models = {part: load_graph(manifest.graph_path(part)) for part in manifest.parts}  # readable at all?
    manifest.verify_graphs()
    graphs = {}
    checks: list[str] = []
    for part, model in models.items():
        spec = make_spec(part, geometry)
        graph_path = manifest.graph_path(part)
        checks += check_graph(model, graph_path, spec)
        graphs[part] = (spec, graph_path)
    eager = _eager_model_for(manifest, folder, checkpoint)
    rows: list[ValidationRow] = []
    with progress_bar(progress) as bar:
        task = bar.add_task("ORT vs eager", total=sum(len(validation_cases(s, settings)) for s, _ in graphs.values()))
        for spec, graph_path in graphs.values():
            rows += compare_part(graph_path, spec, spec.module(eager).eval(), settings,
                                 on_case=lambda: bar.advance(task))
    report = ValidationReport(str(folder), tuple(rows), tuple(checks))
    if raise_on_failure and not report.ok:
        raise ValidationError(report)
    return report


def render_table(report: ValidationReport):
    """A rich Table of the validation rows (the CLI prints it)."""
    from rich.table import Table

    table = Table(title=f"validation: {report.path}", show_lines=False)
    for name in ("part", "output", "R", "B", "M", "size", "max_abs", "max_rel", "atol", "ok"):
        table.add_column(name, justify="right" if name not in ("part", "output") else "left")
    for r in report.rows:
        table.add_row(
            r.part, r.output, "-" if r.R is None else str(r.R), str(r.B), "-" if r.M is None else str(r.M),
            f"{r.size[0]}x{r.size[1]}",
            f"{r.max_abs:.2e}", f"{r.max_rel:.2e}", f"{r.atol:.0e}",
            "[green]ok[/green]" if r.ok else "[red]FAIL[/red]",
        )
    return table
