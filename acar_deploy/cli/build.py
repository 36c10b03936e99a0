"""`acar-deploy build`: an export folder -> an ONNX Runtime, TensorRT or OpenVINO engine folder."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from acar_deploy.cli.app import app
from acar_deploy.cli.errors import handle_errors
from acar_deploy.cli.options import Force, Format, OptionalOut, OutputFormat
from acar_deploy.engines import settings as defaults
from acar_deploy.jsonout import dumps


class RuntimeChoice(str, Enum):
    ort = "ort"
    trt = "trt"
    openvino = "openvino"


class PrecisionChoice(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"
    int8 = "int8"


class Int8MethodChoice(str, Enum):
    qdq = "qdq"
    nncf = "nncf"


class CalibMethodChoice(str, Enum):
    minmax = "minmax"
    entropy = "entropy"
    percentile = "percentile"


@app.command(
    "build",
    help="Build an engine from an export folder: ONNX Runtime or TensorRT (fp32/fp16/int8), OpenVINO (fp32/bf16/int8).\n\n"
    "--out is the engine folder (default engines/NAME-RUNTIME-PRECISION).\n\n"
    "Examples:\n\n"
    "  acar-deploy build export/acar_tiny --runtime ort --precision fp16\n\n"
    "  acar-deploy build export/acar_tiny --precision int8 --calib-data calib/ --calib-method entropy\n\n"
    "  acar-deploy build export/acar_r50 --runtime openvino --precision int8 --int8-method nncf\n\n"
    "  acar-deploy build export/acar_r50 --runtime trt --precision fp16 --roi-profile 1:8:32 --batch-profile 1:1:4 --force",
)
@handle_errors
def build_command(
    export_dir: Annotated[Path, typer.Argument(help="Export folder (holds manifest.json), e.g. export/acar_tiny.")],
    runtime: Annotated[RuntimeChoice, typer.Option(help="Target runtime.")] = RuntimeChoice.ort,
    precision: Annotated[PrecisionChoice, typer.Option(help="fp16 keeps attention logits, softmax, norms in fp32.")] = PrecisionChoice.fp32,
    calib_data: Annotated[Path | None, typer.Option(help="INT8: a dataset folder (dataset.json, e.g. from `synth`) or a folder of .npz files with 'clips' and 'rois'; default: synthetic clips.")] = None,
    calib_clips: Annotated[int | None, typer.Option(min=1, help=f"INT8: number of calibration keyframes (default {defaults.CALIB_CLIPS}).")] = None,
    calib_method: Annotated[CalibMethodChoice, typer.Option(help="INT8 calibration method.")] = CalibMethodChoice.minmax,
    int8_method: Annotated[Int8MethodChoice, typer.Option(help="OpenVINO INT8: our calibrated QDQ graph, or NNCF post-training quantization of the fp32 graph.")] = Int8MethodChoice(defaults.OPENVINO_INT8_METHOD),
    int8_stem: Annotated[bool, typer.Option("--int8-stem", help="INT8: quantize the two stem convs too (slow on CPU; default keeps them fp32).")] = False,
    roi_profile: Annotated[str | None, typer.Option("--roi-profile", metavar="MIN:OPT:MAX", help=f"TensorRT: boxes per call R, min >= 1 (default {':'.join(map(str, defaults.ROI_PROFILE))}).")] = None,
    batch_profile: Annotated[str | None, typer.Option("--batch-profile", metavar="MIN:OPT:MAX", help=f"TensorRT: clips per call B (default {':'.join(map(str, defaults.CLIP_PROFILE))}).")] = None,
    bank_profile: Annotated[str | None, typer.Option("--bank-profile", metavar="MIN:OPT:MAX", help=f"TensorRT, acfb exports: bank entries per call M, min >= 1 (default {':'.join(map(str, defaults.BANK_PROFILE))}; M = 0 runs as one masked entry).")] = None,
    workspace_gib: Annotated[float | None, typer.Option(min=0.001, help=f"TensorRT workspace limit in GiB (default {defaults.WORKSPACE_GIB:g}).")] = None,
    out: OptionalOut = None,
    force: Force = False,
    output_format: Format = OutputFormat.text,
) -> None:
    from dataclasses import replace

    from acar_deploy.engines import BuildSettings, CalibMethod, ShapeRange, build_engine

    settings = BuildSettings(export_dir=export_dir, runtime=runtime.value, precision=precision.value, out_dir=out,
                             force=force)
    int8 = replace(settings.int8, calib_data=calib_data, calib_method=CalibMethod(calib_method.value),
                   keep_stem_fp32=not int8_stem)
    if calib_clips is not None:
        int8 = replace(int8, calib_clips=calib_clips)
    trt = settings.trt
    if roi_profile is not None:
        trt = replace(trt, rois=ShapeRange.parse(roi_profile, "--roi-profile"))
    if batch_profile is not None:
        trt = replace(trt, clips=ShapeRange.parse(batch_profile, "--batch-profile"))
    if bank_profile is not None:
        trt = replace(trt, bank_entries=ShapeRange.parse(bank_profile, "--bank-profile"))
    if workspace_gib is not None:
        trt = replace(trt, workspace_gib=workspace_gib)
    openvino = replace(settings.openvino, int8_method=int8_method.value)
    info = build_engine(replace(settings, int8=int8, trt=trt, openvino=openvino), progress=output_format == OutputFormat.text)
    summary = info.summary()
    if output_format == OutputFormat.json:
        typer.echo(dumps(summary))
        return
    typer.echo(f"built {summary['path']} ({summary['runtime']} {summary['precision']}) in {summary['build_seconds']:.1f} s")
    warning = (info.engine_json.get("openvino") or {}).get("warning")
    if warning:
        typer.echo(f"  warning: {warning}")
    for part, path in summary["parts"].items():
        fp32 = summary["fp32_nodes"].get(part, 0)
        hit = " (engine cache hit)" if summary["cache_hits"].get(part) else ""
        typer.echo(f"  {part}: {path}{'' if precision in (PrecisionChoice.fp32, PrecisionChoice.bf16) else f', {fp32} nodes kept fp32'}{hit}")
    if summary["calibration"]:
        c = summary["calibration"]
        typer.echo(f"  calibration: {c['clips']} clips, {c['rois']} boxes, {c['method']}, sha256 {c['sha256'][:12]}")
