"""Triton model repository: configs against the graphs, and the Python (BLS) model run on CPU.

The export folder is built here from small stand-in torch modules with the contract's tensor names
and manifest; the Python model is imported with a fake `triton_python_backend_utils` whose BLS
requests run the repository's own ONNX models in onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from triton_support import config_io, graph_io, load_pipeline_model, parse_config  # noqa: E402
from tritonclient.grpc import model_config_pb2  # noqa: E402

from acar_deploy.errors import InputError, OutputExistsError  # noqa: E402
from acar_deploy.serve.triton import InstanceKind, TritonSettings, build_model_repository  # noqa: E402

LABEL_MAP = Path(__file__).resolve().parents[1] / "acar_deploy" / "data" / "ava_action_list_v2.1.pbtxt"
CLIP_SHAPE = (3, 32, 16, 16)
CONTEXT_CHANNELS = 8
NUM_POSE = 13  # AVA v2.1 ids 1, 3..14 (crawl, id 2, is not in the 60-class map)


def _label_map() -> list[dict]:
    text = LABEL_MAP.read_text()
    return [{"id": int(i), "name": n} for n, i in re.findall(r'name: "([^"]+)"\s+id: (\d+)', text)]


CLASSES = _label_map()


class StandInBackbone(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(3, CONTEXT_CHANNELS, (1, 4, 4), stride=(1, 4, 4))

    def forward(self, clips):
        return self.conv(clips).mean(dim=2)


class StandInHead(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.actor = torch.nn.Linear(CONTEXT_CHANNELS, len(CLASSES))
        self.box = torch.nn.Linear(4, len(CLASSES))

    def forward(self, context, rois):
        pooled = context.mean(dim=(2, 3))[rois[:, 0].long()]
        return 3.0 * self.actor(pooled) + self.box(rois[:, 1:])


class StandInFused(torch.nn.Module):
    def __init__(self, backbone, head) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, clips, rois):
        logits = self.head(self.backbone(clips), rois)
        scores = torch.cat([logits[:, :NUM_POSE].softmax(dim=1), logits[:, NUM_POSE:].sigmoid()], dim=1)
        return logits, scores


def _export(module, args, path, inputs, outputs, dynamic):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(path), input_names=inputs, output_names=outputs,
            dynamic_axes=dynamic, dynamo=False, opset_version=17,
        )


def _io(name, shape):
    return {"name": name, "dtype": "float32", "shape": shape}


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "standin"
    out.mkdir()
    torch.manual_seed(0)
    backbone, head = StandInBackbone().eval(), StandInHead().eval()
    clips = torch.randn(1, *CLIP_SHAPE)
    rois = torch.tensor([[0, 0.1, 0.2, 0.5, 0.9]])
    context = backbone(clips)
    _export(backbone, (clips,), out / "backbone.onnx", ["clips"], ["context"], {"clips": {0: "B"}, "context": {0: "B"}})
    _export(head, (context, rois), out / "head.onnx", ["context", "rois"], ["logits"],
            {"context": {0: "B"}, "rois": {0: "R"}, "logits": {0: "R"}})
    _export(StandInFused(backbone, head), (clips, rois), out / "acar.onnx", ["clips", "rois"], ["logits", "scores"],
            {"clips": {0: "B"}, "rois": {0: "R"}, "logits": {0: "R"}, "scores": {0: "R"}})
    h, w = CLIP_SHAPE[2] // 4, CLIP_SHAPE[3] // 4
    c = len(CLASSES)
    manifest = {
        "format": "acar-deploy-export", "format_version": 1, "model_name": "standin", "config": {},
        "opset": 17, "roi_align": "onnx", "hr2o": "onnx", "dynamic_size": False, "input_size": [16, 16],
        "normalization": {"norm_value": 255.0, "mean": [0.45] * 3, "std": [0.225] * 3},
        "classes": CLASSES, "checkpoint_sha256": "0" * 64,
        "parts": {
            "backbone": {"file": "backbone.onnx", "inputs": [_io("clips", ["B", *CLIP_SHAPE])],
                         "outputs": [_io("context", ["B", CONTEXT_CHANNELS, h, w])]},
            "head": {"file": "head.onnx",
                     "inputs": [_io("context", ["B", CONTEXT_CHANNELS, h, w]), _io("rois", ["R", 5])],
                     "outputs": [_io("logits", ["R", c])]},
            "fused": {"file": "acar.onnx", "inputs": [_io("clips", ["B", *CLIP_SHAPE]), _io("rois", ["R", 5])],
                      "outputs": [_io("logits", ["R", c]), _io("scores", ["R", c])]},
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def _manifest_io(manifest_part: dict) -> dict[str, tuple[str, list[int]]]:
    return {
        t["name"]: ("TYPE_FP32", [d if isinstance(d, int) else -1 for d in t["shape"]])
        for t in manifest_part["inputs"] + manifest_part["outputs"]
    }


def test_onnx_configs_parse_and_match_the_graphs(export_dir, tmp_path):
    repo = build_model_repository(export_dir, tmp_path / "repo", settings=TritonSettings(max_batch=8, instances=2))
    root = repo.path
    assert sorted(p.name for p in root.iterdir()) == ["acar", "acar_backbone", "acar_head"]

    backbone = parse_config(root / "acar_backbone")
    assert backbone.platform == "onnxruntime_onnx" and backbone.max_batch_size == 8
    assert backbone.dynamic_batching.max_queue_delay_microseconds == 2000
    assert list(backbone.input[0].dims) == list(CLIP_SHAPE)  # batch dim stripped
    assert config_io(backbone) == graph_io(root / "acar_backbone" / "1" / "model.onnx")
    assert [(g.kind, g.count) for g in backbone.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_AUTO, 2)]

    head = parse_config(root / "acar_head")
    assert head.platform == "onnxruntime_onnx" and head.max_batch_size == 0
    assert not head.HasField("dynamic_batching")
    assert config_io(head) == graph_io(root / "acar_head" / "1" / "model.onnx")
    assert list(next(t for t in head.input if t.name == "rois").dims) == [-1, 5]

    # The copied graphs are the export's, byte for byte.
    assert (root / "acar_head" / "1" / "model.onnx").read_bytes() == (export_dir / "head.onnx").read_bytes()

    pipeline = parse_config(root / "acar")
    assert pipeline.backend == "python" and pipeline.max_batch_size == 0
    graph_b, graph_h = graph_io(export_dir / "backbone.onnx"), graph_io(export_dir / "head.onnx")
    assert config_io(pipeline) == {
        "clips": graph_b["clips"], "rois": graph_h["rois"], "logits": graph_h["logits"], "scores": graph_h["logits"]
    }
    params = {k: v.string_value for k, v in pipeline.parameters.items()}
    assert json.loads(params["class_names"]) == [c["name"] for c in CLASSES]
    assert json.loads(params["class_ids"]) == [c["id"] for c in CLASSES]
    assert params["num_pose_classes"] == str(NUM_POSE)
    assert (params["backbone_model"], params["head_model"]) == ("acar_backbone", "acar_head")
    assert (root / "acar" / "labels.txt").read_text().splitlines() == [c["name"] for c in CLASSES]
    assert (root / "acar" / "1" / "model.py").is_file()


def test_unbatched_backbone_and_cpu_instances(export_dir, tmp_path):
    settings = TritonSettings(max_batch=0, instances=3, kind=InstanceKind.cpu, name="act")
    root = build_model_repository(export_dir, tmp_path / "repo", settings=settings).path
    backbone = parse_config(root / "act_backbone")
    assert backbone.max_batch_size == 0 and not backbone.HasField("dynamic_batching")
    assert config_io(backbone) == graph_io(root / "act_backbone" / "1" / "model.onnx")
    for name in ("act_backbone", "act_head", "act"):
        groups = parse_config(root / name).instance_group
        assert [(g.kind, g.count) for g in groups] == [(model_config_pb2.ModelInstanceGroup.KIND_CPU, 3)]


def _engine_folder(
    tmp_path: Path, export_dir: Path, name: str, files: dict[str, bytes], runtime: str, precision: str = "fp16"
) -> Path:
    """An engine folder per the contract: part files, engine.json listing them, a copy of manifest.json."""
    engine = tmp_path / name
    engine.mkdir()
    manifest = json.loads((export_dir / "manifest.json").read_text())
    parts = {}
    for file, data in files.items():
        (engine / file).write_bytes(data)
        part = file.split(".")[0]
        parts[part] = {**manifest["parts"][part], "file": file, "sha256": hashlib.sha256(data).hexdigest()}
    record = {
        "format": "acar-deploy-engine", "format_version": 1, "runtime": runtime, "precision": precision,
        "parts": parts,
        "settings": {"trt": {"clips": {"min": 1, "opt": 1, "max": 4}, "rois": {"min": 1, "opt": 8, "max": 32}}},
    }
    (engine / "engine.json").write_text(json.dumps(record))
    (engine / "manifest.json").write_text(json.dumps(manifest))
    return engine


def test_tensorrt_plan_configs_match_the_manifest(export_dir, tmp_path):
    plans = {"backbone.plan": b"fake backbone plan", "head.plan": b"fake head plan"}
    engine = _engine_folder(tmp_path, export_dir, "standin-trt-fp16", plans, "trt")
    root = build_model_repository(export_dir, tmp_path / "repo", engines=(engine,)).path
    manifest = json.loads((export_dir / "manifest.json").read_text())
    for part in ("backbone", "head"):
        config = parse_config(root / f"acar_{part}")
        assert config.platform == "tensorrt_plan"
        assert (root / f"acar_{part}" / "1" / "model.plan").read_bytes() == plans[f"{part}.plan"]
        assert not (root / f"acar_{part}" / "1" / "model.onnx").exists()
        assert config_io(config) == _manifest_io(manifest["parts"][part])
        # ... and the manifest's dims are those of the graphs the plans were built from.
        assert config_io(config) == graph_io(export_dir / f"{part}.onnx")
    record = json.loads((root / "acar" / "acar_deploy.json").read_text())
    assert record["models"]["acar_head"]["platform"] == "tensorrt_plan"
    params = {k: v.string_value for k, v in parse_config(root / "acar").parameters.items()}
    assert (params["backbone_max_batch"], params["head_max_rois"]) == ("4", "32")  # the plans' profile maxima

    with pytest.raises(InputError, match="--max-batch 8 exceeds the plan's profile max of 4 clips"):
        build_model_repository(export_dir, tmp_path / "big", engines=(engine,), settings=TritonSettings(max_batch=8))

    with pytest.raises(InputError, match="--kind gpu"):
        build_model_repository(export_dir, tmp_path / "cpu", engines=(engine,),
                               settings=TritonSettings(kind=InstanceKind.cpu))


def test_openvino_engine_is_served_by_the_openvino_backend(export_dir, tmp_path):
    """IR as model.xml + model.bin (the backend's default names), `backend: "openvino"`, CPU instances,
    the engine's compile options as backend parameters; dims equal the ONNX graphs' and the IR's own."""
    ov = pytest.importorskip("openvino")
    import shutil

    parts = ("backbone", "head")
    ir = tmp_path / "ir"
    ir.mkdir()
    for part in parts:
        ov.save_model(ov.Core().read_model(str(export_dir / f"{part}.onnx")), str(ir / f"{part}.xml"),
                      compress_to_fp16=False)
    engine = _engine_folder(tmp_path, export_dir, "standin-openvino-bf16",
                            {f"{p}.xml": (ir / f"{p}.xml").read_bytes() for p in parts}, "openvino", "bf16")
    for part in parts:
        shutil.copyfile(ir / f"{part}.bin", engine / f"{part}.bin")
    record = json.loads((engine / "engine.json").read_text())
    record["openvino"] = {"compile_options": {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY",
                                              "NUM_STREAMS": "1"}, "cache_dir": "cache"}
    (engine / "engine.json").write_text(json.dumps(record))

    repo = build_model_repository(export_dir, tmp_path / "repo", engines=(engine,), settings=TritonSettings(max_batch=4))
    assert {m.name: m.platform for m in repo.models} == {"acar_backbone": "openvino", "acar_head": "openvino",
                                                         "acar": "python"}
    for part in parts:
        model_dir = repo.path / f"acar_{part}"
        config = parse_config(model_dir)
        assert config.backend == "openvino" and config.platform == ""
        assert sorted(p.name for p in (model_dir / "1").iterdir()) == ["model.bin", "model.xml"]
        for suffix in ("xml", "bin"):
            assert (model_dir / "1" / f"model.{suffix}").read_bytes() == (ir / f"{part}.{suffix}").read_bytes()
        assert config.max_batch_size == 0  # unbatched even with --max-batch 4 (see backbone_config)
        assert config_io(config) == graph_io(export_dir / f"{part}.onnx")
        served = ov.Core().read_model(str(model_dir / "1" / "model.xml"))  # finds model.bin beside it
        ir_dims = {port.get_any_name(): [-1 if d.is_dynamic else d.get_length() for d in port.get_partial_shape()]
                   for port in list(served.inputs) + list(served.outputs)}
        assert {name: dims for name, (_, dims) in config_io(config).items()} == ir_dims
        params = {k: v.string_value for k, v in config.parameters.items()}
        assert params == {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "HINT_BF16": "YES"}
        assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    pipeline = {k: v.string_value for k, v in parse_config(repo.path / "acar").parameters.items()}
    assert pipeline["backbone_max_batch"] == "0"

    with pytest.raises(InputError, match="OpenVINO backend runs on the CPU only"):
        build_model_repository(export_dir, tmp_path / "gpu", engines=(engine,),
                               settings=TritonSettings(kind=InstanceKind.gpu))
    (engine / "head.bin").unlink()
    with pytest.raises(InputError, match=r"head\.bin: the IR's weights are missing"):
        build_model_repository(export_dir, tmp_path / "nobin", engines=(engine,))


def test_several_engines_are_served_side_by_side(export_dir, tmp_path):
    trt = _engine_folder(tmp_path, export_dir, "trt", {"backbone.plan": b"plan b", "head.plan": b"plan h"}, "trt")
    graphs = {f"{p}.onnx": (export_dir / f"{p}.onnx").read_bytes() for p in ("backbone", "head")}
    ort_int8 = _engine_folder(tmp_path, export_dir, "ort", graphs, "ort", "int8")
    repo = build_model_repository(export_dir, tmp_path / "repo", engines=(trt, ort_int8))
    names = {m.name: m.platform for m in repo.models}
    assert names == {
        "acar_trt_fp16_backbone": "tensorrt_plan", "acar_trt_fp16_head": "tensorrt_plan",
        "acar_trt_fp16": "python", "acar_ort_int8_backbone": "onnxruntime_onnx",
        "acar_ort_int8_head": "onnxruntime_onnx", "acar_ort_int8": "python",
    }
    for pipeline in ("acar_trt_fp16", "acar_ort_int8"):
        params = {k: v.string_value for k, v in parse_config(repo.path / pipeline).parameters.items()}
        assert (params["backbone_model"], params["head_model"]) == (f"{pipeline}_backbone", f"{pipeline}_head")
        for part in ("backbone", "head"):
            assert parse_config(repo.path / f"{pipeline}_{part}").name == f"{pipeline}_{part}"
    with pytest.raises(InputError, match="same model names"):
        build_model_repository(export_dir, tmp_path / "twice", engines=(trt, trt))


def test_external_weights_are_embedded(export_dir, tmp_path):
    split = tmp_path / "split"
    split.mkdir()
    for file in ("manifest.json", "head.onnx", "acar.onnx"):
        (split / file).write_bytes((export_dir / file).read_bytes())
    model = onnx.load(str(export_dir / "backbone.onnx"))
    onnx.save_model(model, str(split / "backbone.onnx"), save_as_external_data=True,
                    location="backbone.onnx.data", size_threshold=0)
    root = build_model_repository(split, tmp_path / "repo").path
    assert sorted(p.name for p in (root / "acar_backbone" / "1").iterdir()) == ["model.onnx"]
    clips = np.random.default_rng(1).standard_normal((2, *CLIP_SHAPE), dtype=np.float32)
    want = ort.InferenceSession(str(export_dir / "backbone.onnx")).run(None, {"clips": clips})[0]
    got = ort.InferenceSession(str(root / "acar_backbone" / "1" / "model.onnx")).run(None, {"clips": clips})[0]
    np.testing.assert_array_equal(got, want)


def test_existing_output_needs_force(export_dir, tmp_path):
    out = tmp_path / "repo"
    build_model_repository(export_dir, out, settings=TritonSettings(name="first"))
    with pytest.raises(OutputExistsError):
        build_model_repository(export_dir, out)
    build_model_repository(export_dir, out, settings=TritonSettings(name="second"), force=True)
    assert sorted(p.name for p in out.iterdir()) == ["second", "second_backbone", "second_head"]


def test_bad_inputs_name_the_file(export_dir, tmp_path):
    with pytest.raises(InputError, match="manifest.json"):
        build_model_repository(tmp_path, tmp_path / "repo")
    only_fused = tmp_path / "fused"
    only_fused.mkdir()
    manifest = json.loads((export_dir / "manifest.json").read_text())
    manifest["parts"] = {"fused": manifest["parts"]["fused"]}
    (only_fused / "manifest.json").write_text(json.dumps(manifest))
    (only_fused / "acar.onnx").write_bytes((export_dir / "acar.onnx").read_bytes())
    with pytest.raises(InputError, match="no backbone part"):
        build_model_repository(only_fused, tmp_path / "repo")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for file in ("manifest.json", "head.onnx", "acar.onnx"):
        (wrong / file).write_bytes((export_dir / file).read_bytes())
    (wrong / "backbone.onnx").write_bytes((export_dir / "acar.onnx").read_bytes())  # inputs clips+rois
    with pytest.raises(InputError, match="backbone.onnx: the backbone must have"):
        build_model_repository(wrong, tmp_path / "repo")


# --- the Python backend model, run with a fake triton_python_backend_utils -------------------------------


@pytest.fixture()
def python_model(export_dir, tmp_path, monkeypatch):
    """(model, fake pb_utils, BLS calls); `model.reinit(**parameters)` re-initialises with changed parameters."""
    root = build_model_repository(export_dir, tmp_path / "repo", settings=TritonSettings(max_batch=2)).path
    module, pb, calls, config = load_pipeline_model(root, monkeypatch, "acar_triton_model_under_test")

    def init(**parameters):
        changed = json.loads(json.dumps(config))
        for key, value in parameters.items():
            changed["parameters"][key] = {"string_value": value}
        model = module.TritonPythonModel()
        model.initialize({"model_config": json.dumps(changed), "model_name": "acar", "model_version": "1"})
        model.reinit = init
        return model

    return init(), pb, calls


def _request(pb, clips, rois):
    return pb.InferenceRequest(inputs=[pb.Tensor("clips", clips), pb.Tensor("rois", rois)])


def _numpy_scores(logits: np.ndarray) -> np.ndarray:
    pose = np.exp(logits[:, :NUM_POSE] - logits[:, :NUM_POSE].max(axis=1, keepdims=True))
    return np.concatenate([pose / pose.sum(axis=1, keepdims=True), 1 / (1 + np.exp(-logits[:, NUM_POSE:]))], axis=1)


def test_python_model_matches_the_export_graphs(python_model, export_dir):
    model, pb, calls = python_model
    rng = np.random.default_rng(0)
    clips = rng.standard_normal((2, *CLIP_SHAPE), dtype=np.float32)
    rois = np.array([[0, 0.1, 0.1, 0.4, 0.9], [1, 0.5, 0.2, 0.9, 0.8], [1, 0.0, 0.0, 1.0, 1.0]], np.float32)
    no_boxes = np.zeros((0, 5), np.float32)
    responses = model.execute([_request(pb, clips, rois), _request(pb, clips[:1], no_boxes)])

    assert len(responses) == 2 and not responses[0].has_error() and not responses[1].has_error()
    out = {t.name(): t.as_numpy() for t in responses[0].output_tensors()}
    fused = ort.InferenceSession(str(export_dir / "acar.onnx")).run(["logits", "scores"], {"clips": clips, "rois": rois})
    context = ort.InferenceSession(str(export_dir / "backbone.onnx")).run(None, {"clips": clips})[0]
    split_logits = ort.InferenceSession(str(export_dir / "head.onnx")).run(None, {"context": context, "rois": rois})[0]
    np.testing.assert_allclose(out["logits"], split_logits, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out["logits"], fused[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["scores"], fused[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["scores"], _numpy_scores(split_logits.astype(np.float64)), rtol=1e-6, atol=1e-7)
    assert np.allclose(out["scores"][:, :NUM_POSE].sum(axis=1), 1.0, atol=1e-5)
    assert out["scores"].dtype == np.float32 and out["logits"].dtype == np.float32

    # Zero boxes: empty [0, C] outputs, and neither the backbone nor the head was called.
    empty = {t.name(): t.as_numpy() for t in responses[1].output_tensors()}
    assert empty["logits"].shape == (0, len(CLASSES)) and empty["scores"].shape == (0, len(CLASSES))
    assert [c.model_name for c in calls] == ["acar_backbone", "acar_head"]
    assert calls[1].preferred_memory == ("memory", pb.TRITONSERVER_MEMORY_CPU, 0)
    assert [t.name() for t in calls[1].inputs] == ["context", "rois"]


def test_python_model_answers_bad_requests_with_errors(python_model):
    model, pb, calls = python_model
    clips = np.zeros((1, *CLIP_SHAPE), np.float32)
    bad_index = np.array([[1, 0.1, 0.1, 0.5, 0.5]], np.float32)  # clip 1 of a batch of 1
    bad_shape = np.zeros((2, 4), np.float32)
    too_many = np.zeros((3, *CLIP_SHAPE), np.float32)  # backbone max_batch_size is 2
    ok_rois = np.array([[0, 0.1, 0.1, 0.5, 0.5]], np.float32)
    responses = model.execute(
        [_request(pb, clips, bad_index), _request(pb, clips, bad_shape), _request(pb, too_many, ok_rois)]
    )
    messages = [r.error().message() if r.has_error() else None for r in responses]
    assert "clip indices in [0, 1)" in messages[0]
    assert "[R, 5]" in messages[1]
    assert "max_batch_size 2" in messages[2]
    limited = model.reinit(head_max_rois="2")
    (response,) = limited.execute([_request(pb, clips, np.repeat(ok_rois, 3, axis=0))])
    assert "3 boxes exceed the head engine's profile max of 2" in response.error().message()
    assert calls == []


def test_cli_writes_the_repository_and_refuses_to_overwrite(export_dir, tmp_path):
    from typer.testing import CliRunner

    from acar_deploy.cli.main import app

    out = tmp_path / "model_repository"
    args = ["triton", str(export_dir), "--out", str(out), "--kind", "cpu", "--max-batch", "2", "--format", "json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    listed = {m["name"]: m for m in json.loads(result.stdout)["models"]}
    assert {n: m["platform"] for n, m in listed.items()} == {
        "acar_backbone": "onnxruntime_onnx", "acar_head": "onnxruntime_onnx", "acar": "python"
    }
    for model in listed.values():
        assert (out / model["file"]).is_file()
    assert parse_config(out / "acar_backbone").max_batch_size == 2

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2
    assert again.stderr.strip() == f"error: {out} already exists: pass --force to replace it"
