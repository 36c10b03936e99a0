"""Read export folders (manifest.json) and engine folders (engine.json) as this layer needs them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acar_deploy.errors import InputError

EXPORT_FORMAT = "acar-deploy-export"
ENGINE_FORMAT = "acar-deploy-engine"
ENGINE_FORMAT_VERSION = 1
PART_NAMES = ("backbone", "head", "fused")


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise InputError(f"{path}: no {what} here; pass an export folder (export/NAME) or an engine folder") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); re-create the folder") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object; re-create the folder")
    return data


@dataclass(frozen=True)
class PartSpec:
    """One graph of an export (backbone, head or fused) as manifest.json describes it."""

    name: str
    file: str
    sha256: str | None
    inputs: tuple[dict[str, Any], ...]
    outputs: tuple[dict[str, Any], ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t["name"] for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t["name"] for t in self.outputs)

    def shape_of(self, tensor: str) -> list[Any]:
        for t in (*self.inputs, *self.outputs):
            if t["name"] == tensor:
                return list(t.get("shape", []))
        raise KeyError(tensor)


def _parse_parts(manifest: dict[str, Any], path: Path) -> dict[str, PartSpec]:
    parts_raw = manifest.get("parts")
    if not isinstance(parts_raw, dict) or not parts_raw:
        raise InputError(f"{path}: 'parts' is missing or empty; re-export the model")
    parts: dict[str, PartSpec] = {}
    for name, raw in parts_raw.items():
        if name not in PART_NAMES:
            continue
        try:
            parts[name] = PartSpec(
                name=name,
                file=str(raw["file"]),
                sha256=raw.get("sha256"),
                inputs=tuple(raw.get("inputs", ())),
                outputs=tuple(raw.get("outputs", ())),
            )
        except (KeyError, TypeError):
            raise InputError(f"{path}: part '{name}' has no 'file'; re-export the model") from None
    if not ({"backbone", "head"} <= parts.keys() or "fused" in parts):
        raise InputError(f"{path}: needs parts backbone+head or fused, found {sorted(parts)}; re-export the model")
    return parts


@dataclass(frozen=True)
class ExportFolder:
    path: Path
    manifest: dict[str, Any]
    parts: dict[str, PartSpec]

    @classmethod
    def load(cls, path: str | Path) -> ExportFolder:
        path = Path(path)
        manifest_path = path / "manifest.json"
        manifest = _read_json(manifest_path, "manifest.json")
        if manifest.get("format") != EXPORT_FORMAT:
            raise InputError(f"{manifest_path}: 'format' is not {EXPORT_FORMAT!r}; this is not an export folder")
        parts = _parse_parts(manifest, manifest_path)
        for part in parts.values():
            if not (path / part.file).is_file():
                raise InputError(f"{path / part.file}: listed in manifest.json but missing; re-export the model")
        return cls(path=path, manifest=manifest, parts=parts)

    def graph_path(self, part: str) -> Path:
        return self.path / self.parts[part].file

    @property
    def name(self) -> str:
        return self.path.resolve().name


def num_classes_of(manifest: dict[str, Any], parts: dict[str, PartSpec]) -> int:
    """From the config if present, else from the static size of the logits output."""
    head = (manifest.get("config") or {}).get("head") or {}
    if isinstance(head.get("num_classes"), int):
        return int(head["num_classes"])
    for part in parts.values():
        if "logits" in part.output_names:
            dim = part.shape_of("logits")[-1]
            if isinstance(dim, int):
                return dim
    classes = manifest.get("classes")
    if isinstance(classes, list) and classes:
        return len(classes)
    raise InputError("manifest.json: cannot tell the number of classes (no config.head.num_classes); re-export")


@dataclass(frozen=True)
class EngineFolder:
    path: Path
    engine: dict[str, Any]
    manifest: dict[str, Any]
    parts: dict[str, PartSpec]  # file names point at the built graphs / plans

    @classmethod
    def load(cls, path: str | Path) -> EngineFolder:
        path = Path(path)
        engine_path = path / "engine.json"
        engine = _read_json(engine_path, "engine.json")
        if engine.get("format") != ENGINE_FORMAT:
            raise InputError(f"{engine_path}: 'format' is not {ENGINE_FORMAT!r}; rebuild with `acar-deploy build`")
        manifest = _read_json(path / "manifest.json", "manifest.json")
        parts = _parse_parts(engine, engine_path)
        for part in parts.values():
            if not (path / part.file).is_file():
                raise InputError(f"{path / part.file}: listed in engine.json but missing; rebuild the engine")
        return cls(path=path, engine=engine, manifest=manifest, parts=parts)

    def graph_path(self, part: str) -> Path:
        return self.path / self.parts[part].file

    @property
    def runtime(self) -> str:
        return str(self.engine.get("runtime"))

    @property
    def precision(self) -> str:
        return str(self.engine.get("precision"))


def folder_kind(path: str | Path) -> str | None:
    """'engine', 'export' or None, from the marker file inside."""
    path = Path(path)
    if (path / "engine.json").is_file():
        return "engine"
    if (path / "manifest.json").is_file():
        return "export"
    return None
