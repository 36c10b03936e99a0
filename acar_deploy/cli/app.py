"""The `acar-deploy` Typer app; command modules register on it, `cli.main` imports them all.

Kept apart from `cli.main` so a command module imports the app without importing every other
command module back (no import cycle).
"""

from __future__ import annotations

import typer

from acar_deploy import __version__
from acar_deploy.cli.options import AcarGroup

app = typer.Typer(
    name="acar-deploy",
    cls=AcarGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Take ACAR-Net from a PyTorch checkpoint to verified ONNX Runtime / TensorRT engines.\n\n"
    "Start with `acar-deploy demo --quick` to see the whole pipeline on synthetic data.\n\n"
    "Examples:\n\n"
    "  acar-deploy demo --quick --out /tmp/demo\n\n"
    "  acar-deploy export --checkpoint AVA_SLOWFAST_R50_ACAR_HR2O.pth.tar --config acar_r50 --out export/r50\n\n"
    "  acar-deploy COMMAND --help",
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
