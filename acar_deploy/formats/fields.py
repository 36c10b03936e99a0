"""Typed reads of one JSON object: a missing or wrong-typed field fails with one line naming file and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from acar_deploy.errors import InputError

_MISSING = object()


def read_json_object(path: Path, what: str, fix: str) -> dict[str, Any]:
    """The JSON object in `path`; InputError (file, line) when it is absent, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no {what} here; {fix}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); {fix}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text; {fix}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object; {fix}")
    return data


def write_json_object(data: dict[str, Any], path: str | Path | None, loaded_from: Path, file_name: str) -> Path:
    """Atomic write of a record to `path` (a file, or a folder that gets `file_name`); default: where it was loaded from."""
    from acar_deploy.artifacts import write_json

    target = Path(path) if path is not None else loaded_from
    if target.is_dir():
        target = target / file_name
    write_json(target, data)
    return target


_TYPE_NAMES = {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list",
               dict: "an object"}


def _type_ok(value: Any, kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        return False  # JSON true is not an integer here
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return True
    return isinstance(value, kinds)


class FieldReader:
    """Reads fields of one object of one file; errors say `FILE: field 'a.b' ...; FIX`."""

    def __init__(self, path: Path, data: dict[str, Any], fix: str, prefix: str = ""):
        self.path = path
        self.data = data
        self.fix = fix
        self.prefix = prefix

    def _name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def fail(self, key: str, problem: str) -> InputError:
        return InputError(f"{self.path}: field '{self._name(key)}' {problem}; {self.fix}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = _MISSING, *, nullable: bool = False) -> Any:
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise self.fail(key, "is missing")
            return default
        if value is None and nullable:
            return None
        if not _type_ok(value, kind):
            kinds = kind if isinstance(kind, tuple) else (kind,)
            want = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            raise self.fail(key, f"should be {want}, not {json.dumps(value)[:40]}")
        return value

    def child(self, key: str, default: Any = _MISSING) -> FieldReader:
        value = self.get(key, dict, default)
        return FieldReader(self.path, value if value is not None else {}, self.fix, f"{self._name(key)}.")

    def ints(self, key: str, length: int | None = None) -> tuple[int, ...]:
        values = self.get(key, list)
        if any(not _type_ok(v, int) for v in values) or (length is not None and len(values) != length):
            size = f"{length} " if length is not None else ""
            raise self.fail(key, f"should be a list of {size}integers, not {json.dumps(values)[:40]}")
        return tuple(int(v) for v in values)

    def floats(self, key: str, length: int) -> tuple[float, ...]:
        values = self.get(key, list)
        if len(values) != length or any(not _type_ok(v, float) for v in values):
            raise self.fail(key, f"should be a list of {length} numbers, not {json.dumps(values)[:40]}")
        return tuple(float(v) for v in values)
