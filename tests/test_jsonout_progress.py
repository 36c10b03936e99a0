"""The shared JSON serializer and progress bar: one set of rules, and silence when asked."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
from rich.console import Console

from acar_deploy.jsonout import dumps, to_jsonable
from acar_deploy.progress import progress_bar


class Colour(str, Enum):
    red = "red"


@dataclass(frozen=True)
class Row:
    name: str
    path: Path
    values: tuple[float, ...]


class WithToDict:
    def to_dict(self):
        return {"k": np.int64(3)}


def test_to_jsonable_follows_one_set_of_rules():
    value = {
        "enum": Colour.red,
        "path": Path("a/b.onnx"),
        "row": Row("x", Path("p"), (1.5, 2.0)),
        "np_scalar": np.float32(0.25),
        "np_array": np.arange(3, dtype=np.int64),
        1: {"nested": (True, None)},
        "obj": WithToDict(),
    }
    assert to_jsonable(value) == {
        "enum": "red",
        "path": "a/b.onnx",
        "row": {"name": "x", "path": "p", "values": [1.5, 2.0]},
        "np_scalar": 0.25,
        "np_array": [0, 1, 2],
        "1": {"nested": [True, None]},
        "obj": {"k": 3},
    }
    assert json.loads(dumps(value)) == to_jsonable(value)
    assert type(to_jsonable(np.int64(7))) is int


def test_disabled_progress_bar_draws_and_prints_nothing(capsys):
    with progress_bar(False) as bar:
        task = bar.add_task("work", total=3)
        for _ in range(3):
            bar.advance(task)
        bar.console.print("a log line")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_enabled_progress_bar_off_a_terminal_keeps_log_lines_but_draws_no_bar(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("rich.console.Console", lambda **kw: Console(file=stream, quiet=kw.get("quiet", False)))
    with progress_bar(True) as bar:
        task = bar.add_task("work", total=2)
        bar.advance(task)
        bar.console.print("epoch 1: loss 0.5")
    assert stream.getvalue() == "epoch 1: loss 0.5\n"
