"""`build_engine(BuildSettings) -> EngineInfo`: export folder -> engine folder, atomically.

ONNX Runtime engines hold the ready-to-run graph(s) under the export's part file names; TensorRT
engines hold one serialized plan per part (`<part>.plan`), built through the engine cache; OpenVINO
engines hold one IR per part (`<part>.xml` + `.bin`) and a compiled-model cache. All get
`engine.json` (hashes, precision policy, calibration, versions, settings) and a copy of manifest.json.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from acar_deploy import __version__
from acar_deploy.artifacts import atomic_dir, check_can_write, sha256_file
from acar_deploy.engines.builds.calibration import CalibrationSet, load_calibration_set
from acar_deploy.engines.settings import BuildSettings, EngineInfo
from acar_deploy.errors import InputError
from acar_deploy.export.validate import load_graph
from acar_deploy.formats import (
    ENGINE_FILE,
    ENGINE_FORMAT,
    ENGINE_FORMAT_VERSION,
    MANIFEST_FILE,
    EngineRecord,
    ExportManifest,
    GraphPartRecord,
    Precision,
    Runtime,
)
from acar_deploy.progress import progress_bar

LARGE_GRAPH_BYTES = 1_800_000_000  # protobuf's 2 GB limit, with margin: larger graphs use external data
# What an acfb export (backbone, bank_kv, bank_head) builds for; int8 is refused (calibration has no bank feeds).
BANK_BUILDS = frozenset({(Runtime.ORT, Precision.FP32), (Runtime.ORT, Precision.FP16), (Runtime.OPENVINO, Precision.FP32),
                         (Runtime.OPENVINO, Precision.BF16), (Runtime.TRT, Precision.FP32), (Runtime.TRT, Precision.FP16)})


def build_engine(settings: BuildSettings, progress: bool = True) -> EngineInfo:
    """Build (or rebuild with `force`) the engine described by `settings`."""
    export = ExportManifest.load(settings.export_dir)
    export.verify_graphs()
    if "bank_head" in export.parts and (settings.runtime, settings.precision) not in BANK_BUILDS:
        raise InputError(f"{export.path}: an acfb export (bank_kv, bank_head) builds for ort fp32/fp16, openvino "
                         f"fp32/bf16 and trt fp32/fp16 only, not {settings.runtime.value} {settings.precision.value} "
                         "(int8 calibration has no bank feeds)")
    out = settings.resolved_out_dir
    check_can_write(out, settings.force)
    if settings.runtime == Runtime.TRT and settings.precision == Precision.INT8:
        from acar_deploy.engines.builds.trt_builder import refuse_int8_plugin_exports

        refuse_int8_plugin_exports(export)
    trt_context = _tensorrt_context(settings) if settings.runtime == Runtime.TRT else None
    if settings.runtime == Runtime.OPENVINO:  # fail before calibrating when the extra is missing
        from acar_deploy.engines.openvino_core import import_openvino

        import_openvino("building an OpenVINO engine")
    calibration = _calibration_set(settings, export) if settings.precision == Precision.INT8 else None
    started = time.perf_counter()
    part_records: dict[str, dict[str, Any]] = {}
    cache_hits: dict[str, bool] = {}
    with atomic_dir(out, force=settings.force) as tmp, progress_bar(progress) as bar:
        task = bar.add_task("build", total=len(export.parts))
        context_feeds = None
        for name, part in export.parts.items():
            source = load_graph(export.graph_path(name), external_data=True)  # a truncated graph (sha256 rewritten) fails in one line
            if calibration is not None and name == "head" and context_feeds is None:
                context_feeds = _backbone_contexts(export, calibration)
            graph, policy = _precision_graph(settings, part, source, calibration, context_feeds)
            record: dict[str, Any] = {
                "source_file": part.file,
                "source_sha256": sha256_file(export.graph_path(name)),
                "inputs": [t.to_dict() for t in part.inputs],
                "outputs": [t.to_dict() for t in part.outputs],
                **policy,
            }
            if settings.runtime == Runtime.ORT:
                target = tmp / part.file
                _save_graph(graph, target)
                record["file"] = part.file
            elif settings.runtime == Runtime.OPENVINO:
                from acar_deploy.engines.builds.openvino import uses_qdq_graph, write_openvino_part

                nncf_feeds = None
                if calibration is not None and not uses_qdq_graph(settings):
                    nncf_feeds = _part_feeds(part, calibration, context_feeds)
                target, extra = write_openvino_part(settings, name, graph, nncf_feeds, tmp)
                record.update(extra)
                record["file"] = target.name
            else:
                from acar_deploy.engines.builds.trt_builder import build_part_plan

                target = tmp / f"{name}.plan"
                hit = build_part_plan(settings, trt_context, part, graph, policy, target)
                cache_hits[name] = hit
                record["file"] = target.name
                record["engine_cache_hit"] = hit
            record["sha256"] = sha256_file(target)
            part_records[name] = record
            bar.update(task, advance=1, description=f"build: {name} done")
        shutil.copy2(export.path, tmp / MANIFEST_FILE)
        engine_json = _engine_json(settings, export, part_records, calibration, trt_context,
                                   time.perf_counter() - started)
        EngineRecord.from_dict(engine_json, tmp / ENGINE_FILE).write()
    return EngineInfo(
        path=out,
        runtime=settings.runtime,
        precision=settings.precision,
        parts={k: out / v["file"] for k, v in part_records.items()},
        engine_json=engine_json,
        build_seconds=time.perf_counter() - started,
        cache_hits=cache_hits,
    )


def _precision_graph(
    settings: BuildSettings,
    part: GraphPartRecord,
    source: Any,
    calibration: CalibrationSet | None,
    context_feeds: list[np.ndarray] | None,
) -> tuple[Any, dict[str, Any]]:
    """The graph this part runs at the requested precision, and its precision record."""
    if settings.precision == Precision.FP32:
        return source, {}
    if settings.runtime == Runtime.OPENVINO:
        from acar_deploy.engines.builds.openvino import uses_qdq_graph

        if not uses_qdq_graph(settings):  # bf16 is a compile hint; NNCF quantizes the IR itself
            return source, {}
    if settings.precision == Precision.FP16:
        if settings.runtime == Runtime.TRT:
            from acar_deploy.engines.builds.trt_builder import fp16_graph_for_tensorrt

            return fp16_graph_for_tensorrt(settings, source)
        from acar_deploy.engines.builds.fp16 import convert_to_fp16

        graph, report = convert_to_fp16(source, settings.fp16)
        return graph, report.to_json()
    from acar_deploy.engines.builds.int8 import quantize_int8

    assert calibration is not None
    feeds = _part_feeds(part, calibration, context_feeds)
    graph, report = quantize_int8(
        source, feeds, settings.int8, settings.fp16, symmetric_activations=settings.runtime == Runtime.TRT
    )
    return graph, report.to_json()


def _part_feeds(part: GraphPartRecord, calibration: CalibrationSet, contexts: list[np.ndarray] | None) -> list[dict]:
    feeds = []
    for i, sample in enumerate(calibration.samples):
        available = {"clips": sample.clips, "rois": sample.rois}
        if contexts is not None:
            available["context"] = contexts[i]
        feeds.append({n: available[n] for n in part.input_names})
    return feeds


def _backbone_contexts(export: ExportManifest, calibration: CalibrationSet) -> list[np.ndarray]:
    """The fp32 backbone's context maps for the calibration clips (what the head sees at fp32)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(export.graph_path("backbone")), providers=["CPUExecutionProvider"])
    return [session.run(["context"], {"clips": s.clips})[0] for s in calibration.samples]


def _calibration_set(settings: BuildSettings, export: ExportManifest) -> CalibrationSet:
    source = settings.int8.calib_data
    clip_shape = None
    for part in export.parts.values():
        if "clips" in part.input_names:
            clip_shape = tuple(part.shape_of("clips")[1:])
    if source is None:
        from acar_deploy.engines.builds.calibration import default_calibration_set

        return default_calibration_set(export, clip_shape, settings.int8.calib_clips, settings.int8.seed)
    return load_calibration_set(source, settings.int8.calib_clips, clip_shape, settings.int8.seed, export)


def _save_graph(graph: Any, target: Path) -> None:
    import onnx

    if graph.ByteSize() > LARGE_GRAPH_BYTES:
        onnx.save_model(graph, str(target), save_as_external_data=True, location=f"{target.name}.data")
    else:
        onnx.save_model(graph, str(target))


def _tensorrt_context(settings: BuildSettings) -> dict[str, Any]:
    from acar_deploy.engines.runners.trt import gpu_identity, import_tensorrt

    trt = import_tensorrt("building a TensorRT engine")
    name, capability = gpu_identity()
    return {"trt": trt, "version": trt.__version__, "gpu_name": name, "compute_capability": capability}


def _versions(trt_context: dict[str, Any] | None, settings: BuildSettings) -> dict[str, str]:
    import onnx
    import onnxruntime

    versions = {"acar_deploy": __version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    if trt_context is not None:
        versions["tensorrt"] = trt_context["version"]
    if settings.runtime == Runtime.OPENVINO:
        import openvino

        versions["openvino"] = openvino.__version__
        if settings.precision == Precision.INT8 and settings.openvino.int8_method.value == "nncf":
            import nncf

            versions["nncf"] = nncf.__version__
    return versions


def _engine_json(
    settings: BuildSettings,
    export: ExportManifest,
    parts: dict[str, dict[str, Any]],
    calibration: CalibrationSet | None,
    trt_context: dict[str, Any] | None,
    seconds: float,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "format": ENGINE_FORMAT,
        "format_version": ENGINE_FORMAT_VERSION,
        "runtime": settings.runtime.value,
        "precision": settings.precision.value,
        "model_name": export.model_name,
        "export": {"path": str(export.folder), "manifest_sha256": sha256_file(export.path),
                   "checkpoint_sha256": export.checkpoint_sha256},
        "parts": parts,
        "precision_policy": _policy_summary(settings),
        "calibration": calibration.to_json() | {"method": settings.int8.calib_method.value} if calibration else None,
        "versions": _versions(trt_context, settings),
        "build_time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(seconds, 3),
        "settings": settings.to_json(),
    }
    if settings.runtime == Runtime.OPENVINO:
        from acar_deploy.engines.builds.openvino import openvino_record

        data["openvino"] = openvino_record(settings)
    if trt_context is not None:
        data["gpu"] = {"name": trt_context["gpu_name"], "compute_capability": trt_context["compute_capability"]}
    return data


def _policy_summary(settings: BuildSettings) -> dict[str, Any]:
    if settings.precision == Precision.FP32:
        return {"kind": "fp32"}
    if settings.precision == Precision.FP16:
        return {"kind": "fp16 with fp32 islands, fp32 inputs/outputs", **settings.to_json()["fp16"]}
    if settings.precision == Precision.BF16:
        return {"kind": "bf16 OpenVINO inference precision hint on the fp32 graph"}
    if settings.runtime == Runtime.OPENVINO and settings.openvino.int8_method.value == "nncf":
        return {"kind": "int8 NNCF post-training quantization of the fp32 graph", **settings.to_json()["int8"],
                **settings.to_json()["openvino"]}
    return {"kind": "int8 QDQ, per-channel weights", **settings.to_json()["int8"]}


