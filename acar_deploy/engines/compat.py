"""Does an engine (or export) folder fit the model and the input a command is about to feed it?

Checked before any run, so a mismatch is one line naming engine.json (or manifest.json) and the
field, instead of an ONNX Runtime / TensorRT `InvalidArgument` after minutes of work:

- the requested batch and frame size against the static dims recorded for the `clips` input;
- the model's frame count and class count against the recorded `clips` / `logits` shapes;
- the backbone's recorded outputs against the head's recorded inputs (an engine assembled from
  graphs of two exports);
- each ONNX graph's own declared inputs/outputs against what the record says (a graph file copied
  in from another folder).

Symbolic dims (strings such as "B", "R", "H") accept any value. The function reads the folder
through acar_deploy.formats, the one reader of those JSON files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from acar_deploy.errors import InputError
from acar_deploy.formats import (
    ENGINE_FILE,
    MANIFEST_FILE,
    EngineRecord,
    ExportManifest,
    GraphPartRecord,
    folder_kind,
)

CLIPS_AXES = ("batch", "channels", "frames", "height", "width")


def _static(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None


def _load(folder: Path) -> tuple[Path, dict[str, GraphPartRecord]]:
    kind = folder_kind(folder)
    if kind == "engine":
        return folder / ENGINE_FILE, EngineRecord.load(folder).parts
    if kind == "export":
        return folder / MANIFEST_FILE, ExportManifest.load(folder).parts
    raise InputError(f"{folder}: no engine.json or manifest.json inside; pass an engine or export folder")


def check_engine_fits(
    folder: str | Path,
    *,
    batch: int | None = None,
    size: Sequence[int] | None = None,
    num_frames: int | None = None,
    num_classes: int | None = None,
    check_graphs: bool = True,
) -> None:
    """InputError naming the record file and field when `folder` cannot run the requested input.

    `size` is (height, width) of the clip tensor; None for any argument skips that check.
    """
    folder = Path(folder)
    record, parts = _load(folder)
    wanted = {"batch": batch, "frames": num_frames,
              "height": None if size is None else size[0], "width": None if size is None else size[1]}
    option = {"batch": "--batch", "frames": "the model's frame count", "height": "--size (height)",
              "width": "--size (width)"}
    for part in parts.values():
        if "clips" not in part.input_names:
            continue
        shape = part.shape_of("clips")
        for axis, dim in zip(CLIPS_AXES, shape, strict=False):
            fixed, value = _static(dim), wanted.get(axis)
            if fixed is not None and value is not None and fixed != value:
                raise InputError(
                    f"{record}: parts.{part.name}.inputs.clips {axis} is fixed at {fixed} but {option[axis]} "
                    f"asks for {value}; rebuild the engine for this input (or export with --dynamic-size)"
                )
    if num_classes is not None:
        for part in parts.values():
            if "logits" in part.output_names:
                fixed = _static(part.shape_of("logits")[-1])
                if fixed is not None and fixed != num_classes:
                    raise InputError(
                        f"{record}: parts.{part.name}.outputs.logits has {fixed} classes but the model has "
                        f"{num_classes}; use the checkpoint/config this engine was exported from"
                    )
    if "backbone" in parts and "head" in parts:
        _check_interface(record, parts["backbone"], parts["head"])
    if check_graphs:
        for part in parts.values():
            _check_graph_file(folder / part.file, record, part)


def _check_interface(record: Path, backbone: GraphPartRecord, head: GraphPartRecord) -> None:
    """The head's recorded inputs must be what the backbone's recorded outputs produce."""
    for tensor in head.inputs:
        name = tensor.name
        if name not in backbone.output_names:
            continue
        produced = backbone.shape_of(name)
        if not _shapes_agree(produced, list(tensor.shape)):
            raise InputError(
                f"{record}: parts.head.inputs.{name} shape {list(tensor.shape)} does not match "
                f"parts.backbone.outputs.{name} {produced}: the graphs come from two exports; rebuild the folder"
            )


def _shapes_agree(a: Sequence[Any], b: Sequence[Any]) -> bool:
    if len(a) != len(b):
        return False
    return all(_static(x) is None or _static(y) is None or x == y for x, y in zip(a, b, strict=True))


def graph_io_shapes(path: Path) -> dict[str, list[Any]]:
    """Declared input/output shapes of an ONNX file (dim_param names for symbolic dims)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError, RuntimeWarning-ish types
        raise InputError(f"{path}: not a readable ONNX graph ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                         "re-export or rebuild the folder") from None
    shapes: dict[str, list[Any]] = {}
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
    return shapes


def _check_graph_file(path: Path, record: Path, part: GraphPartRecord) -> None:
    if path.suffix != ".onnx":
        return  # TensorRT plans: their bindings are checked when deserialised
    declared = graph_io_shapes(path)
    for tensor in (*part.inputs, *part.outputs):
        name = tensor.name
        if name not in declared:
            raise InputError(f"{path}: has no tensor {name!r} that {record.name} lists for part {part.name}; "
                             "the graph does not belong to this folder, rebuild it")
        if not _shapes_agree(declared[name], list(tensor.shape)):
            raise InputError(
                f"{path}: {name} is declared {declared[name]} but {record.name} records {list(tensor.shape)} "
                f"for part {part.name}; the graph does not belong to this folder, rebuild it"
            )

