"""Option types shared by the command modules: one definition, so an option name means one thing everywhere.

Use them as parameter annotations, e.g. ``force: Force = False`` or ``size: Size = FrameSize(256, 341)``.
`AcarCommand` / `AcarGroup` (installed on every command in cli/main.py) drop the `<bool>` metavar typer
prints next to flags, so `--force` reads as a flag in --help.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from acar_deploy.data.frame_size import FrameSize, parse_frame_size
from acar_deploy.errors import InputError


class OutputFormat(str, Enum):
    """`--format`: a human table (text) or machine-readable JSON."""

    text = "text"
    json = "json"


class Device(str, Enum):
    """`--device` for commands that run the eager model."""

    cpu = "cpu"
    cuda = "cuda"


def parse_size_option(value: str | FrameSize) -> FrameSize:
    """The one `--size HxW` parser of the CLI (the library's `parse_frame_size`, as a click error)."""
    try:
        return parse_frame_size(value)
    except InputError as exc:
        raise typer.BadParameter(str(exc)) from None


def _flags_without_metavar(params: list[Any]) -> list[Any]:
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class AcarCommand(TyperCommand):
    """A typer command whose flags (and --help) show no `<bool>` type in --help."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_without_metavar(super().get_params(ctx))


# typer vendors click; its usage errors (bad option, bad value, missing argument) share this base class.
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class AcarGroup(TyperGroup):
    """The root group, with the same flag display as `AcarCommand`, and usage errors on one line.

    typer draws a bad option as a multi-line box; a script reading stderr wants one line naming the
    command and the option (exit code 2, as click's).
    """

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_without_metavar(super().get_params(ctx))

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _USAGE_ERROR as exc:
            where = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "acar-deploy"
            message = " ".join(exc.format_message().split())
            print(f"error: {where}: {message} (see {where} --help)", file=sys.stderr)
            sys.exit(exc.exit_code)
        except typer.Abort:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


Size = Annotated[
    FrameSize,
    typer.Option("--size", parser=parse_size_option, metavar="HxW", help="Frame size HEIGHTxWIDTH in pixels, e.g. 256x341."),
]
Force = Annotated[
    bool,
    typer.Option("--force", help="Replace outputs that already exist (without it an existing output exits 2)."),
]
Threads = Annotated[int, typer.Option("--threads", min=1, help="CPU threads for torch and ONNX Runtime.")]
Format = Annotated[
    OutputFormat,
    typer.Option("--format", help="text: tables, and a progress bar on a terminal; json: one JSON document, "
                                  "no progress."),
]
Checkpoint = Annotated[
    Path | None,
    typer.Option("--checkpoint", help="Model weights: official model-zoo or training file, or an acar-deploy "
                                      "checkpoint (`acar-deploy info` reads any of them)."),
]
Config = Annotated[
    str | None,
    typer.Option("--config", help="Model config: built-in name (acar_r50, acar_r101, linear_r50, acar_tiny, "
                                  "linear_tiny) or a YAML file (official ACAR-Net or `acar-deploy synth`'s)."),
]
Out = Annotated[
    Path,
    typer.Option("--out", help="Where to write the command's output (see above); replaced only with --force."),
]
OptionalOut = Annotated[
    Path | None,
    typer.Option("--out", help="Where to write the command's output (see above); replaced only with --force."),
]
