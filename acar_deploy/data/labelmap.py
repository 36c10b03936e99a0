"""AVA label maps (`item { name: "..." id: N }` pbtxt), read without protocol buffers.

The official evaluator reads only `name:` and `id:`/`label_id:` lines; this reader accepts the same
files but checks their structure, so a typo fails with the line number instead of silently
dropping a class from the mAP.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from acar_deploy.artifacts import atomic_file
from acar_deploy.errors import InputError

PACKAGED_LABELMAP = "ava_action_list_v2.1.pbtxt"

_TOKEN = re.compile(
    r'\s*(?:(#[^\n]*)|(\{)|(\})|([A-Za-z_][A-Za-z0-9_]*)\s*:|("(?:[^"\\]|\\.)*")|([^\s{}"#:]+))'
)


@dataclass(frozen=True)
class LabelMap:
    """Class ids in file order and their names (`ids[i]` is named `names[i]`)."""

    ids: tuple[int, ...]
    names: tuple[str, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.names):
            raise ValueError("ids and names must have the same length")

    def name_of(self, class_id: int) -> str:
        return dict(zip(self.ids, self.names, strict=True))[class_id]

    def as_dict(self) -> dict[int, str]:
        return dict(zip(self.ids, self.names, strict=True))


def _parse_pbtxt(text: str, source: str) -> LabelMap:
    ids: list[int] = []
    names: list[str] = []
    item: dict[str, str] | None = None  # fields of the open item block
    item_line = 0
    expect_open = False
    pending_field: str | None = None
    pending_line = 0

    def fail(line: int, what: str) -> InputError:
        return InputError(f"{source}:{line}: {what}; expected blocks like 'item {{ name: \"dance\" id: 4 }}'")

    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            if text[pos:].strip() == "":
                break
            raise fail(text.count("\n", 0, pos) + 1, f"cannot parse {text[pos:].strip()[:20]!r}")
        pos = match.end()
        comment, open_brace, close_brace, field, string, bare = match.groups()
        line = text.count("\n", 0, match.start(match.lastindex or 0)) + 1
        if comment is not None:
            continue
        if pending_field is not None:
            if string is None and bare is None:
                raise fail(pending_line, f"field '{pending_field}' has no value")
            assert item is not None
            item[pending_field] = string[1:-1].replace('\\"', '"').replace("\\\\", "\\") if string else bare
            pending_field = None
        elif expect_open:
            if open_brace is None:
                raise fail(line, "'item' must be followed by '{'")
            expect_open, item = False, {}
        elif item is None:
            if bare != "item" and field != "item":
                raise fail(
                    line,
                    f"unexpected {(field or bare or string or open_brace or close_brace)!r} outside an item block",
                )
            expect_open, item_line = True, line
        elif close_brace is not None:
            ids.append(_item_id(item, ids, item_line, fail))
            if "name" not in item:
                raise fail(item_line, "item has no 'name'")
            names.append(item["name"])
            item = None
        elif field is not None:
            pending_field, pending_line = field, line
        else:
            raise fail(line, f"unexpected {(bare or string or open_brace)!r} inside an item block")
    if expect_open or item is not None:
        raise fail(item_line, "item block is not closed with '}'")
    if not ids:
        raise InputError(
            f"{source}: no 'item {{ name: ... id: ... }}' blocks found; is this an AVA label map?"
        )
    return LabelMap(ids=tuple(ids), names=tuple(names), source=source)


def _item_id(item: dict[str, str], seen: list[int], line: int, fail: Callable[[int, str], InputError]) -> int:
    raw_id = item.get("id", item.get("label_id"))
    if raw_id is None:
        raise fail(line, "item has no 'id'")
    try:
        class_id = int(raw_id)
    except ValueError:
        raise fail(line, f"id {raw_id!r} is not an integer") from None
    if class_id < 1:
        raise fail(line, f"id {class_id} must be >= 1 (AVA class ids are 1-indexed)")
    if class_id in seen:
        raise fail(line, f"id {class_id} appears twice")
    return class_id


def read_labelmap(path: str | os.PathLike | None = None) -> LabelMap:
    """Read a label map; None reads the packaged AVA v2.1 list of 60 evaluated classes."""
    if path is None:
        text = resources.files("acar_deploy.data").joinpath(PACKAGED_LABELMAP).read_text(encoding="utf-8")
        return _parse_pbtxt(text, f"<packaged {PACKAGED_LABELMAP}>")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM from Windows editors is not a token
    except FileNotFoundError:
        raise InputError(f"{path}: label map not found; pass an AVA .pbtxt file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read label map ({exc})") from None
    return _parse_pbtxt(text, str(path))


def write_labelmap(labelmap: LabelMap, path: str | os.PathLike, force: bool = True) -> None:
    """Write the official layout (`item {`, two-space `name:` and `id:` lines), atomically."""
    with atomic_file(path, force=force, mode="w") as fh:
        for class_id, name in zip(labelmap.ids, labelmap.names, strict=True):
            escaped = name.replace("\\", "\\\\").replace('"', '\\"')
            fh.write(f'item {{\n  name: "{escaped}"\n  id: {class_id}\n}}\n')
