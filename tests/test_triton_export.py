"""The Triton repository built from a real `acar_tiny` export: configs against its graphs, and the
Python (BLS) model's scores against the eager PyTorch model and the export's own graphs."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from triton_support import config_io, graph_io, load_pipeline_model, parse_config  # noqa: E402

from acar_deploy.serve.triton import InstanceKind, TritonSettings, build_model_repository  # noqa: E402

SIZE = (64, 64)


@pytest.fixture(scope="module")
def tiny_repository(tmp_path_factory):
    export = pytest.importorskip("acar_deploy.export")
    root = tmp_path_factory.mktemp("tiny")
    settings = export.ExportSettings(parts=export.Parts.split, input_size=SIZE, validate=False)
    export.export_model(root / "export", config="acar_tiny", settings=settings)
    repo = build_model_repository(
        root / "export", root / "repo", settings=TritonSettings(kind=InstanceKind.cpu, max_batch=2)
    )
    return root / "export", repo.path


def test_configs_match_the_real_export(tiny_repository):
    export_dir, root = tiny_repository
    manifest = json.loads((export_dir / "manifest.json").read_text())
    backbone, head = parse_config(root / "acar_backbone"), parse_config(root / "acar_head")
    assert config_io(backbone) == graph_io(root / "acar_backbone" / "1" / "model.onnx")
    assert config_io(head) == graph_io(root / "acar_head" / "1" / "model.onnx")
    assert list(backbone.input[0].dims) == [3, 32, *SIZE]
    assert list(head.output[0].dims) == [-1, len(manifest["classes"])]
    params = {k: v.string_value for k, v in parse_config(root / "acar").parameters.items()}
    assert json.loads(params["class_names"]) == [c["name"] for c in manifest["classes"]]
    assert json.loads(params["normalization"]) == manifest["normalization"]


def test_python_model_matches_eager_acar_tiny(tiny_repository, monkeypatch):
    from acar_deploy.model import load_model
    from acar_deploy.model.scores import action_scores

    export_dir, root = tiny_repository
    module, pb, calls, config = load_pipeline_model(root, monkeypatch, "acar_tiny_triton_model")
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config)})

    clips = np.random.default_rng(0).standard_normal((2, 3, 32, *SIZE), dtype=np.float32)
    rois = np.array([[0, 0.1, 0.1, 0.6, 0.9], [1, 0.4, 0.2, 0.9, 0.95], [1, 0.0, 0.0, 1.0, 1.0]], np.float32)
    request = pb.InferenceRequest(inputs=[pb.Tensor("clips", clips), pb.Tensor("rois", rois)])
    empty = pb.InferenceRequest(inputs=[pb.Tensor("clips", clips[:1]), pb.Tensor("rois", np.zeros((0, 5), np.float32))])
    full, none = model.execute([request, empty])
    out = {t.name(): t.as_numpy() for t in full.output_tensors()}

    eager = load_model(None, "acar_tiny", seed=0)
    with torch.no_grad():
        eager_logits = eager(torch.from_numpy(clips), torch.from_numpy(rois.copy()))
    np.testing.assert_allclose(out["logits"], eager_logits.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(out["scores"], action_scores(eager_logits).numpy(), rtol=1e-3, atol=1e-4)

    context = ort.InferenceSession(str(export_dir / "backbone.onnx")).run(None, {"clips": clips})[0]
    logits = ort.InferenceSession(str(export_dir / "head.onnx")).run(None, {"context": context, "rois": rois})[0]
    np.testing.assert_allclose(out["logits"], logits, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out["scores"], action_scores(logits), rtol=1e-6, atol=1e-7)

    assert {t.name(): t.as_numpy().shape for t in none.output_tensors()} == {"logits": (0, 60), "scores": (0, 60)}
    assert [c.model_name for c in calls] == ["acar_backbone", "acar_head"]


def test_ort_fp16_engine_is_served_as_onnx(tiny_repository, tmp_path, monkeypatch):
    """An ONNX Runtime fp16 engine folder from `build_engine` becomes onnxruntime_onnx models whose
    pipeline scores stay close to the fp32 export's."""
    engines = pytest.importorskip("acar_deploy.engines")
    export_dir, _ = tiny_repository
    engine_dir = tmp_path / "tiny-ort-fp16"
    engines.build_engine(
        engines.BuildSettings(export_dir, runtime="ort", precision="fp16", out_dir=engine_dir), progress=False
    )
    root = build_model_repository(export_dir, tmp_path / "repo", engines=(engine_dir,),
                                  settings=TritonSettings(kind=InstanceKind.cpu)).path
    for part in ("backbone", "head"):
        config = parse_config(root / f"acar_{part}")
        assert config.platform == "onnxruntime_onnx"
        assert config_io(config) == graph_io(root / f"acar_{part}" / "1" / "model.onnx")
        assert (root / f"acar_{part}" / "1" / "model.onnx").read_bytes() == (engine_dir / f"{part}.onnx").read_bytes()

    module, pb, _, config = load_pipeline_model(root, monkeypatch, "acar_fp16_triton_model")
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config)})
    clips = np.random.default_rng(1).standard_normal((1, 3, 32, *SIZE), dtype=np.float32)
    rois = np.array([[0, 0.1, 0.1, 0.6, 0.9], [0, 0.4, 0.2, 0.9, 0.95]], np.float32)
    (response,) = model.execute([pb.InferenceRequest(inputs=[pb.Tensor("clips", clips), pb.Tensor("rois", rois)])])
    scores = {t.name(): t.as_numpy() for t in response.output_tensors()}["scores"]

    context = ort.InferenceSession(str(export_dir / "backbone.onnx")).run(None, {"clips": clips})[0]
    logits = ort.InferenceSession(str(export_dir / "head.onnx")).run(None, {"context": context, "rois": rois})[0]
    from acar_deploy.model.scores import action_scores

    np.testing.assert_allclose(scores, action_scores(logits), atol=2e-2)
