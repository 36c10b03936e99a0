"""The one JSON serializer of the package: what `--format json` prints and what result files hold.

`to_jsonable` turns results into plain JSON values by one set of rules (enums as their value, paths
and unknown objects as strings, numpy scalars/arrays as numbers/lists, dataclasses and objects with
`to_dict()` as dicts), so every command prints the same types the same way.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import date, datetime
from enum import Enum
from pathlib import PurePath
from typing import Any


def to_jsonable(value: Any) -> Any:
    """A plain JSON value (dict / list / str / number / bool / None) for `value`."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, Enum):
        return to_jsonable(value.value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(to_jsonable(k)): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    if callable(getattr(value, "to_dict", None)):
        return to_jsonable(value.to_dict())
    if callable(getattr(value, "tolist", None)):  # numpy arrays and scalars, without importing numpy
        return to_jsonable(value.tolist())
    return str(value)


def dumps(value: Any) -> str:
    """`value` as indented JSON text (what the CLI prints with --format json)."""
    return json.dumps(to_jsonable(value), indent=2)
