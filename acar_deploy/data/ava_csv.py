"""AVA CSV files as column-oriented numpy tables (annotations, predictions, person proposals, exclusions).

Formats (no header, comma separated, boxes normalised to [0, 1] as x1,y1,x2,y2):

- annotations: `video_id,timestamp,x1,y1,x2,y2,action_id[,person_id]`, plus 2-column
  `video_id,timestamp` rows for an annotated keyframe without actions (AVA v2.2 / ActivityNet HEAD);
- predictions: `video_id,timestamp,x1,y1,x2,y2,action_id,score` (a 7-column row means score 1.0,
  as in the official evaluator; 2-column rows are kept as keyframe-only rows);
- person proposals: `video_id,timestamp,x1,y1,x2,y2,score`; the 8-column SlowFast/LFB detector
  layout `video_id,timestamp,x1,y1,x2,y2,,score` (empty or integer action column) is read too;
- exclusions: `video_id,timestamp`.

Timestamps are kept as the strings found in the file (`0902` and `902` are different spellings the
evaluator keys differently per protocol), so writers reproduce the source. Boxes outside [0, 1] are
accepted, as the official evaluator accepts them; an annotation box with x2 < x1 or y2 < y1 is
rejected because the official evaluator crashes on it. Reading splits the text once and converts whole
columns with numpy; a failed conversion is re-checked row by row only to name the line.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from acar_deploy.artifacts import atomic_file
from acar_deploy.errors import InputError

NO_ACTION = -1  # action_id of a 2-column keyframe-only row
NO_PERSON = -1  # person_id when the column is absent
INT64_MIN, INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


class _ActionRows:
    """Rows of a ground-truth or prediction CSV: one per box and class, or a keyframe-only row."""

    video_id: np.ndarray
    action_id: np.ndarray

    def __len__(self) -> int:
        return len(self.video_id)

    @property
    def has_box(self) -> np.ndarray:
        return self.action_id != NO_ACTION


@dataclass(frozen=True, eq=False)
class AvaAnnotations(_ActionRows):
    """Ground-truth rows; a row with `action_id == NO_ACTION` is an annotated keyframe without actions."""

    video_id: np.ndarray  # str
    timestamp: np.ndarray  # str, as written in the source
    boxes: np.ndarray  # float64 [N, 4] x1, y1, x2, y2 (NaN on keyframe-only rows)
    action_id: np.ndarray  # int64
    person_id: np.ndarray  # int64, NO_PERSON when absent
    source: str = field(default="", compare=False)


@dataclass(frozen=True, eq=False)
class AvaPredictions(_ActionRows):
    """Detection rows (one per box and class); `action_id == NO_ACTION` marks a keyframe-only row."""

    video_id: np.ndarray
    timestamp: np.ndarray
    boxes: np.ndarray
    action_id: np.ndarray
    score: np.ndarray  # float64
    source: str = field(default="", compare=False)


@dataclass(frozen=True, eq=False)
class AvaProposals:
    """Person boxes per keyframe with the detector's confidence."""

    video_id: np.ndarray
    timestamp: np.ndarray
    boxes: np.ndarray
    score: np.ndarray
    source: str = field(default="", compare=False)

    def __len__(self) -> int:
        return len(self.video_id)


@dataclass(frozen=True, eq=False)
class AvaExclusions:
    """Keyframes left out of the evaluation (2019 protocol `-e` file)."""

    video_id: np.ndarray
    timestamp: np.ndarray
    source: str = field(default="", compare=False)

    def __len__(self) -> int:
        return len(self.video_id)


# ----------------------------------------------------------------------------- reading


class _CsvColumns:
    """A CSV file split into columns (rows padded with '' to the widest row), with line numbers."""

    def __init__(self, path: str | os.PathLike, what: str):
        self.source = str(path)
        try:
            # utf-8-sig: a byte-order mark (Excel, Notepad) must not stick to the first video id.
            with open(path, encoding="utf-8-sig", newline="") as fh:
                text = fh.read()
        except FileNotFoundError:
            raise InputError(f"{self.source}: {what} file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{self.source}: cannot read {what} CSV ({exc})") from None
        if '"' in text:  # quoted fields: let the csv module parse them
            self._from_rows(list(csv.reader(io.StringIO(text))))
            return
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        commas = np.fromiter(map(str.count, lines, itertools.repeat(",")), dtype=np.int64, count=len(lines))
        blank = commas == 0
        blank[blank] = [not line.strip() for line in itertools.compress(lines, blank)]
        width = int(commas[~blank].max()) + 1 if (~blank).any() else 0
        if width > 1 and not blank[:-1].any() and (commas[~blank] == width - 1).all():
            # One width throughout (the common case): split the whole text once.
            body = "\n".join(lines[:-1]) if blank[-1] else "\n".join(lines)
            flat = body.replace("\n", ",").split(",")
            self.lines = np.arange(1, len(flat) // width + 1, dtype=np.int64)
            self.widths = np.full(len(self.lines), width, dtype=np.int64)
            self.columns = [flat[j::width] for j in range(width)]
            return
        self._from_rows([line.split(",") for line in lines], blank)

    def _from_rows(self, rows: list[list[str]], blank: np.ndarray | None = None) -> None:
        if blank is None:
            blank = np.array([not any(c.strip() for c in row) for row in rows], dtype=bool)
        keep = np.flatnonzero(~blank)
        rows = [rows[i] for i in keep.tolist()]
        self.lines = keep.astype(np.int64) + 1
        self.widths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        width = int(self.widths.max()) if len(rows) else 0
        padded = (r + [""] * (width - len(r)) for r in rows)
        self.columns = [list(c) for c in zip(*padded, strict=True)] if rows else []

    def __len__(self) -> int:
        return len(self.widths)

    def check_widths(self, allowed: tuple[int, ...], layout: str) -> None:
        bad = ~np.isin(self.widths, allowed)
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(
                f"{self.source}:{self.lines[i]}: {self.widths[i]} columns, expected "
                f"{' or '.join(map(str, allowed))} ({layout})"
            )

    def cells(self, column: int, rows: np.ndarray | None = None) -> list[str]:
        if column >= len(self.columns):  # no row is that wide
            return []
        cells = self.columns[column]
        return cells if rows is None else [cells[i] for i in rows.tolist()]

    def floats(self, column: int, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        cells = self.cells(column, rows)
        try:
            values = np.fromiter(map(float, cells), dtype=np.float64, count=len(cells))
        except ValueError:
            values = None
        if values is None or not np.isfinite(values).all():
            lines = self.lines if rows is None else self.lines[rows]
            for cell, line in zip(cells, lines.tolist(), strict=True):
                try:
                    ok = math.isfinite(float(cell))
                except ValueError:
                    ok = False
                if not ok:
                    raise InputError(f"{self.source}:{line}: {name} {cell!r} is not a finite number")
        return values

    def ints(self, column: int, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        cells = self.cells(column, rows)
        try:
            return np.fromiter(map(int, cells), dtype=np.int64, count=len(cells))
        except (ValueError, OverflowError):
            lines = self.lines if rows is None else self.lines[rows]
            for cell, line in zip(cells, lines.tolist(), strict=True):
                try:
                    value = int(cell)
                except ValueError:
                    raise InputError(f"{self.source}:{line}: {name} {cell!r} is not an integer") from None
                if not INT64_MIN <= value <= INT64_MAX:
                    raise InputError(f"{self.source}:{line}: {name} {cell!r} does not fit a 64-bit integer") from None
            raise

    def keyframes(self) -> tuple[np.ndarray, np.ndarray]:
        """video_id and timestamp columns; timestamps must be numbers (checked once per distinct value)."""
        video, stamps = (
            self.columns[0] if self.columns else [],
            self.columns[1] if len(self.columns) > 1 else [],
        )
        for vid in set(video):
            if not vid.strip():
                raise InputError(f"{self.source}:{self.lines[video.index(vid)]}: empty video_id")
        distinct = set(stamps)
        if any(s != s.strip() for s in distinct):
            stamps = [s.strip() for s in stamps]
            distinct = set(stamps)
        for stamp in distinct:
            try:
                ok = math.isfinite(float(stamp))
            except ValueError:
                ok = False
            if not ok:
                line = self.lines[stamps.index(stamp)]
                raise InputError(
                    f"{self.source}:{line}: timestamp {stamp!r} is not a number (seconds, e.g. 0902)"
                )
        return np.array(video, dtype=str), np.array(stamps, dtype=str)

    def boxes(self, rows: np.ndarray) -> np.ndarray:
        boxes = np.full((len(self), 4), np.nan, dtype=np.float64)
        subset = None if len(rows) == len(self) else rows
        for k, name in enumerate(("x1", "y1", "x2", "y2")):
            boxes[rows, k] = self.floats(2 + k, name, subset)
        return boxes


def _check_action_ids(table: _CsvColumns, action: np.ndarray, rows: np.ndarray) -> None:
    bad = action[rows] < 1
    if bad.any():
        i = rows[int(np.argmax(bad))]
        raise InputError(f"{table.source}:{table.lines[i]}: action_id {action[i]} must be >= 1")


def _subset(rows: np.ndarray, n: int) -> np.ndarray | None:
    return None if len(rows) == n else rows


def read_annotations(path: str | os.PathLike) -> AvaAnnotations:
    """Read a ground-truth CSV (7 or 8 columns, or 2-column keyframe rows)."""
    table = _CsvColumns(path, "annotation")
    table.check_widths((2, 7, 8), "video_id,timestamp,x1,y1,x2,y2,action_id[,person_id]")
    video, stamps = table.keyframes()
    n = len(table)
    idx = np.flatnonzero(table.widths > 2)
    boxes = table.boxes(idx)
    action = np.full(n, NO_ACTION, dtype=np.int64)
    person = np.full(n, NO_PERSON, dtype=np.int64)
    action[idx] = table.ints(6, "action_id", _subset(idx, n))
    _check_action_ids(table, action, idx)
    pidx = np.flatnonzero(table.widths == 8)
    person[pidx] = table.ints(7, "person_id", _subset(pidx, n))
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if inverted.any():
        i = int(np.argmax(inverted))
        raise InputError(
            f"{table.source}:{table.lines[i]}: box has x2 < x1 or y2 < y1; write boxes as x1,y1,x2,y2"
        )
    return AvaAnnotations(video, stamps, boxes, action, person, source=table.source)


def read_predictions(path: str | os.PathLike) -> AvaPredictions:
    """Read a detection CSV (8 columns; 7 means score 1.0; 2-column rows are keyframe-only)."""
    table = _CsvColumns(path, "prediction")
    table.check_widths((2, 7, 8), "video_id,timestamp,x1,y1,x2,y2,action_id,score")
    video, stamps = table.keyframes()
    n = len(table)
    idx = np.flatnonzero(table.widths > 2)
    boxes = table.boxes(idx)
    action = np.full(n, NO_ACTION, dtype=np.int64)
    action[idx] = table.ints(6, "action_id", _subset(idx, n))
    _check_action_ids(table, action, idx)
    score = np.where(table.widths > 2, 1.0, np.nan)
    sidx = np.flatnonzero(table.widths == 8)
    score[sidx] = table.floats(7, "score", _subset(sidx, n))
    return AvaPredictions(video, stamps, boxes, action, score, source=table.source)


def read_proposals(path: str | os.PathLike) -> AvaProposals:
    """Read person proposals: 7 columns, or the 8-column SlowFast/LFB layout with an action column."""
    table = _CsvColumns(path, "person-proposal")
    table.check_widths((7, 8), "video_id,timestamp,x1,y1,x2,y2,score")
    video, stamps = table.keyframes()
    n = len(table)
    boxes = table.boxes(np.arange(n))
    eight = np.flatnonzero(table.widths == 8)
    for i, label in zip(eight.tolist(), table.cells(6, eight), strict=True):
        if label.strip() and not label.strip().lstrip("-").isdigit():
            raise InputError(
                f"{table.source}:{table.lines[i]}: 8-column proposal row needs an empty or integer 7th column"
            )
    score = np.empty(n, dtype=np.float64)
    seven = np.flatnonzero(table.widths == 7)
    score[seven] = table.floats(6, "score", _subset(seven, n))
    score[eight] = table.floats(7, "score", _subset(eight, n))
    return AvaProposals(video, stamps, boxes, score, source=table.source)


def read_exclusions(path: str | os.PathLike) -> AvaExclusions:
    """Read a `video_id,timestamp` exclusion list."""
    table = _CsvColumns(path, "exclusion")
    table.check_widths((2,), "video_id,timestamp")
    video, stamps = table.keyframes()
    return AvaExclusions(video, stamps, source=table.source)


# ----------------------------------------------------------------------------- writing


def _fmt3(values: np.ndarray) -> list[str]:
    return [f"{v:.3f}" for v in values.tolist()]


def _box_cells(boxes: np.ndarray) -> list[list[str]]:
    return [_fmt3(boxes[:, k]) for k in range(4)]


def _write_lines(path: str | os.PathLike | io.TextIOBase, lines: list[str], force: bool) -> None:
    """Write to a path (atomically) or to an open text file the caller commits (e.g. with other outputs)."""
    if hasattr(path, "write"):
        path.write("".join(lines))
        return
    with atomic_file(Path(path), force=force, mode="w") as fh:
        fh.write("".join(lines))


def write_annotations(ann: AvaAnnotations, path: str | os.PathLike, force: bool = True) -> None:
    """Write ground truth; boxes `%.3f`, person_id only where the source had it."""
    x1, y1, x2, y2 = _box_cells(ann.boxes)
    out = []
    for i, (vid, ts, act, pid) in enumerate(
        zip(
            ann.video_id.tolist(),
            ann.timestamp.tolist(),
            ann.action_id.tolist(),
            ann.person_id.tolist(),
            strict=True,
        )
    ):
        if act == NO_ACTION:
            out.append(f"{vid},{ts}\n")
        elif pid == NO_PERSON:
            out.append(f"{vid},{ts},{x1[i]},{y1[i]},{x2[i]},{y2[i]},{act}\n")
        else:
            out.append(f"{vid},{ts},{x1[i]},{y1[i]},{x2[i]},{y2[i]},{act},{pid}\n")
    _write_lines(path, out, force)


def write_predictions(pred: AvaPredictions, path: str | os.PathLike | io.TextIOBase, force: bool = True) -> None:
    """Write detections as ACAR-Net does: boxes and score `%.3f`."""
    x1, y1, x2, y2 = _box_cells(pred.boxes)
    scores = _fmt3(np.nan_to_num(pred.score))
    out = []
    for i, (vid, ts, act) in enumerate(
        zip(pred.video_id.tolist(), pred.timestamp.tolist(), pred.action_id.tolist(), strict=True)
    ):
        if act == NO_ACTION:
            out.append(f"{vid},{ts}\n")
        else:
            out.append(f"{vid},{ts},{x1[i]},{y1[i]},{x2[i]},{y2[i]},{act},{scores[i]}\n")
    _write_lines(path, out, force)


def write_proposals(props: AvaProposals, path: str | os.PathLike, force: bool = True) -> None:
    """Write person proposals in the 7-column layout, boxes and score `%.3f`."""
    x1, y1, x2, y2 = _box_cells(props.boxes)
    scores = _fmt3(props.score)
    out = [
        f"{vid},{ts},{x1[i]},{y1[i]},{x2[i]},{y2[i]},{scores[i]}\n"
        for i, (vid, ts) in enumerate(zip(props.video_id.tolist(), props.timestamp.tolist(), strict=True))
    ]
    _write_lines(path, out, force)


def write_exclusions(excl: AvaExclusions, path: str | os.PathLike, force: bool = True) -> None:
    out = [f"{vid},{ts}\n" for vid, ts in zip(excl.video_id.tolist(), excl.timestamp.tolist(), strict=True)]
    _write_lines(path, out, force)
