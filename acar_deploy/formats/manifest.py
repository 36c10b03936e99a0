"""manifest.json of an export folder: the graphs (with tensor specs and sha256), geometry and classes.

`ExportManifest.load(folder)` is the only reader of manifest.json; the exporter writes it through
`ExportManifest.write`. Everything other layers derive from it (number of classes, geometry, context
size) is computed here once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acar_deploy.errors import InputError
from acar_deploy.formats.fields import FieldReader, read_json_object, write_json_object

MANIFEST_FILE = "manifest.json"
EXPORT_FORMAT = "acar-deploy-export"
EXPORT_FORMAT_VERSION = 1
PART_NAMES = ("backbone", "head", "fused", "bank_kv", "bank_head")
BANK_PARTS = ("bank_kv", "bank_head")  # an acfb model's head: bank K/V projection + head on projected K/V
NUM_FRAMES = 32
_FIX = "re-run `acar-deploy export --force`"


@dataclass(frozen=True)
class Normalization:
    """Clip pixels become `(pixels / norm_value - mean) / std` per RGB channel."""

    norm_value: float = 255.0
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)

    def to_dict(self) -> dict[str, Any]:
        return {"norm_value": self.norm_value, "mean": list(self.mean), "std": list(self.std)}


@dataclass(frozen=True)
class BankGeometry:
    """An acfb head's bank: entries `[channels, *size]` (first-order map size), K/V per HR2O layer (`depth`)."""

    channels: int
    size: tuple[int, int]
    depth: int

    @classmethod
    def for_head(cls, head: dict[str, Any], context_size: tuple[int, int]) -> BankGeometry:
        """From the config's head: conv2 (3x3, no padding) then, for max2x2, a 3x3/2 max pool with padding 1."""
        height, width = context_size[0] - 2, context_size[1] - 2
        if head.get("downsample", "max2x2") == "max2x2":
            height, width = (height + 1) // 2, (width + 1) // 2
        return cls(int(head.get("hidden_dim", 512)), (height, width), int(head.get("depth", 2)))


@dataclass(frozen=True)
class ExportGeometry:
    """Facts every part spec needs: frame size, context map size and width, classes, normalisation."""

    input_size: tuple[int, int]
    context_size: tuple[int, int]
    context_channels: int
    num_classes: int
    normalization: Normalization = field(default_factory=Normalization)
    dynamic_size: bool = False
    num_frames: int = NUM_FRAMES  # config input.num_frames (32 for the official configs)
    bank: BankGeometry | None = None  # acfb heads only

    @property
    def context_stride(self) -> int:
        """Frame pixels per context cell (16 for SlowFast with the dilated res5)."""
        return 2 ** round(math.log2(self.input_size[0] / self.context_size[0]))

    def context_size_for(self, frame_size: tuple[int, int]) -> tuple[int, int]:
        s = self.context_stride
        return (math.ceil(frame_size[0] / s), math.ceil(frame_size[1] / s))

    def second_input_size(self) -> tuple[int, int]:
        """Another frame size (smaller H, wider W) to prove a dynamic-size graph bakes neither.

        Never below 5 context cells: the head's 3x3 conv and pooling need that many.
        """
        height, width = self.input_size
        low = 5 * self.context_stride
        return (max(low, (height * 3 // 4) // 16 * 16), max(low, width * 5 // 4))


@dataclass(frozen=True)
class TensorRecord:
    """One graph input or output as a record lists it: name, dtype, dims (int or symbolic name)."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    @classmethod
    def read(cls, fields: FieldReader) -> TensorRecord:
        shape = fields.get("shape", list)
        if any(isinstance(d, bool) or not isinstance(d, (int, str)) for d in shape):
            raise fields.fail("shape", "should list integers or dimension names")
        return cls(fields.get("name", str), tuple(shape), fields.get("dtype", str, "float32"))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class GraphPartRecord:
    """One graph of a folder (backbone, head or fused): file, sha256, tensors; `extra` keeps the rest."""

    name: str
    file: str
    sha256: str | None
    inputs: tuple[TensorRecord, ...]
    outputs: tuple[TensorRecord, ...]
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def read(cls, name: str, fields: FieldReader) -> GraphPartRecord:
        def tensors(key: str) -> tuple[TensorRecord, ...]:
            items = fields.get(key, list, [])
            out = []
            for i, item in enumerate(items):
                if not isinstance(item, dict):
                    raise fields.fail(f"{key}[{i}]", "should be an object")
                out.append(TensorRecord.read(FieldReader(fields.path, item, fields.fix, f"{fields.prefix}{key}[{i}].")))
            return tuple(out)

        known = {"file", "sha256", "inputs", "outputs"}
        return cls(
            name=name,
            file=fields.get("file", str),
            sha256=fields.get("sha256", str, None, nullable=True),
            inputs=tensors("inputs"),
            outputs=tensors("outputs"),
            extra={k: v for k, v in fields.data.items() if k not in known},
        )

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def tensor(self, name: str) -> TensorRecord:
        for t in (*self.inputs, *self.outputs):
            if t.name == name:
                return t
        raise KeyError(name)

    def shape_of(self, name: str) -> list[int | str]:
        return list(self.tensor(name).shape)


def read_parts(fields: FieldReader) -> dict[str, GraphPartRecord]:
    """The `parts` object: backbone+head and/or fused, each with at least a file."""
    raw = fields.get("parts", dict)
    parts = {}
    for name in raw:
        if name in PART_NAMES:
            parts[name] = GraphPartRecord.read(name, fields.child("parts").child(name))
    if not ({"backbone", "head"} <= parts.keys() or "fused" in parts or {"backbone", *BANK_PARTS} <= parts.keys()):
        raise fields.fail("parts", f"needs backbone+head, fused or backbone+bank_kv+bank_head, found {sorted(raw)}")
    return parts


def check_part_files(folder: Path, parts: dict[str, GraphPartRecord], record: str, fix: str) -> None:
    """Every listed graph exists."""
    for part in parts.values():
        if not (folder / part.file).is_file():
            raise InputError(f"{folder / part.file}: listed in {record} but missing; {fix}")


def verify_part_files(folder: Path, parts: dict[str, GraphPartRecord], record: str, fix: str) -> None:
    """Every listed graph exists and (where recorded) has the recorded sha256."""
    from acar_deploy.artifacts import sha256_file

    check_part_files(folder, parts, record, fix)
    for part in parts.values():
        path = folder / part.file
        if part.sha256 and sha256_file(path) != part.sha256:
            raise InputError(f"{path}: sha256 differs from {record} (modified or truncated); {fix}")


@dataclass(frozen=True)
class ExportManifest:
    """A validated manifest.json; `data` is the whole object as written (round-trips through `write`)."""

    path: Path  # the manifest.json file
    data: dict[str, Any]
    model_name: str
    config: dict[str, Any]
    input_size: tuple[int, int]
    dynamic_size: bool
    normalization: Normalization
    classes: tuple[dict[str, Any], ...]
    parts: dict[str, GraphPartRecord]
    checkpoint_sha256: str | None = None
    source: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path, check_files: bool = True) -> ExportManifest:
        """`path`: an export folder or its manifest.json; `check_files=False` for the copy in an engine
        folder, which lists the export's graphs, not the engine's."""
        path = Path(path)
        if path.is_dir() or not path.name.endswith(".json"):
            if not path.exists():
                raise InputError(f"{path}: export folder not found; create it with `acar-deploy export --out {path}`")
            path = path / MANIFEST_FILE
        manifest = cls.from_dict(read_json_object(path, MANIFEST_FILE, "pass an export folder (export/NAME)"), path)
        if check_files:
            check_part_files(path.parent, manifest.parts, MANIFEST_FILE, _FIX)
        return manifest

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: str | Path = MANIFEST_FILE) -> ExportManifest:
        path = Path(path)
        fields = FieldReader(path, data, _FIX)
        if fields.get("format", str) != EXPORT_FORMAT:
            raise fields.fail("format", f"is not {EXPORT_FORMAT!r}: this is not an export folder")
        fields.get("format_version", int)
        norm = fields.child("normalization")
        classes = fields.get("classes", list)
        for i, c in enumerate(classes):
            if not isinstance(c, dict):
                raise fields.fail(f"classes[{i}]", "should be an object with id and name")
            item = FieldReader(path, c, _FIX, f"classes[{i}].")
            item.get("id", int)
            item.get("name", str)
        manifest = cls(
            path=path,
            data=data,
            model_name=fields.get("model_name", str),
            config=fields.get("config", dict),
            input_size=fields.ints("input_size", 2),  # type: ignore[arg-type]
            dynamic_size=fields.get("dynamic_size", bool),
            normalization=Normalization(
                float(norm.get("norm_value", float)), norm.floats("mean", 3), norm.floats("std", 3)  # type: ignore[arg-type]
            ),
            classes=tuple(classes),
            parts=read_parts(fields),
            checkpoint_sha256=fields.get("checkpoint_sha256", str, None, nullable=True),
            source=fields.get("source", dict, {}),
        )
        manifest._check_classes(fields)
        return manifest

    def _check_classes(self, fields: FieldReader) -> None:
        head = self.config.get("head") if isinstance(self.config.get("head"), dict) else {}
        declared = head.get("num_classes")
        if declared is not None and (isinstance(declared, bool) or not isinstance(declared, int)):
            raise fields.fail("config.head.num_classes", "should be an integer")
        if declared is None and not self.classes:
            raise fields.fail("config.head.num_classes", "is missing and 'classes' is empty")

    def write(self, path: str | Path | None = None) -> Path:
        """Write atomically to `path` (default: where it was loaded from)."""
        return write_json_object(self.data, path, self.path, MANIFEST_FILE)

    # ---- derived facts -------------------------------------------------------------------------
    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def name(self) -> str:
        return self.folder.resolve().name

    @property
    def num_classes(self) -> int:
        """config.head.num_classes; the class list's length when the config does not say."""
        head = self.config.get("head") or {}
        if isinstance(head.get("num_classes"), int):
            return int(head["num_classes"])
        return len(self.classes)

    @property
    def num_frames(self) -> int:
        return int(((self.config.get("input") or {}).get("num_frames")) or NUM_FRAMES)

    @property
    def context_channels(self) -> int:
        shape = self._context_shape()
        if shape is not None and isinstance(shape[1], int):
            return shape[1]
        return int(self._context_field("channels"))

    @property
    def context_size(self) -> tuple[int, int]:
        context = self.data.get("context")
        if isinstance(context, dict) and "size" in context:
            return FieldReader(self.path, context, _FIX, "context.").ints("size", 2)  # type: ignore[return-value]
        shape = self._context_shape()
        if shape is not None and all(isinstance(d, int) for d in shape[2:]):
            return (int(shape[2]), int(shape[3]))
        raise InputError(f"{self.path}: field 'context.size' is missing; {_FIX}")

    def _context_field(self, key: str) -> Any:
        return FieldReader(self.path, self.data, _FIX).child("context").get(key, int)

    def _context_shape(self) -> tuple[int | str, ...] | None:
        for part in self.parts.values():
            for tensor in (*part.inputs, *part.outputs):
                if tensor.name == "context" and len(tensor.shape) == 4:
                    return tensor.shape
        return None

    def geometry(self) -> ExportGeometry:
        return ExportGeometry(
            input_size=self.input_size,
            context_size=self.context_size,
            context_channels=self.context_channels,
            num_classes=self.num_classes,
            normalization=self.normalization,
            dynamic_size=self.dynamic_size,
            num_frames=self.num_frames,
            bank=self.bank_geometry(),
        )

    def bank_geometry(self) -> BankGeometry | None:
        head = self.config.get("head") if isinstance(self.config.get("head"), dict) else {}
        return BankGeometry.for_head(head, self.context_size) if head.get("type") == "acfb" else None

    def graph_path(self, part: str) -> Path:
        return self.folder / self.parts[part].file

    def verify_graphs(self, folder: str | Path | None = None) -> None:
        """Each graph exists and matches its recorded sha256 (a modified or truncated file fails)."""
        verify_part_files(Path(folder) if folder is not None else self.folder, self.parts, MANIFEST_FILE, _FIX)

