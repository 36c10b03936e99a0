"""`acar-deploy triton` (build a Triton model repository) and `acar-deploy triton-client` (query it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from acar_deploy.cli.app import app
from acar_deploy.cli.errors import handle_errors
from acar_deploy.cli.options import Force, Format, Out, OutputFormat
from acar_deploy.jsonout import dumps
from acar_deploy.progress import progress_bar
from acar_deploy.serve.triton import DEFAULT_BANK_CACHE_ENTRIES, InstanceKind
from acar_deploy.serve.triton_client import TritonProtocol

DEFAULT_PORTS = {TritonProtocol.http: 8000, TritonProtocol.grpc: 8001}


@app.command(
    "triton",
    help="Write a Triton Inference Server model repository from an export (and engine) folder.\n\n"
    "Three models: NAME_backbone and NAME_head (ONNX Runtime, or TensorRT plans / OpenVINO IR from --engines) and NAME, "
    "a Python model that runs backbone then head and skips both for a clip with zero boxes. "
    "An acfb (feature-bank) export gives NAME_backbone, NAME_bank_kv, NAME_bank_head and NAME, whose requests "
    "also carry bank_window and either bank_entries or stored bank_keys + bank_values (docs/serving.md). "
    "--out is the model repository folder.\n\n"
    "Examples:\n\n"
    "  acar-deploy triton export/acar_r50 --out model_repository\n\n"
    "  acar-deploy triton export/acar_r50 --out model_repository --engines engines/acar_r50-trt-fp16 --force\n\n"
    "  acar-deploy triton export/acar_tiny --out /tmp/repo --kind cpu --max-batch 0",
)
@handle_errors
def triton_command(
    export: Annotated[Path, typer.Argument(help="Export folder with backbone.onnx, head.onnx, manifest.json "
                                                "(an acfb export: backbone, bank_kv, bank_head).")],
    out: Out = Path("model_repository"),
    engines: Annotated[
        list[Path] | None,
        typer.Option(
            "--engines",
            help="Engine folder whose backbone/head (TensorRT .plan, OpenVINO .xml/.bin for Triton's openvino backend, "
            "or ONNX Runtime int8/fp16 .onnx) replace the "
            "export's graphs; repeat it to serve several engines side by side as NAME_<runtime>_<precision>.",
        ),
    ] = None,
    max_batch: Annotated[
        int, typer.Option("--max-batch", min=0, help="Backbone max_batch_size with dynamic batching; 0 disables batching.")
    ] = 4,
    instances: Annotated[int, typer.Option("--instances", min=1, help="Instances per model (instance_group count).")] = 1,
    kind: Annotated[
        InstanceKind,
        typer.Option(
            "--kind",
            help="Where backbone and head instances run: auto (KIND_AUTO: GPU if the server has one, else CPU), "
            "or cpu / gpu to force KIND_CPU / KIND_GPU.",
        ),
    ] = InstanceKind.auto,
    name: Annotated[str, typer.Option("--name", help="Pipeline model name; parts get _backbone / _head "
                                                     "(acfb: _backbone / _bank_kv / _bank_head).")] = "acar",
    bank_cache: Annotated[
        int, typer.Option("--bank-cache", min=0, help="acfb exports: bank entries whose keys/values each pipeline "
                          "instance keeps (least recently used out), so an entry is projected once while it stays "
                          "in the windows of consecutive keyframes.")
    ] = DEFAULT_BANK_CACHE_ENTRIES,
    force: Force = False,
    output_format: Format = OutputFormat.text,
) -> None:
    from acar_deploy.serve.triton import TritonSettings, build_model_repository

    settings = TritonSettings(name=name, max_batch=max_batch, instances=instances, kind=kind,
                              bank_cache_entries=bank_cache)
    with progress_bar(output_format is OutputFormat.text) as bar:
        bar.add_task(f"writing {out}", total=None)
        repo = build_model_repository(export, out, engines=tuple(engines or ()), settings=settings, force=force)
    if output_format is OutputFormat.json:
        typer.echo(dumps(repo.to_dict()))
        return
    typer.echo(f"{repo.path}/")
    width = max(len(m.name) for m in repo.models) + 1
    for model in repo.models:
        typer.echo(f"  {model.name + '/':<{width}} {model.platform:<17} {model.file}  ({model.origin})")
    typer.echo(f"serve it: acar-deploy serve {repo.path}  (or tritonserver --model-repository={repo.path.resolve()})")


@app.command(
    "triton-client",
    help="Send one clip and its person boxes to a Triton server; print the top actions per box.\n\n"
    "Boxes are x1,y1,x2,y2 normalised to [0, 1], separated by ';'. The clip is a normalised [3, 32, H, W] "
    ".npy array, or cut from --video around --time (default: the video's middle).\n\n"
    "Examples:\n\n"
    '  acar-deploy triton-client --clip clip.npy --boxes "0.1,0.2,0.45,0.95;0.5,0.1,0.9,0.9"\n\n'
    '  acar-deploy triton-client --url gpu-host:8001 --protocol grpc --video talk.mp4 --time 12.5 '
    '--boxes "0.3,0.1,0.7,1.0" --top 5 --format json',
)
@handle_errors
def triton_client_command(
    boxes: Annotated[str, typer.Option("--boxes", help='Person boxes "x1,y1,x2,y2;..." in [0, 1]; "" = none.')],
    url: Annotated[
        str | None, typer.Option("--url", help="Server host:port (default localhost:8000 http, :8001 grpc).")
    ] = None,
    protocol: Annotated[TritonProtocol, typer.Option("--protocol", help="http or grpc.")] = TritonProtocol.http,
    clip: Annotated[Path | None, typer.Option("--clip", help="Normalised clip saved with numpy.save.")] = None,
    video: Annotated[Path | None, typer.Option("--video", help="Video file to cut the clip from.")] = None,
    time: Annotated[float | None, typer.Option("--time", help="Keyframe second in --video.")] = None,
    model: Annotated[str, typer.Option("--model", help="The pipeline model's name.")] = "acar",
    top: Annotated[int, typer.Option("--top", min=1, help="Actions to print per box.")] = 3,
    timeout: Annotated[float, typer.Option("--timeout", min=0.001, help="Seconds to wait for the server.")] = 60.0,
    output_format: Format = OutputFormat.text,
) -> None:
    from acar_deploy.serve.triton_client import load_clip_file, parse_boxes, request_actions

    parsed = parse_boxes(boxes)
    url = url or f"localhost:{DEFAULT_PORTS[protocol]}"
    clip_array = load_clip_file(clip) if clip is not None else None
    results = request_actions(
        url, parsed, clip=clip_array, video=video, timestamp=time, protocol=protocol, model=model, top=top,
        timeout_s=timeout,
    )
    if output_format is OutputFormat.json:
        typer.echo(dumps([r.to_dict() for r in results]))
        return
    if not results:
        typer.echo("no boxes: nothing to score")
    for index, result in enumerate(results):
        typer.echo(f"box {index} [{', '.join(f'{v:.3f}' for v in result.box)}]")
        for action in result.actions:
            typer.echo(f"  {action.score:.3f}  {action.name} (id {action.id})")
