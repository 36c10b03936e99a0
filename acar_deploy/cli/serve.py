"""`acar-deploy serve`: run a local Triton server for a model repository until Ctrl-C."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from acar_deploy.cli.app import app
from acar_deploy.cli.errors import handle_errors


@app.command(
    "serve",
    help="Start a local Triton server for a model repository (from `acar-deploy triton`), wait until every "
    "model is ready, print the endpoints and serve until Ctrl-C.\n\n"
    "Uses --server, else a tritonserver on PATH (e.g. the NGC container), else the bundled CPU server that "
    "`--install` puts in the cache (nvidia-pytriton's tritonserver, a numpy<2 stub environment and a stand-in "
    "onnxruntime backend; see docs/serving.md). Listens on 127.0.0.1 unless --host says otherwise; metrics "
    "are off unless --metrics-port is given.\n\n"
    "Examples:\n\n"
    "  acar-deploy serve --install\n\n"
    "  acar-deploy serve model_repository\n\n"
    "  acar-deploy serve /tmp/repo --http-port 9000 --grpc-port 9001 --log",
)
@handle_errors
def serve_command(
    repository: Annotated[
        Path | None, typer.Argument(help="Model repository folder; may be left out with --install.")
    ] = None,
    http_port: Annotated[int, typer.Option("--http-port", help="HTTP/REST port.")] = 8000,
    grpc_port: Annotated[int, typer.Option("--grpc-port", help="gRPC port.")] = 8001,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).")] = (
        "127.0.0.1"
    ),
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Serve Prometheus metrics on this port (default: off).")
    ] = None,
    log: Annotated[bool, typer.Option("--log", help="Show the server's log here instead of a log file.")] = False,
    verbose: Annotated[int, typer.Option("--log-verbose", help="Triton's --log-verbose level.")] = 0,
    server: Annotated[Path | None, typer.Option("--server", help="tritonserver binary to run.")] = None,
    install: Annotated[
        bool, typer.Option("--install", help="Install the bundled server into the cache if it is not there.")
    ] = False,
    cache: Annotated[
        Path | None,
        typer.Option("--cache", help="Cache folder (default $ACAR_DEPLOY_CACHE/triton or ~/.cache/acar-deploy/triton)."),
    ] = None,
    ready_timeout: Annotated[
        float, typer.Option("--ready-timeout", help="Seconds to wait for every model to be ready.")
    ] = 180.0,
) -> None:
    from acar_deploy.serve.local_triton import ServeSettings, find_runtime, prepare_bundled
    from acar_deploy.serve.local_triton import serve as run_server

    def say(message: str) -> None:
        typer.echo(message, err=True)

    if repository is None:
        if not install:
            raise typer.BadParameter("pass a model repository (or --install alone to install the bundled server)")
        runtime = prepare_bundled(cache, install=True, announce=say)
        typer.echo(f"bundled server ready: {runtime.server}")
        return
    settings = ServeSettings(
        repository, host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
        ready_timeout_s=ready_timeout, log_verbose=verbose, stream_log=log,
    )
    runtime = find_runtime(server, cache, install=install, announce=say)
    say(f"starting {runtime.origin}")

    def ready(endpoints, log_path) -> None:
        typer.echo(f"ready: {', '.join(f'{name} {state}' for name, state in endpoints.models)}")
        typer.echo(f"  HTTP  {endpoints.http}")
        typer.echo(f"  gRPC  {endpoints.grpc}")
        if endpoints.metrics:
            typer.echo(f"  metrics  {endpoints.metrics}")
        if log_path:
            typer.echo(f"  log   {log_path}")
        typer.echo("Ctrl-C stops the server.")

    code = run_server(settings, runtime, ready)
    say(f"server stopped (exit code {code})")
