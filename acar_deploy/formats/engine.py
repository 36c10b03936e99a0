"""engine.json of an engine folder: runtime, precision, the built graphs/plans and how they were built.

An engine folder also holds a copy of its export's manifest.json (`EngineRecord.manifest`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acar_deploy.errors import InputError
from acar_deploy.formats.enums import Precision, Runtime
from acar_deploy.formats.fields import FieldReader, read_json_object, write_json_object
from acar_deploy.formats.manifest import (
    MANIFEST_FILE,
    ExportManifest,
    GraphPartRecord,
    check_part_files,
    read_parts,
    verify_part_files,
)

ENGINE_FILE = "engine.json"
ENGINE_FORMAT = "acar-deploy-engine"
ENGINE_FORMAT_VERSION = 1
_FIX = "rebuild with `acar-deploy build --force`"


@dataclass(frozen=True)
class EngineRecord:
    """A validated engine.json; `data` is the whole object as written."""

    path: Path  # the engine.json file
    data: dict[str, Any]
    runtime: Runtime
    precision: Precision
    parts: dict[str, GraphPartRecord]
    manifest: ExportManifest | None = field(default=None, compare=False)

    @classmethod
    def load(cls, path: str | Path) -> EngineRecord:
        """`path`: an engine folder or its engine.json; the folder's manifest.json copy is loaded too."""
        path = Path(path)
        if path.is_dir() or not path.name.endswith(".json"):
            path = path / ENGINE_FILE
        data = read_json_object(path, ENGINE_FILE, "pass an engine folder (engines/NAME-RUNTIME-PRECISION)")
        record = cls.from_dict(data, path)
        check_part_files(path.parent, record.parts, ENGINE_FILE, _FIX)
        manifest = ExportManifest.load(path.parent / MANIFEST_FILE, check_files=False)
        object.__setattr__(record, "manifest", manifest)
        return record

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: str | Path = ENGINE_FILE) -> EngineRecord:
        path = Path(path)
        fields = FieldReader(path, data, _FIX)
        if fields.get("format", str) != ENGINE_FORMAT:
            raise fields.fail("format", f"is not {ENGINE_FORMAT!r}: this is not an engine folder")
        fields.get("format_version", int)
        runtime = fields.get("runtime", str)
        precision = fields.get("precision", str)
        if runtime not in {r.value for r in Runtime}:
            raise fields.fail("runtime", f"is {runtime!r}, not one of {[r.value for r in Runtime]}")
        if precision not in {p.value for p in Precision}:
            raise fields.fail("precision", f"is {precision!r}, not one of {[p.value for p in Precision]}")
        settings = fields.child("settings", {})
        settings.child("trt", {})
        return cls(path=path, data=data, runtime=Runtime(runtime), precision=Precision(precision),
                   parts=read_parts(fields))

    def write(self, path: str | Path | None = None) -> Path:
        """Write atomically to `path` (default: where it was loaded from)."""
        return write_json_object(self.data, path, self.path, ENGINE_FILE)

    # ---- derived facts -------------------------------------------------------------------------
    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def export_manifest(self) -> ExportManifest:
        if self.manifest is None:
            raise InputError(f"{self.folder / MANIFEST_FILE}: not loaded; open the folder with EngineRecord.load")
        return self.manifest

    @property
    def num_classes(self) -> int:
        return self.export_manifest.num_classes

    @property
    def label(self) -> str:
        """`<runtime>-<precision>`, e.g. `trt-fp16`."""
        return f"{self.runtime.value}-{self.precision.value}"

    @property
    def gpu(self) -> dict[str, Any]:
        """The GPU a TensorRT engine was built on ({} for other runtimes)."""
        gpu = self.data.get("gpu")
        return gpu if isinstance(gpu, dict) else {}

    @property
    def openvino(self) -> dict[str, Any]:
        """The `openvino` section of an OpenVINO engine (compile options, cache dir, build CPU)."""
        section = self.data.get("openvino")
        if not isinstance(section, dict) or not isinstance(section.get("compile_options"), dict):
            raise InputError(f"{self.path}: field 'openvino.compile_options' is missing or not an object; {_FIX}")
        return section

    def profile_max(self, dim: str) -> int:
        """settings.trt.<dim>.max (`clips` or `rois`) of a TensorRT build; 0 when not recorded."""
        trt = (self.data.get("settings") or {}).get("trt") or {}
        value = (trt.get(dim) or {}).get("max") if isinstance(trt.get(dim), dict) else None
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{self.path}: field 'settings.trt.{dim}.max' should be an integer; {_FIX}")
        return value

    def graph_path(self, part: str) -> Path:
        return self.folder / self.parts[part].file

    def verify_graphs(self, folder: str | Path | None = None) -> None:
        """Each built graph/plan exists and matches its recorded sha256."""
        verify_part_files(Path(folder) if folder is not None else self.folder, self.parts, ENGINE_FILE, _FIX)


def folder_kind(path: str | Path) -> str | None:
    """'engine', 'export' or None, from the record file inside."""
    path = Path(path)
    if (path / ENGINE_FILE).is_file():
        return "engine"
    if (path / MANIFEST_FILE).is_file():
        return "export"
    return None


def verify_folder(path: str | Path) -> ExportManifest | EngineRecord | None:
    """Load an export or engine folder's record and check every graph's sha256; None for other paths."""
    kind = folder_kind(path)
    if kind is None:
        return None
    record: ExportManifest | EngineRecord = EngineRecord.load(path) if kind == "engine" else ExportManifest.load(path)
    record.verify_graphs()
    return record
