"""The `acar-deploy` Typer app; command modules register on it, `cli.main` imports them all.

Kept apart from `cli.main` so a command module imports the app without importing every other
command module back (no import cycle).
"""

from __future__ import annotations

import typer

from acar_deploy import __version__

app = typer.Typer(
    name="acar-deploy",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Take ACAR-Net from a PyTorch checkpoint to verified ONNX Runtime / TensorRT engines.\n\n"
    "Start with `acar-deploy demo --quick` to see the whole pipeline on synthetic data.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    pass
