"""Build a Triton Inference Server model repository from an export folder (and engine folders).

A model set is three models: `<name>_backbone` and `<name>_head` (`onnxruntime_onnx` from the export
or an ONNX Runtime int8/fp16 engine folder, `tensorrt_plan` from a TensorRT engine folder, the
`openvino` backend with `model.xml` + `model.bin` from an OpenVINO engine folder) and
`<name>`, a Python-backend model that calls backbone then head through BLS and skips both for a clip
with zero boxes (see `triton_python_model.py` for why this is not an ensemble). One engine folder
replaces the export's graphs; several engine folders give one set each, `<name>_<runtime>_<precision>`.
An acfb (feature-bank) export gives a bank set instead: `<name>_backbone`, `<name>_bank_kv`,
`<name>_bank_head` and the pipeline `<name>`, which takes each keyframe's bank window as either its entries
(projected by `bank_kv`, once per entry thanks to the pipeline's K/V cache) or stored keys and values.
Every `config.pbtxt` is a tritonclient `ModelConfig` protobuf message serialised with `text_format`.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from acar_deploy import __version__
from acar_deploy.artifacts import atomic_dir, sha256_file, write_json
from acar_deploy.errors import InputError, MissingExtraError
from acar_deploy.formats import EngineRecord, ExportManifest, GraphPartRecord
from acar_deploy.formats.manifest import BANK_PARTS

PARTS = ("backbone", "head")
BANK_SET_PARTS = ("backbone", *BANK_PARTS)  # an acfb export's set: backbone, bank_kv, bank_head
PART_TENSORS = {
    "backbone": (("clips",), ("context",)),
    "head": (("context", "rois"), ("logits",)),
    "bank_kv": (("bank_entries",), ("bank_keys", "bank_values")),
    "bank_head": (("context", "rois", "bank_keys", "bank_values", "bank_window"), ("logits",)),
}
DEFAULT_BANK_CACHE_ENTRIES = 1024  # K/V kept per pipeline instance (R50: ~0.8 MB each at depth 2)
# AVA ids 1..14 are the PERSON_MOVEMENT (pose) classes; exactly one of them applies to a person.
AVA_POSE_MAX_ID = 14
PYTHON_MODEL_SOURCE = Path(__file__).with_name("triton_python_model.py")
REPOSITORY_RECORD = "acar_deploy.json"
LABELS_FILE = "labels.txt"

_TRITON_TYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "bfloat16": "TYPE_BF16",
    "float64": "TYPE_FP64",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
}
_ONNX_TYPES = {
    "FLOAT": "float32",
    "FLOAT16": "float16",
    "BFLOAT16": "bfloat16",
    "DOUBLE": "float64",
    "INT64": "int64",
    "INT32": "int32",
    "INT8": "int8",
    "UINT8": "uint8",
    "BOOL": "bool",
}
_ONNX_SINGLE_FILE_LIMIT = 2 * 1024**3 - 1024**2  # protobuf's 2 GiB cap, with room for the graph
OPENVINO_BACKEND = "openvino"  # a backend (config `backend:`), not a platform like the other two
# Each model's file(s) in its version folder, as each backend looks for them by default.
MODEL_FILES = {"onnxruntime_onnx": ("model.onnx",), "tensorrt_plan": ("model.plan",),
               OPENVINO_BACKEND: ("model.xml", "model.bin")}


class InstanceKind(str, Enum):
    """Where backbone/head instances run. `auto` (KIND_AUTO) lets the server pick: GPU when it has one,
    CPU otherwise, so one repository loads on a CPU machine and in a GPU container alike."""

    auto = "auto"
    cpu = "cpu"
    gpu = "gpu"


@dataclass(frozen=True)
class TritonSettings:
    """How the repository's models are scheduled; the CLI builds this, the library takes it."""

    name: str = "acar"
    max_batch: int = 4  # backbone max_batch_size; 0 disables batching (and dynamic batching)
    instances: int = 1
    kind: InstanceKind = InstanceKind.auto
    max_queue_delay_us: int = 2000
    bank_cache_entries: int = DEFAULT_BANK_CACHE_ENTRIES  # acfb sets: bank entries whose K/V a pipeline keeps

    def __post_init__(self) -> None:
        if self.max_batch < 0 or self.instances < 1 or self.max_queue_delay_us < 0:
            raise InputError(
                f"--max-batch must be >= 0 and --instances >= 1 (got {self.max_batch}, {self.instances})"
            )
        if self.bank_cache_entries < 0:
            raise InputError(f"--bank-cache must be >= 0 entries (got {self.bank_cache_entries})")
        if not self.name.replace("_", "").replace("-", "").isalnum():
            raise InputError(f"model name {self.name!r} must be letters, digits, '_' or '-'")


@dataclass(frozen=True)
class TritonTensor:
    name: str
    dtype: str  # numpy name, e.g. "float32"
    dims: tuple[int, ...]  # -1 for a dynamic dimension


@dataclass(frozen=True)
class PartSource:
    """Where one part (backbone or head) of the repository comes from."""

    part: str  # backbone, head, bank_kv or bank_head
    path: Path
    platform: str  # "onnxruntime_onnx", "tensorrt_plan" or "openvino" (the backend)
    origin: str  # "export" or the engine folder's runtime-precision label
    inputs: tuple[TritonTensor, ...]
    outputs: tuple[TritonTensor, ...]
    max_clips: int = 0  # a TensorRT plan's optimization-profile max for B (0: no limit known)
    max_rois: int = 0  # ... and for R
    max_entries: int = 0  # ... and for M of the bank parts (settings.trt.bank_entries)
    parameters: tuple[tuple[str, str], ...] = ()  # backend parameters (the OpenVINO compile options)

    @property
    def files(self) -> tuple[Path, ...]:
        """The file(s) copied into the version folder, in MODEL_FILES order (IR: .xml then .bin)."""
        return (self.path, self.path.with_suffix(".bin")) if self.platform == OPENVINO_BACKEND else (self.path,)


@dataclass(frozen=True)
class TritonModelEntry:
    name: str
    platform: str  # "onnxruntime_onnx", "tensorrt_plan", "openvino" or "python"
    file: str  # relative to the repository
    origin: str


@dataclass(frozen=True)
class TritonRepository:
    path: Path
    models: tuple[TritonModelEntry, ...]
    classes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "models": [asdict(m) for m in self.models], "classes": list(self.classes)}


def _model_config_module():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise MissingExtraError("tritonclient", "triton", "Building a Triton model repository") from exc
    return model_config_pb2


def _spec_dims(shape: list[Any]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)


def _record_specs(part: GraphPartRecord) -> tuple[tuple[TritonTensor, ...], tuple[TritonTensor, ...]]:
    """Triton tensors of a part as its record (engine.json or manifest.json) lists them."""
    return tuple(
        tuple(TritonTensor(t.name, t.dtype, _spec_dims(list(t.shape))) for t in side)  # type: ignore[misc]
        for side in (part.inputs, part.outputs)
    )  # type: ignore[return-value]


def onnx_io(path: Path) -> tuple[tuple[TritonTensor, ...], tuple[TritonTensor, ...]]:
    """Graph inputs (initializers excluded) and outputs with element types and dims (-1 = dynamic)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError / OSError variants
        raise InputError(f"{path}: not a readable ONNX file ({exc}); re-export it") from exc
    initializers = {t.name for t in model.graph.initializer}

    def spec(value: Any) -> TritonTensor:
        tensor = value.type.tensor_type
        elem = onnx.TensorProto.DataType.Name(tensor.elem_type)
        if elem not in _ONNX_TYPES:
            raise InputError(f"{path}: tensor {value.name} has element type {elem}, which Triton cannot serve")
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        return TritonTensor(value.name, _ONNX_TYPES[elem], dims)

    inputs = tuple(spec(v) for v in model.graph.input if v.name not in initializers)
    return inputs, tuple(spec(v) for v in model.graph.output)


def _check_tensor_names(source: PartSource) -> None:
    want_in, want_out = PART_TENSORS[source.part]
    have_in = {t.name for t in source.inputs}
    have_out = {t.name for t in source.outputs}
    if not set(want_in) <= have_in or not set(want_out) <= have_out:
        raise InputError(
            f"{source.path}: the {source.part} must have inputs {list(want_in)} and outputs {list(want_out)} "
            f"(has {sorted(have_in)} -> {sorted(have_out)}); re-export with acar-deploy"
        )


def served_parts(manifest: ExportManifest) -> tuple[str, ...]:
    """backbone + head, or backbone + bank_kv + bank_head for an acfb (feature-bank) export."""
    return BANK_SET_PARTS if manifest.bank_geometry() is not None else PARTS


def _export_parts(export_dir: Path) -> tuple[ExportManifest, dict[str, PartSource]]:
    export = ExportManifest.load(export_dir)
    export.verify_graphs()
    parts = {}
    for part in served_parts(export):
        if part not in export.parts:
            graphs = "backbone, bank_kv and bank_head" if part in BANK_SET_PARTS[1:] else "backbone and head"
            raise InputError(
                f"{export.path}: no {part} part (has {sorted(export.parts)}); Triton serves the "
                f"split graphs: re-export with the {graphs} parts (split or all)"
            )
        path = export.graph_path(part)
        inputs, outputs = onnx_io(path)
        parts[part] = PartSource(part, path, "onnxruntime_onnx", "export", inputs, outputs)
    return export, parts


def _engine_parts(engine_dir: Path, export_manifest: ExportManifest) -> dict[str, PartSource]:
    """The parts (backbone/head, or backbone/bank_kv/bank_head) an engine folder lists in engine.json:
    `.plan` -> TensorRT, `.onnx` -> ORT, `.xml` (OpenVINO IR, with its `.bin`) -> Triton's OpenVINO backend."""
    engine = EngineRecord.load(engine_dir)
    engine.verify_graphs()
    copy = engine.export_manifest
    for key, mine, theirs in (("model_name", copy.model_name, export_manifest.model_name),
                              ("checkpoint_sha256", copy.checkpoint_sha256, export_manifest.checkpoint_sha256)):
        if mine != theirs:
            raise InputError(
                f"{copy.path}: {key} {mine!r} differs from the export's {theirs!r}; pass engines built from this export"
            )
    label = engine.label
    max_clips = engine.profile_max("clips")
    max_rois = engine.profile_max("rois")
    parts = {}
    wanted = served_parts(export_manifest)
    for part in wanted:
        if part not in engine.parts:
            continue
        path = engine.graph_path(part)
        if path.suffix in (".plan", ".xml"):
            record = engine.parts[part]
            if not (record.inputs and record.outputs):
                record = copy.parts.get(part, record)
            if not (record.inputs and record.outputs):
                raise InputError(f"{engine.path}: parts.{part} lacks inputs/outputs (name, dtype, shape); rebuild")
            inputs, outputs = _record_specs(record)
            if path.suffix == ".xml":
                if not path.with_suffix(".bin").is_file():
                    raise InputError(f"{path.with_suffix('.bin')}: the IR's weights are missing; rebuild the engine")
                parts[part] = PartSource(part, path, OPENVINO_BACKEND, label or engine_dir.name, inputs, outputs,
                                         parameters=openvino_parameters(engine.openvino["compile_options"]))
                continue
            parts[part] = PartSource(part, path, "tensorrt_plan", label or engine_dir.name, inputs, outputs, max_clips,
                                     max_rois, engine.profile_max("bank_entries") if part in BANK_PARTS else 0)
        elif path.suffix == ".onnx":
            inputs, outputs = onnx_io(path)
            parts[part] = PartSource(part, path, "onnxruntime_onnx", label or engine_dir.name, inputs, outputs)
        else:
            raise InputError(f"{path}: Triton serves .plan (TensorRT), .xml (OpenVINO) or .onnx engine files, "
                             f"not {path.suffix!r}")
    if not parts:
        raise InputError(f"{engine_dir}: holds no {'/'.join(wanted)} part (only {sorted(engine.parts)}); "
                         "build split engines")
    return parts


def openvino_parameters(compile_options: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The OpenVINO backend's config parameters for an engine's recorded compile options: the
    latency hint and stream count as they are; a bf16 precision hint as `HINT_BF16: YES` (the backend
    has no parameter that pins f32, so an fp32 engine runs at the server CPU's default precision)."""
    params = [(key, str(compile_options[key])) for key in ("PERFORMANCE_HINT", "NUM_STREAMS") if key in compile_options]
    if str(compile_options.get("INFERENCE_PRECISION_HINT", "")).lower() == "bf16":
        params.append(("HINT_BF16", "YES"))
    return tuple(params)


@dataclass(frozen=True)
class ModelSet:
    """One pipeline model and the backbone/head (or backbone/bank_kv/bank_head) models it calls."""

    name: str
    origin: str
    parts: dict[str, PartSource]

    @property
    def bank(self) -> bool:
        return "bank_head" in self.parts


def _engine_label(engine_dir: Path) -> str:
    label = EngineRecord.load(engine_dir).label
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def resolve_model_sets(
    export_dir: Path, engine_dirs: tuple[Path, ...], name: str
) -> tuple[ExportManifest, tuple[ModelSet, ...]]:
    """Which graphs each pipeline serves: the export's; or one engine's (named `name`); or, for several
    engines, one pipeline per engine named `name_<runtime>_<precision>` so variants sit side by side."""
    manifest, export_parts = _export_parts(export_dir)
    if not engine_dirs:
        sets = [ModelSet(name, "export", export_parts)]
    else:
        sets = []
        for engine_dir in engine_dirs:
            engine_parts = _engine_parts(engine_dir, manifest)
            set_name = name if len(engine_dirs) == 1 else f"{name}_{_engine_label(engine_dir)}"
            sets.append(ModelSet(set_name, str(engine_dir), {**export_parts, **engine_parts}))
        names = [s.name for s in sets]
        if len(set(names)) != len(names):
            raise InputError(
                f"engines {[str(e) for e in engine_dirs]} give the same model names {names}: pass engines that "
                "differ in runtime or precision"
            )
    for model_set in sets:
        for source in model_set.parts.values():
            _check_tensor_names(source)
    return manifest, tuple(sets)


def _tensor(spec: TritonTensor) -> dict[str, Any]:
    if spec.dtype not in _TRITON_TYPES:
        raise InputError(f"tensor {spec.name}: dtype {spec.dtype} has no Triton type")
    return {"name": spec.name, "data_type": _TRITON_TYPES[spec.dtype], "dims": list(spec.dims)}


def _by_name(specs: tuple[TritonTensor, ...], name: str) -> TritonTensor:
    return next(s for s in specs if s.name == name)


def _instance_kind(pb: Any, kind: InstanceKind) -> int:
    kinds = {InstanceKind.auto: "KIND_AUTO", InstanceKind.cpu: "KIND_CPU", InstanceKind.gpu: "KIND_GPU"}
    return pb.ModelInstanceGroup.Kind.Value(kinds[kind])


def _new_config(pb: Any, source: PartSource, name: str, max_batch_size: int) -> Any:
    """A ModelConfig naming the platform (ORT, TensorRT) or backend (OpenVINO, with its parameters)."""
    if source.platform != OPENVINO_BACKEND:
        return pb.ModelConfig(name=name, platform=source.platform, max_batch_size=max_batch_size)
    config = pb.ModelConfig(name=name, backend=OPENVINO_BACKEND, max_batch_size=max_batch_size)
    for key, value in source.parameters:
        config.parameters[key].string_value = value
    return config


def _add_instances(pb: Any, config: Any, source: PartSource, settings: TritonSettings) -> None:
    """The OpenVINO backend runs on the CPU only: its instances are KIND_CPU whatever --kind says."""
    kind = pb.ModelInstanceGroup.KIND_CPU if source.platform == OPENVINO_BACKEND else _instance_kind(pb, settings.kind)
    config.instance_group.add(kind=kind, count=settings.instances)


def backbone_config(source: PartSource, settings: TritonSettings, name: str):
    """Batched over clips when the graph's first dim is dynamic: Triton then strips it from `dims`.
    OpenVINO IR is served unbatched: the backend rejects a batch smaller than max_batch_size unless
    it pads, so the pipeline sends each request's clips as one [B, ...] tensor instead."""
    pb = _model_config_module()
    clips, context = _by_name(source.inputs, "clips"), _by_name(source.outputs, "context")
    batched = (settings.max_batch > 0 and clips.dims[:1] == (-1,) and context.dims[:1] == (-1,)
               and source.platform != OPENVINO_BACKEND)
    if batched and source.max_clips and settings.max_batch > source.max_clips:
        raise InputError(
            f"{source.path}: --max-batch {settings.max_batch} exceeds the plan's profile max of "
            f"{source.max_clips} clips (engine.json settings.trt.clips): pass --max-batch {source.max_clips} "
            "or rebuild the engine with a larger clips range"
        )
    strip = 1 if batched else 0
    config = _new_config(pb, source, f"{name}_backbone", settings.max_batch if batched else 0)
    for spec, target in ((clips, config.input), (context, config.output)):
        fields = _tensor(spec)
        target.add(name=fields["name"], data_type=pb.DataType.Value(fields["data_type"]), dims=fields["dims"][strip:])
    if batched:
        config.dynamic_batching.max_queue_delay_microseconds = settings.max_queue_delay_us
    _add_instances(pb, config, source, settings)
    return config


def _unbatched_config(source: PartSource, settings: TritonSettings, name: str):
    """max_batch_size 0 with the part's tensors as PART_TENSORS names them (dims as the graph has them)."""
    pb = _model_config_module()
    config = _new_config(pb, source, name, 0)
    inputs, outputs = PART_TENSORS[source.part]
    for names, specs, target in ((inputs, source.inputs, config.input), (outputs, source.outputs, config.output)):
        for tensor in names:
            fields = _tensor(_by_name(specs, tensor))
            target.add(name=tensor, data_type=pb.DataType.Value(fields["data_type"]), dims=fields["dims"])
    _add_instances(pb, config, source, settings)
    return config


def head_config(source: PartSource, settings: TritonSettings, name: str):
    """No batch dim: `rois` [R, 5] indexes clips of `context` [B, ...], so max_batch_size is 0."""
    return _unbatched_config(source, settings, f"{name}_head")


def bank_kv_config(source: PartSource, settings: TritonSettings, name: str):
    """bank_entries [M, C, h, w] -> bank_keys, bank_values [depth, M, C, h, w]; unbatched: M is the
    pipeline's count of entries new to its K/V cache, one call per request."""
    return _unbatched_config(source, settings, f"{name}_bank_kv")


def bank_head_config(source: PartSource, settings: TritonSettings, name: str):
    """context, rois, bank_keys, bank_values, bank_window [R, M] -> logits; unbatched like the head."""
    return _unbatched_config(source, settings, f"{name}_bank_head")


PART_CONFIGS = {"head": head_config, "bank_kv": bank_kv_config, "bank_head": bank_head_config}


def num_pose_classes(classes: list[dict[str, Any]]) -> int:
    return sum(1 for c in classes if int(c["id"]) <= AVA_POSE_MAX_ID)


def pipeline_config(
    parts: dict[str, PartSource],
    manifest: ExportManifest,
    settings: TritonSettings,
    backbone_max_batch: int,
    name: str | None = None,
):
    """The Python (BLS) model; it runs on CPU and leaves the device work to the models it calls.

    A bank set's pipeline also takes `bank_window` [R, M] bool and, as optional inputs, either
    `bank_entries` [M, C, h, w] or `bank_keys` + `bank_values` [depth, M, C, h, w].
    """
    pb = _model_config_module()
    bank = "bank_head" in parts
    head = parts["bank_head" if bank else "head"]
    clips = _by_name(parts["backbone"].inputs, "clips")
    rois = _by_name(head.inputs, "rois")
    logits = _by_name(head.outputs, "logits")
    classes = manifest.classes
    num_classes = logits.dims[-1]
    if num_classes > 0 and len(classes) != num_classes:
        raise InputError(
            f"{manifest.path} lists {len(classes)} classes but the head outputs {num_classes} logits; re-export"
        )
    name = name or settings.name
    config = pb.ModelConfig(name=name, backend="python", max_batch_size=0)
    inputs = [(clips, False), (rois, False)]
    if bank:
        entries = _by_name(parts["bank_kv"].inputs, "bank_entries")
        keys, values = (_by_name(head.inputs, n) for n in ("bank_keys", "bank_values"))
        inputs += [(_by_name(head.inputs, "bank_window"), False), (entries, True), (keys, True), (values, True)]
    for spec, optional in inputs:
        fields = _tensor(spec)
        config.input.add(name=spec.name, data_type=pb.DataType.Value(fields["data_type"]), dims=list(spec.dims),
                         optional=optional)
    for output in ("logits", "scores"):
        config.output.add(name=output, data_type=pb.TYPE_FP32, dims=list(logits.dims), label_filename=LABELS_FILE)
    config.instance_group.add(kind=pb.ModelInstanceGroup.KIND_CPU, count=settings.instances)
    parameters = {
        "backbone_model": f"{name}_backbone",
        "backbone_max_batch": str(backbone_max_batch),
        "head_max_rois": str(head.max_rois),
        "num_classes": str(len(classes)),
        "num_pose_classes": str(num_pose_classes(classes)),
        "class_ids": json.dumps([int(c["id"]) for c in classes]),
        "class_names": json.dumps([str(c["name"]) for c in classes]),
        "export_model": manifest.model_name,
        "input_size": json.dumps(list(manifest.input_size)),
        "normalization": json.dumps(manifest.normalization.to_dict()),
    }
    if bank:
        geometry = manifest.bank_geometry()
        parameters.update({
            "bank_kv_model": f"{name}_bank_kv",
            "bank_head_model": f"{name}_bank_head",
            "bank_entry_shape": json.dumps([geometry.channels, *geometry.size]),
            "bank_depth": str(geometry.depth),
            "bank_cache_entries": str(settings.bank_cache_entries),
            # TensorRT profiles start at M = 1 and OpenVINO's bank_head is wrong at M = 0 (docs/bank.md):
            # an empty window then runs as one all-masked zero entry, as their runners do.
            "bank_head_min_entries": "0" if head.platform == "onnxruntime_onnx" else "1",
            "bank_max_entries": str(head.max_entries),  # a TensorRT bank_head's profile max M (0: none)
        })
    else:
        parameters["head_model"] = f"{name}_head"
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return config


def _write_config(model_dir: Path, config: Any) -> None:
    from google.protobuf import text_format

    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(config))


def _copy_onnx(source: Path, target: Path) -> None:
    """One self-contained file: Triton loads `model.onnx` alone, so external weights are embedded."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    head = onnx.load(str(source), load_external_data=False)
    if not any(uses_external_data(t) for t in head.graph.initializer):
        shutil.copyfile(source, target)
        return
    model = onnx.load(str(source), load_external_data=True)
    if model.ByteSize() > _ONNX_SINGLE_FILE_LIMIT:
        raise InputError(f"{source}: weights exceed 2 GiB and cannot be embedded in one model.onnx for Triton")
    onnx.save_model(model, str(target))


def build_model_repository(
    export_dir: str | Path,
    out: str | Path,
    engines: tuple[str | Path, ...] = (),
    settings: TritonSettings | None = None,
    force: bool = False,
) -> TritonRepository:
    """Write `out/` (atomically): per model set, backbone and head models plus the Python pipeline model."""
    settings = settings or TritonSettings()
    export_dir = Path(export_dir)
    manifest, sets = resolve_model_sets(export_dir, tuple(Path(e) for e in engines), settings.name)
    if settings.kind is InstanceKind.cpu:
        plans = [str(p.path) for s in sets for p in s.parts.values() if p.platform == "tensorrt_plan"]
        if plans:
            raise InputError(f"{plans[0]}: TensorRT plans run on GPU instances only: pass --kind gpu")
    if settings.kind is InstanceKind.gpu:
        irs = [str(p.path) for s in sets for p in s.parts.values() if p.platform == OPENVINO_BACKEND]
        if irs:
            raise InputError(f"{irs[0]}: Triton's OpenVINO backend runs on the CPU only: pass --kind auto or cpu")
    classes = tuple(str(c["name"]) for c in manifest.classes)
    entries: list[TritonModelEntry] = []
    with atomic_dir(out, force=force) as tmp:
        for model_set in sets:
            entries += _write_model_set(tmp, model_set, manifest, settings, export_dir, tuple(engines))
    return TritonRepository(Path(out), tuple(entries), classes)


def _write_model_set(
    root: Path,
    model_set: ModelSet,
    manifest: ExportManifest,
    settings: TritonSettings,
    export_dir: Path,
    engines: tuple[str | Path, ...],
) -> list[TritonModelEntry]:
    backbone = backbone_config(model_set.parts["backbone"], settings, model_set.name)
    configs = {"backbone": backbone}
    for part, source in model_set.parts.items():
        if part != "backbone":
            configs[part] = PART_CONFIGS[part](source, settings, model_set.name)
    # The pipeline rejects a batch the backbone cannot take with a clear message, not a backend error.
    max_clips = backbone.max_batch_size or model_set.parts["backbone"].max_clips
    pipeline = pipeline_config(model_set.parts, manifest, settings, max_clips, model_set.name)
    entries = []
    record_models = {}
    for part, source in model_set.parts.items():
        model_dir = root / configs[part].name
        version_dir = model_dir / "1"
        version_dir.mkdir(parents=True)
        names = MODEL_FILES[source.platform]
        target = version_dir / names[0]
        if source.platform == "onnxruntime_onnx":
            _copy_onnx(source.path, target)
        else:  # a plan, or the IR's .xml and .bin (the backend reads model.xml's weights from model.bin)
            for file, name in zip(source.files, names, strict=True):
                shutil.copyfile(file, version_dir / name)
        _write_config(model_dir, configs[part])
        relative = str(target.relative_to(root))
        entries.append(TritonModelEntry(configs[part].name, source.platform, relative, source.origin))
        record_models[configs[part].name] = {
            "part": part,
            "platform": source.platform,
            "file": relative,
            "source": str(source.path),
            "source_sha256": sha256_file(source.path),
        }
    model_dir = root / model_set.name
    (model_dir / "1").mkdir(parents=True)
    shutil.copyfile(PYTHON_MODEL_SOURCE, model_dir / "1" / "model.py")
    _write_config(model_dir, pipeline)
    (model_dir / LABELS_FILE).write_text("".join(f"{c['name']}\n" for c in manifest.classes))
    entries.append(TritonModelEntry(model_set.name, "python", f"{model_set.name}/1/model.py", "acar_deploy"))
    write_json(
        model_dir / REPOSITORY_RECORD,
        {
            "format": "acar-deploy-triton",
            "format_version": 1,
            "export": str(export_dir),
            "engines": [str(e) for e in engines],
            "served_from": model_set.origin,
            "bank": model_set.bank,  # an acfb set: the pipeline takes bank_window and entries or K/V
            "export_model": manifest.model_name,
            "checkpoint_sha256": manifest.checkpoint_sha256,
            "settings": {**asdict(settings), "kind": settings.kind.value},
            "models": record_models,
            "versions": {"acar_deploy": __version__},
        },
    )
    return entries


def check_model_repository(repository: Path) -> list[str]:
    """The model names of a Triton model repository; InputError naming the folder or the `config.pbtxt`
    (and its line) when it is not one, so that `serve` refuses it before starting a server.

    Every non-hidden sub-folder is a model and needs a `config.pbtxt` that parses as a `ModelConfig`
    (checked when tritonclient is installed; the server reads it the same way).
    """
    repository = Path(repository)
    fix = "write the repository with `acar-deploy triton EXPORT --out REPO`"
    models = sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not models:
        raise InputError(f"{repository}: not a Triton model repository (no <model>/config.pbtxt folders); {fix}")
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        text_format = model_config_pb2 = None
    for model in models:
        config = model / "config.pbtxt"
        if not config.is_file():
            raise InputError(f"{config}: not found; every model folder of a repository needs one; {fix}")
        if model_config_pb2 is None:
            continue
        try:
            parsed = text_format.Parse(config.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())
        except text_format.ParseError as exc:
            line = exc.GetLine() if exc.GetLine() is not None else "?"
            reason = str(exc).split(" : ", 1)[-1]
            raise InputError(f"{config}:{line}: not a Triton model config ({reason}); {fix}") from None
        except UnicodeDecodeError:
            raise InputError(f"{config}: not UTF-8 text; {fix}") from None
        if parsed.name and parsed.name != model.name:
            raise InputError(f"{config}: field 'name' is {parsed.name!r} but the folder is {model.name!r}; {fix}")
    return [m.name for m in models]
