"""`export_model`: checkpoint -> single-file ONNX graphs (split and/or fused) + manifest.json, validated.

Exporter choice: torch's dynamo exporter (`torch.onnx.export(dynamo=True)`, the torch 2.13 default).
The model's RoIAlign exports through its custom-op translation table and the plugin twins through
`torch.onnx.ops.symbolic`, which the TorchScript exporter cannot trace. The graph is kept in memory
and saved as ONE file (no `.onnx.data`). Dynamo writes opset 18 natively; other opsets go through
onnxscript's version converter, and the written opset is checked (a failed down-conversion, e.g. to
17, is an error rather than a silently different file).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from acar_deploy.artifacts import atomic_dir, check_can_write, sha256_file
from acar_deploy.errors import GateFailedError, InputError
from acar_deploy.export.plugin_nodes import attach_local_functions, main_opset, node_summary
from acar_deploy.export.specs import (
    ExportGeometry,
    Normalization,
    PartSpec,
    make_spec,
    random_clips,
)
from acar_deploy.export.validate import (
    ValidationError,
    ValidationReport,
    ValidationSettings,
    check_graph,
    compare_part,
    load_graph,
    validation_cases,
)
from acar_deploy.formats import EXPORT_FORMAT, EXPORT_FORMAT_VERSION, MANIFEST_FILE, ExportManifest
from acar_deploy.formats.manifest import BANK_PARTS, BankGeometry
from acar_deploy.progress import progress_bar

MIN_OPSET = 18  # torch's exporter cannot convert this model to 17
DEFAULT_OPSET = 18
EXAMPLE_BATCH = 2  # export-time example sizes: never 0 or 1 (torch.export specialises those)
EXAMPLE_ROIS = 3


class Parts(str, Enum):
    split = "split"
    fused = "fused"
    all = "all"

    @property
    def names(self) -> tuple[str, ...]:
        return {"split": ("backbone", "head"), "fused": ("fused",), "all": ("backbone", "head", "fused")}[self.value]

    def names_for(self, head_type: str) -> tuple[str, ...]:
        """An acfb head exports as bank_kv + bank_head (K/V once per bank entry); it has no fused graph."""
        if head_type != "acfb":
            return self.names
        if self == Parts.fused:
            raise InputError("--parts fused: an acfb head takes its bank window per keyframe and exports "
                             "split only (backbone, bank_kv, bank_head); use --parts split")
        return ("backbone", *BANK_PARTS)


class NodeChoice(str, Enum):
    """How RoIAlign / HR2O attention appear in the graph: standard ONNX ops or one custom plugin node."""

    onnx = "onnx"
    plugin = "plugin"


@dataclass(frozen=True)
class ExportSettings:
    parts: Parts = Parts.split
    roi_align: NodeChoice = NodeChoice.onnx
    hr2o: NodeChoice = NodeChoice.onnx
    opset: int = DEFAULT_OPSET
    input_size: tuple[int, int] | None = None  # (H, W); default: the config's short side at 4:3
    dynamic_size: bool = False
    seed: int = 0  # random init when there is no checkpoint
    validate: bool = True
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    restructure: bool = True  # export the faster twins of acar_deploy.export.restructure (same outputs)

    def checked(self) -> ExportSettings:
        if self.opset < MIN_OPSET:
            raise InputError(f"--opset {self.opset}: the export needs opset >= {MIN_OPSET} (RoiAlign-16, ...)")
        if self.input_size is not None and (len(self.input_size) != 2 or min(self.input_size) < 32):
            raise InputError(f"--size {self.input_size}: frames must be at least 32x32 (HxW)")
        return self


class ExportError(GateFailedError):
    """The exported graph breaks a contract (e.g. a dynamic axis was baked in as a constant)."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    manifest: dict[str, Any]
    report: ValidationReport | None
    warnings: tuple[str, ...] = ()

    @property
    def files(self) -> dict[str, Path]:
        return {part: self.path / entry["file"] for part, entry in self.manifest["parts"].items()}


def default_input_size(config) -> tuple[int, int]:
    short = int(config.input.short_side)
    return short, int(short * 4 / 3)


def load_eager_model(checkpoint: str | os.PathLike | None, config, seed: int = 0):
    """(model in eval mode, warnings): the checkpoint's weights, or a seeded random init with a warning."""
    from acar_deploy.model import load_model

    model = load_model(checkpoint, config, seed=seed)
    notes = ()
    if checkpoint is None:
        notes = (f"no --checkpoint: exporting a random init (seed {seed}); outputs are meaningless",)
    return model.eval(), notes


def read_classes() -> list[dict[str, Any]]:
    """AVA classes (id, name) in logit order, from the packaged label map."""
    from acar_deploy.data.labelmap import read_labelmap

    labelmap = read_labelmap()
    return [{"id": int(i), "name": str(n)} for i, n in zip(labelmap.ids, labelmap.names, strict=True)]


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The dynamo exporter prints progress lines and logs warnings; keep the CLI output clean."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _set_dims(value_info, dims) -> None:
    shape = value_info.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        entry = shape.dim.add()
        if isinstance(d, str):
            entry.dim_param = d
        else:
            entry.dim_value = int(d)


def _check_dynamic_inputs(model, spec: PartSpec) -> None:
    for graph_input, want in zip(model.graph.input, spec.inputs, strict=True):
        dims = graph_input.type.tensor_type.shape.dim
        for axis, name in want.dynamic_axes.items():
            if not dims[axis].dim_param:
                raise ExportError(
                    f"{spec.part}: input {want.name} axis {axis} ({name}) was baked in as {dims[axis].dim_value}: "
                    "the model turns that size into a constant (e.g. tensor.new_tensor(shape)); fix the model"
                )


def export_frame_size(geometry: ExportGeometry) -> tuple[int, int]:
    """Frame size of the example the exporter traces.

    With dynamic sizes, small frames would make the head's maps 1x1 after conv2 + pooling, and
    torch.export then specialises h and w; trace at >= 160x176 (10x11 context cells) instead.
    """
    if not geometry.dynamic_size:
        return geometry.input_size
    height, width = geometry.input_size
    return max(height, 160), max(width, 176)


def export_part(model, spec: PartSpec, opset: int, out_file: Path):
    """Export one part to `out_file` (single file) and return the ModelProto as written."""
    import onnx
    import torch

    from acar_deploy.model.roi_align import ONNX_TRANSLATION_TABLE

    module = spec.module(model).eval()
    rng = np.random.default_rng(1234)
    feeds = spec.example_inputs(rng, EXAMPLE_BATCH, EXAMPLE_ROIS, export_frame_size(spec.geometry))
    args = tuple(torch.from_numpy(feeds[s.name]) for s in spec.inputs)
    try:
        with _quiet_exporter(), torch.inference_mode(False), torch.no_grad():
            program = torch.onnx.export(
                module,
                args,
                dynamo=True,
                opset_version=opset,
                input_names=[s.name for s in spec.inputs],
                output_names=[s.name for s in spec.outputs],
                dynamic_shapes=spec.dynamic_shapes(),
                custom_translation_table=ONNX_TRANSLATION_TABLE,
                external_data=False,
                optimize=True,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many types; report one line naming the part
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{spec.part}: torch.onnx.export failed: {first}") from exc
    proto = program.model_proto
    written_opset = main_opset(proto)
    if written_opset != opset:
        raise InputError(
            f"--opset {opset}: torch's exporter could not convert the {spec.part} graph to opset {opset} "
            f"(it stays at {written_opset}); use --opset {written_opset}"
        )
    attach_local_functions(proto)
    _check_dynamic_inputs(proto, spec)
    for value_info, want in zip(proto.graph.input, spec.inputs, strict=True):
        _set_dims(value_info, want.shape)
    for value_info, want in zip(proto.graph.output, spec.outputs, strict=True):
        _set_dims(value_info, want.shape)
    proto.producer_name = "acar-deploy"
    from acar_deploy import __version__

    proto.producer_version = __version__
    proto.doc_string = f"ACAR-Net {spec.part} part exported by acar-deploy"
    onnx.save_model(proto, str(out_file), save_as_external_data=False)
    return proto


def _measure_geometry(model, config, input_size: tuple[int, int], dynamic_size: bool) -> ExportGeometry:
    """Run the backbone once at the export size to learn the context map's size and width."""
    import torch

    norm = Normalization(float(config.input.norm_value), tuple(config.input.mean), tuple(config.input.std))
    num_frames = int(config.input.num_frames)
    clips = torch.from_numpy(random_clips(np.random.default_rng(0), 1, input_size, norm, num_frames))
    with torch.inference_mode():
        context = model.context(clips)
    context_size = (int(context.shape[-2]), int(context.shape[-1]))
    head = asdict(config.head)
    return ExportGeometry(
        input_size=tuple(input_size),
        context_size=context_size,
        context_channels=int(context.shape[1]),
        num_classes=int(config.head.num_classes),
        normalization=norm,
        dynamic_size=dynamic_size,
        num_frames=num_frames,
        bank=BankGeometry.for_head(head, context_size) if config.head.type == "acfb" else None,
    )


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import onnxscript
    import torch

    from acar_deploy import __version__

    return {
        "torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
        "onnxscript": onnxscript.__version__, "acar_deploy": __version__,
    }


def export_model(
    out: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    config: Any = None,
    settings: ExportSettings = ExportSettings(),
    *,
    force: bool = False,
    progress: bool = False,
) -> ExportResult:
    """Export, check and validate ACAR-Net into the folder `out` (written atomically).

    `config` is a built-in name, a YAML path or a ModelConfig (None: the checkpoint's own config).
    Nothing is written when validation fails (ValidationError, with the whole table in `.report`).
    """
    from acar_deploy.export.part_modules import with_plugin_nodes
    from acar_deploy.export.restructure import restructured
    from acar_deploy.model.config import get_config

    settings = settings.checked()
    out = Path(out)
    check_can_write(out, force)
    if checkpoint is None and config is None:
        raise InputError("export without --checkpoint needs --config (a built-in name or a YAML file)")
    model, notes = load_eager_model(checkpoint, get_config(config) if config is not None else None, settings.seed)
    cfg = model.config
    input_size = tuple(settings.input_size or default_input_size(cfg))
    part_names = Parts(settings.parts).names_for(cfg.head.type)
    if cfg.head.type == "acfb" and settings.dynamic_size:
        raise InputError("--dynamic-size: an acfb head's bank entries have the extracting model's map size; "
                         "export it at a fixed --size")
    roi_plugin = NodeChoice(settings.roi_align) == NodeChoice.plugin
    hr2o_plugin = NodeChoice(settings.hr2o) == NodeChoice.plugin
    notes = list(notes)
    if cfg.head.type == "acfb" and Parts(settings.parts) == Parts.all:
        notes.append("--parts all: an acfb head has no fused graph; exported backbone, bank_kv, bank_head")
    if hr2o_plugin and cfg.head.type != "acar":
        notes.append(f"--hr2o plugin: the {cfg.head.type} head has no HR2O layer; nothing to replace")

    geometry = _measure_geometry(model, cfg, input_size, settings.dynamic_size)
    specs = [make_spec(p, geometry) for p in part_names]
    export_source = restructured(model) if settings.restructure else model
    export_net, swapped = with_plugin_nodes(export_source, roi_plugin, hr2o_plugin)
    n_cases = sum(len(validation_cases(s, settings.validation)) for s in specs) if settings.validate else 0

    with atomic_dir(out, force=force) as tmp, progress_bar(progress) as bar:
        task = bar.add_task("export", total=len(specs) + n_cases)
        parts: dict[str, Any] = {}
        rows = []
        checks: list[str] = []
        for spec in specs:
            bar.update(task, description=f"exporting {spec.part}")
            graph_path = tmp / spec.file
            export_part(export_net, spec, settings.opset, graph_path)
            bar.advance(task)
            written = load_graph(graph_path)
            checks += check_graph(written, out / spec.file, spec)
            parts[spec.part] = {
                "file": spec.file,
                "sha256": sha256_file(graph_path),
                **{k: v for k, v in spec.to_manifest().items() if k != "file"},
                "custom_nodes": node_summary(written),
            }
        if settings.validate:
            for spec in specs:
                bar.update(task, description=f"validating {spec.part}")
                rows += compare_part(tmp / spec.file, spec, spec.module(model).eval(), settings.validation,
                                     on_case=lambda: bar.advance(task))
        report = ValidationReport(str(out), tuple(rows), tuple(checks)) if settings.validate else None
        if report is not None and not report.ok:
            raise ValidationError(report)
        manifest = {
            "format": EXPORT_FORMAT,
            "format_version": EXPORT_FORMAT_VERSION,
            "model_name": cfg.name,
            "config": cfg.to_dict(),
            "opset": settings.opset,
            "roi_align": NodeChoice(settings.roi_align).value,
            "hr2o": NodeChoice(settings.hr2o).value,
            "dynamic_size": settings.dynamic_size,
            "restructure": settings.restructure,
            "input_size": list(input_size),
            "context": {"channels": geometry.context_channels, "size": list(geometry.context_size),
                        "stride": geometry.context_stride},
            "normalization": geometry.normalization.to_dict(),
            "classes": read_classes(),
            "checkpoint_sha256": sha256_file(checkpoint) if checkpoint is not None else None,
            "source": {
                "checkpoint": str(Path(checkpoint).resolve()) if checkpoint is not None else None,
                "seed": settings.seed,
                "plugin_modules_swapped": swapped,
            },
            "parts": parts,
            "versions": _versions(),
            "validation": [r.to_dict() for r in rows],
        }
        ExportManifest.from_dict(manifest, tmp / MANIFEST_FILE).write()
    return ExportResult(out, manifest, report, tuple(notes))
