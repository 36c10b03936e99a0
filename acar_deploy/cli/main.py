"""The `acar-deploy` entry point.

Command modules are imported here but keep heavy imports (torch, onnx) inside their command
functions, so `acar-deploy evaluate` and `--help` start quickly and never import torch.
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


# Each command module registers its commands on `app` (one import line per group).
# (command imports follow)
from acar_deploy.cli import bank as _bank  # noqa: E402,F401
from acar_deploy.cli import bench as _bench  # noqa: E402,F401
from acar_deploy.cli import build as _build  # noqa: E402,F401
from acar_deploy.cli import demo as _demo  # noqa: E402,F401
from acar_deploy.cli import detect as _detect  # noqa: E402,F401
from acar_deploy.cli import evaluate as _evaluate  # noqa: E402,F401
from acar_deploy.cli import export as _export  # noqa: E402,F401
from acar_deploy.cli import info as _info  # noqa: E402,F401
from acar_deploy.cli import parity as _parity  # noqa: E402,F401
from acar_deploy.cli import synth as _synth  # noqa: E402,F401
from acar_deploy.cli import train as _train  # noqa: E402,F401
from acar_deploy.cli import triton as _triton  # noqa: E402,F401

# `--help` lists commands in the order the data flows, not the order their modules were imported.
PIPELINE_ORDER = ("demo", "info", "synth", "train", "detect", "evaluate", "export", "validate", "build", "bench",
                  "parity", "triton", "triton-client")
app.registered_commands.sort(
    key=lambda c: PIPELINE_ORDER.index(c.name) if c.name in PIPELINE_ORDER else len(PIPELINE_ORDER)
)


def main() -> None:
    app()


if __name__ == "__main__":  # `python -m acar_deploy.cli.main`: the commands live on the imported module's app
    from acar_deploy.cli.main import main as _registered_main

    _registered_main()
