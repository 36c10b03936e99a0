"""manifest.json / engine.json: one typed reader each; a bad field fails with one line naming file and field."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from acar_deploy.errors import InputError
from acar_deploy.formats import EngineRecord, ExportManifest, Precision, Runtime, folder_kind, verify_folder

CLASSES = [{"id": 1, "name": "bend/bow (at the waist)"}, {"id": 3, "name": "crouch/kneel"}]
MANIFEST = {
    "format": "acar-deploy-export", "format_version": 1, "model_name": "tiny",
    "config": {"head": {"num_classes": 2}, "input": {"num_frames": 8}},
    "dynamic_size": False, "input_size": [64, 80],
    "context": {"channels": 16, "size": [4, 5], "stride": 16},
    "normalization": {"norm_value": 255.0, "mean": [0.45, 0.45, 0.45], "std": [0.225, 0.225, 0.225]},
    "classes": CLASSES, "checkpoint_sha256": None,
    "parts": {
        "backbone": {"file": "backbone.onnx", "sha256": None,
                     "inputs": [{"name": "clips", "dtype": "float32", "shape": ["B", 3, 8, 64, 80]}],
                     "outputs": [{"name": "context", "dtype": "float32", "shape": ["B", 16, 4, 5]}]},
        "head": {"file": "head.onnx",
                 "inputs": [{"name": "context", "dtype": "float32", "shape": ["B", 16, 4, 5]},
                            {"name": "rois", "dtype": "float32", "shape": ["R", 5]}],
                 "outputs": [{"name": "logits", "dtype": "float32", "shape": ["R", 2]}]},
    },
}
ENGINE = {
    "format": "acar-deploy-engine", "format_version": 1, "runtime": "ort", "precision": "int8",
    "parts": {"backbone": {"file": "backbone.onnx", "inputs": [], "outputs": []},
              "head": {"file": "head.onnx", "inputs": [], "outputs": []}},
    "settings": {"trt": {"clips": {"min": 1, "opt": 1, "max": 4}, "rois": {"min": 1, "opt": 8, "max": 32}}},
}


def _folder(tmp_path: Path, manifest: dict, engine: dict | None = None) -> Path:
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("backbone.onnx", "head.onnx"):
        (folder / name).write_bytes(name.encode())
    (folder / "manifest.json").write_text(json.dumps(manifest))
    if engine is not None:
        (folder / "engine.json").write_text(json.dumps(engine))
    return folder


def _set(data: dict, dotted: str, value) -> dict:
    data = copy.deepcopy(data)
    *path, last = dotted.split(".")
    node = data
    for key in path:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return data


_DELETE = object()


def test_a_valid_manifest_gives_the_derived_facts(tmp_path):
    manifest = ExportManifest.load(_folder(tmp_path, MANIFEST))
    geometry = manifest.geometry()
    assert (geometry.input_size, geometry.context_size, geometry.context_channels) == ((64, 80), (4, 5), 16)
    assert (geometry.num_classes, geometry.num_frames, geometry.context_stride) == (2, 8, 16)
    assert manifest.parts["head"].input_names == ("context", "rois")
    assert manifest.parts["head"].shape_of("logits") == ["R", 2]


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("format_version", _DELETE, "field 'format_version' is missing"),
        ("model_name", 3, "field 'model_name' should be a string"),
        ("input_size", [64], "field 'input_size' should be a list of 2 integers"),
        ("dynamic_size", "no", "field 'dynamic_size' should be true/false"),
        ("normalization.mean", [0.4, 0.4], "field 'normalization.mean' should be a list of 3 numbers"),
        ("normalization", _DELETE, "field 'normalization' is missing"),
        ("classes", {"a": 1}, "field 'classes' should be a list"),
        ("config", [], "field 'config' should be an object"),
        ("config.head.num_classes", "60", "field 'config.head.num_classes' should be an integer"),
        ("parts.head.file", _DELETE, "field 'parts.head.file' is missing"),
        ("parts.backbone.sha256", 5, "field 'parts.backbone.sha256' should be a string"),
        ("parts", {}, "field 'parts' needs backbone+head, fused or backbone+bank_kv+bank_head"),
    ],
)
def test_a_bad_manifest_field_is_one_line_naming_file_and_field(tmp_path, field, value, problem):
    folder = _folder(tmp_path, _set(MANIFEST, field, value))
    with pytest.raises(InputError) as caught:
        ExportManifest.load(folder)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{folder / 'manifest.json'}: {problem}")


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("runtime", _DELETE, "field 'runtime' is missing"),
        ("runtime", "tensorrt", "field 'runtime' is 'tensorrt', not one of"),
        ("precision", 16, "field 'precision' should be a string"),
        ("parts.backbone.file", None, "field 'parts.backbone.file' should be a string"),
        ("settings.trt", [1, 2], "field 'settings.trt' should be an object"),
        ("format", "acar-deploy-export", "field 'format' is not 'acar-deploy-engine'"),
    ],
)
def test_a_bad_engine_field_is_one_line_naming_file_and_field(tmp_path, field, value, problem):
    folder = _folder(tmp_path, MANIFEST, _set(ENGINE, field, value))
    with pytest.raises(InputError) as caught:
        EngineRecord.load(folder)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{folder / 'engine.json'}: {problem}")


def test_engine_record_reads_runtime_precision_and_profile(tmp_path):
    folder = _folder(tmp_path, MANIFEST, ENGINE)
    record = EngineRecord.load(folder)
    assert (record.runtime, record.precision) == (Runtime.ORT, Precision.INT8)
    assert (record.profile_max("clips"), record.profile_max("rois"), record.num_classes) == (4, 32, 2)
    assert folder_kind(folder) == "engine" and folder_kind(tmp_path) is None


def test_write_round_trips_and_is_atomic(tmp_path):
    folder = _folder(tmp_path, MANIFEST)
    manifest = ExportManifest.load(folder)
    target = manifest.write(tmp_path / "copy.json")
    assert json.loads(target.read_text()) == MANIFEST
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.json", "folder"]  # no temp file left


def test_verify_graphs_names_a_modified_graph(tmp_path):
    import hashlib

    data = _set(MANIFEST, "parts.backbone.sha256", hashlib.sha256(b"backbone.onnx").hexdigest())
    folder = _folder(tmp_path, data)
    assert verify_folder(folder).model_name == "tiny"
    (folder / "backbone.onnx").write_bytes(b"edited")
    with pytest.raises(InputError, match=r"backbone.onnx: sha256 differs from manifest.json"):
        verify_folder(folder)
    (folder / "head.onnx").unlink()
    with pytest.raises(InputError, match=r"head.onnx: listed in manifest.json but missing"):
        ExportManifest.load(folder).verify_graphs()
