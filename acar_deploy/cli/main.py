"""The `acar-deploy` entry point.

Command modules are imported here but keep heavy imports (torch, onnx) inside their command
functions, so `acar-deploy evaluate` and `--help` start quickly and never import torch.
"""

from __future__ import annotations

# Each command module registers its commands on `app` when imported (one import line per group).
from acar_deploy.cli import bank as _bank  # noqa: E402,F401
from acar_deploy.cli import bench as _bench  # noqa: E402,F401
from acar_deploy.cli import build as _build  # noqa: E402,F401
from acar_deploy.cli import demo as _demo  # noqa: E402,F401
from acar_deploy.cli import detect as _detect  # noqa: E402,F401
from acar_deploy.cli import evaluate as _evaluate  # noqa: E402,F401
from acar_deploy.cli import export as _export  # noqa: E402,F401
from acar_deploy.cli import info as _info  # noqa: E402,F401
from acar_deploy.cli import parity as _parity  # noqa: E402,F401
from acar_deploy.cli import serve as _serve  # noqa: E402,F401
from acar_deploy.cli import synth as _synth  # noqa: E402,F401
from acar_deploy.cli import train as _train  # noqa: E402,F401
from acar_deploy.cli import triton as _triton  # noqa: E402,F401
from acar_deploy.cli.app import app
from acar_deploy.cli.options import AcarCommand

# `--help` lists commands in the order the data flows, not the order their modules were imported.
PIPELINE_ORDER = ("demo", "info", "synth", "train", "bank", "detect", "evaluate", "export", "validate", "build", "bench",
                  "parity", "triton", "serve", "triton-client")
app.registered_commands.sort(
    key=lambda c: PIPELINE_ORDER.index(c.name) if c.name in PIPELINE_ORDER else len(PIPELINE_ORDER)
)
for _command in app.registered_commands:  # flags show no `<bool>` metavar in --help
    _command.cls = AcarCommand


def main() -> None:
    app()


if __name__ == "__main__":  # `python -m acar_deploy.cli.main`: the commands live on the imported module's app
    from acar_deploy.cli.main import main as _registered_main

    _registered_main()
