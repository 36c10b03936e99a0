"""The TensorRT side of `build_engine`: precision graph, plugin preparation, cached plan build."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from acar_deploy.artifacts import sha256_file
from acar_deploy.engines.builds import fp32_islands
from acar_deploy.engines.builds.cache import EngineCache, EngineCacheKey
from acar_deploy.engines.runners.trt import (
    TrtBuildRequest,
    build_plan,
    has_precision_flags,
    import_tensorrt,
    profile_shapes,
)
from acar_deploy.engines.settings import BuildSettings
from acar_deploy.errors import InputError
from acar_deploy.formats import ExportManifest, GraphPartRecord


def has_plugin_nodes(graph: Any) -> bool:
    return bool(fp32_islands.custom_domain_nodes(graph))


def refuse_int8_plugin_exports(export: ExportManifest) -> None:
    """TensorRT INT8 builds of plugin exports are refused, before any calibration work.

    INT8 quantization (ONNX Runtime's quantize_static) needs every node's definition, so it inlines
    the plugin nodes' local functions: the engine would silently run the standard-op bodies instead
    of ROIAlign_TRT / acar::ACAR_HR2O. Until quantizing around the plugin nodes is verified on a GPU,
    the build says so instead.
    """
    import onnx

    from acar_deploy.export.plugin_nodes import custom_nodes

    for name in export.parts:
        path = export.graph_path(name)
        ops = sorted({n.op_type for n in custom_nodes(onnx.load(str(path), load_external_data=False))})
        if ops:
            raise InputError(
                f"{path}: TensorRT INT8 builds of plugin exports are not supported ({', '.join(ops)} nodes would be "
                "inlined and the engine would not use the plugins): build --precision fp16/fp32, or re-export with "
                "--roi-align onnx --hr2o onnx for INT8"
            )


def fp16_graph_for_tensorrt(settings: BuildSettings, source: Any) -> tuple[Any, dict[str, Any]]:
    """TensorRT 11: the mixed-precision fp16 graph. TensorRT 10: the fp32 graph plus the fp32 node list
    that `build_plan` pins with layer precision constraints under `BuilderFlag.FP16`.
    Plugin nodes are never inlined here (the plugins must survive); they stay fp32."""
    from acar_deploy.engines.builds.fp16 import convert_to_fp16, fp32_nodes_for_fp16

    policy = settings.fp16
    if has_plugin_nodes(source):
        policy = replace(policy, inline_local_functions=False)
    trt = import_tensorrt("building a TensorRT engine")
    if has_precision_flags(trt):
        named = fp32_islands.ensure_node_names(source)
        reasons = fp32_nodes_for_fp16(named, policy)
        nodes = fp32_islands.unique(n for v in reasons.values() for n in v)
        return named, {"fp32_nodes": nodes, "fp32_reasons": reasons, "tensorrt_fp16": "BuilderFlag.FP16 + fp32 layer constraints"}
    graph, report = convert_to_fp16(source, policy)
    return graph, {**report.to_json(), "tensorrt_fp16": "strongly typed mixed-precision graph"}


def build_part_plan(
    settings: BuildSettings, trt_context: dict[str, Any], part: GraphPartRecord, graph: Any, policy: dict[str, Any], target: Path
) -> bool:
    """Write the part's plan to `target`; True when it came from the engine cache."""
    import onnx

    if has_plugin_nodes(graph):
        from acar_deploy.export.plugin_nodes import prepare_for_tensorrt

        graph = prepare_for_tensorrt(graph)
    fp32_nodes = policy.get("fp32_nodes")
    with tempfile.TemporaryDirectory(prefix="acar-trt-") as tmp:
        onnx_path = Path(tmp) / f"{part.name}.onnx"
        onnx.save_model(graph, str(onnx_path))
        request = TrtBuildRequest(
            onnx_path=onnx_path,
            precision=settings.precision,
            profiles=profile_shapes([t.to_dict() for t in part.inputs], settings.trt.clips, settings.trt.rois,
                                    f"{settings.export_dir}/{part.file}", entries=settings.trt.bank_entries),
            workspace_bytes=int(settings.trt.workspace_gib * (1 << 30)),
            fp32_layers=tuple(fp32_nodes) if isinstance(fp32_nodes, list) else (),
            timing_cache=settings.trt.timing_cache,
        )
        key = EngineCacheKey(
            graph_sha256=sha256_file(onnx_path),
            settings=request.cache_settings(),
            tensorrt_version=trt_context["version"],
            gpu_name=trt_context["gpu_name"],
            compute_capability=trt_context["compute_capability"],
        )
        result = EngineCache(settings.trt.engine_cache_dir).get_or_build(key, lambda: build_plan(request))
    target.write_bytes(result.plan)
    return result.hit
