"""Triton model repository of an acfb (feature-bank) export: the bank set's configs against its graphs,
and its Python (BLS) pipeline, run with a fake `triton_python_backend_utils` whose BLS requests run the
repository's own ONNX models in onnxruntime, against the eager PyTorch model (no server here; the
live server is tests/test_triton_bank_live.py)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from triton_support import (  # noqa: E402
    config_io,
    graph_io,
    load_pipeline_model,
    parse_config,
)
from tritonclient.grpc import model_config_pb2  # noqa: E402

from acar_deploy.serve.triton import InstanceKind, TritonSettings, build_model_repository  # noqa: E402

SIZE = (64, 64)
PARTS = {"acar_backbone": "backbone.onnx", "acar_bank_kv": "bank_kv.onnx", "acar_bank_head": "bank.onnx"}


def make_acfb_export(root):
    """acfb_tiny with its HR2O output convs scaled away from torch's init (so that the bank moves the
    logits measurably), saved as a checkpoint and exported (backbone, bank_kv, bank_head)."""
    from acar_deploy.export.exporter import ExportSettings, export_model
    from acar_deploy.model.acar import build_model
    from acar_deploy.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_model("acfb_tiny")
    with torch.no_grad():
        for layer in model.head.hr2o:
            layer.conv.weight.mul_(20.0)
    checkpoint = save_checkpoint(model, root / "acfb.pt")
    export_model(root / "export", checkpoint, None, ExportSettings(input_size=SIZE, validate=False))
    return model.eval(), root / "export"


def eager_logits(model, clips, rois, entries, window) -> np.ndarray:
    """The reference: the eager model, K/V projected on the fly from the entries (ACFBHead.forward)."""
    with torch.no_grad():
        return model(torch.from_numpy(clips), torch.from_numpy(rois.copy()), torch.from_numpy(entries),
                     torch.from_numpy(window)).numpy()


def bank_request(seed: int, boxes: int = 3, entries: int = 6, clips: int = 2):
    """clips [B, 3, 32, H, W], rois [R, 5], entries [M, 16, 1, 1] (fp16-rounded like a bank's) and a
    window [R, M] where the last box sees no entry and the others some."""
    rng = np.random.default_rng(seed)
    clip = rng.standard_normal((clips, 3, 32, *SIZE)).astype(np.float32)
    xy = np.sort(rng.uniform(0.05, 0.95, size=(boxes, 2, 2)), axis=1)
    index = (np.arange(boxes) % clips)[:, None].astype(np.float32)
    rois = np.concatenate([index, xy[:, 0, :1], xy[:, 0, 1:], xy[:, 1, :1], xy[:, 1, 1:]], axis=1).astype(np.float32)
    bank = rng.exponential(0.5, size=(entries, 16, 1, 1)).astype(np.float16).astype(np.float32)
    window = rng.uniform(size=(boxes, entries)) < 0.7
    if entries:
        window[0, 0] = True
        window[-1] = False
    return clip, rois, bank, window


@pytest.fixture(scope="module")
def acfb(tmp_path_factory):
    root = tmp_path_factory.mktemp("acfbtriton")
    model, export = make_acfb_export(root)
    repo = build_model_repository(export, root / "repo", settings=TritonSettings(kind=InstanceKind.cpu, max_batch=2))
    return model, export, repo


def test_bank_set_models_and_configs_match_the_graphs(acfb):
    _, export, repo = acfb
    root = repo.path
    assert {m.name: m.platform for m in repo.models} == {
        "acar_backbone": "onnxruntime_onnx", "acar_bank_kv": "onnxruntime_onnx",
        "acar_bank_head": "onnxruntime_onnx", "acar": "python"}
    for model, file in PARTS.items():
        graph = root / model / "1" / "model.onnx"
        assert graph.read_bytes() == (export / file).read_bytes()
        config = parse_config(root / model)
        assert config.name == model and config.platform == "onnxruntime_onnx"
        assert config_io(config) == graph_io(graph)
        assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    assert parse_config(root / "acar_backbone").max_batch_size == 2
    assert parse_config(root / "acar_bank_kv").max_batch_size == 0
    assert parse_config(root / "acar_bank_head").max_batch_size == 0

    pipeline = parse_config(root / "acar")
    inputs = {t.name: (model_config_pb2.DataType.Name(t.data_type), list(t.dims), t.optional) for t in pipeline.input}
    assert inputs == {
        "clips": ("TYPE_FP32", [-1, 3, 32, *SIZE], False),
        "rois": ("TYPE_FP32", [-1, 5], False),
        "bank_window": ("TYPE_BOOL", [-1, -1], False),
        "bank_entries": ("TYPE_FP32", [-1, 16, 1, 1], True),  # acfb_tiny: hidden 16, 4x4 context -> 1x1 entries
        "bank_keys": ("TYPE_FP32", [2, -1, 16, 1, 1], True),  # depth 2
        "bank_values": ("TYPE_FP32", [2, -1, 16, 1, 1], True),
    }
    params = {k: v.string_value for k, v in pipeline.parameters.items()}
    assert {k: params[k] for k in ("backbone_model", "bank_kv_model", "bank_head_model", "bank_entry_shape",
                                   "bank_depth", "bank_head_min_entries", "bank_cache_entries")} == {
        "backbone_model": "acar_backbone", "bank_kv_model": "acar_bank_kv", "bank_head_model": "acar_bank_head",
        "bank_entry_shape": "[16, 1, 1]", "bank_depth": "2", "bank_head_min_entries": "0",
        "bank_cache_entries": "1024"}
    assert "head_model" not in params
    record = json.loads((root / "acar" / "acar_deploy.json").read_text())
    assert record["bank"] is True
    assert sorted(record["models"]) == sorted(PARTS)
    assert {m: record["models"][m]["part"] for m in PARTS} == {
        "acar_backbone": "backbone", "acar_bank_kv": "bank_kv", "acar_bank_head": "bank_head"}


def test_tensorrt_bank_plans_are_config_checked(acfb, tmp_path):
    """A TensorRT engine folder of an acfb export (fake plans: they cannot run here) gives plan models
    whose configs follow engine.json, and a pipeline that feeds an empty window as one masked entry."""
    _, export, _ = acfb
    manifest = json.loads((export / "manifest.json").read_text())
    engine = tmp_path / "acfb-trt-fp16"
    engine.mkdir()
    parts = {}
    for part, file in (("backbone", "backbone.plan"), ("bank_kv", "bank_kv.plan"), ("bank_head", "bank.plan")):
        data = f"fake {part} plan".encode()
        (engine / file).write_bytes(data)
        parts[part] = {**manifest["parts"][part], "file": file, "sha256": hashlib.sha256(data).hexdigest()}
    (engine / "engine.json").write_text(json.dumps({
        "format": "acar-deploy-engine", "format_version": 1, "runtime": "trt", "precision": "fp16", "parts": parts,
        "settings": {"trt": {"clips": {"min": 1, "opt": 1, "max": 4}, "rois": {"min": 1, "opt": 8, "max": 32},
                             "bank_entries": {"min": 1, "opt": 64, "max": 256}}}}))
    (engine / "manifest.json").write_text(json.dumps(manifest))
    repo = build_model_repository(export, tmp_path / "repo", engines=(engine,),
                                  settings=TritonSettings(kind=InstanceKind.gpu, max_batch=4))
    assert {m.name: m.platform for m in repo.models} == {
        "acar_backbone": "tensorrt_plan", "acar_bank_kv": "tensorrt_plan", "acar_bank_head": "tensorrt_plan",
        "acar": "python"}
    head = parse_config(repo.path / "acar_bank_head")
    assert (repo.path / "acar_bank_head" / "1" / "model.plan").read_bytes() == b"fake bank_head plan"
    assert config_io(head) == graph_io(export / "bank.onnx")
    params = {k: v.string_value for k, v in parse_config(repo.path / "acar").parameters.items()}
    assert params["bank_head_min_entries"] == "1" and params["head_max_rois"] == "32"
    assert params["bank_max_entries"] == "256"


def test_export_without_bank_parts_is_refused(acfb, tmp_path):
    from acar_deploy.errors import InputError

    _, export, _ = acfb
    manifest = json.loads((export / "manifest.json").read_text())
    del manifest["parts"]["bank_kv"]
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in ("backbone.onnx", "bank.onnx"):
        (broken / file).write_bytes((export / file).read_bytes())
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError) as info:
        build_model_repository(broken, tmp_path / "repo")
    assert "bank_kv" in str(info.value)


# --- the pipeline, run with a fake pb_utils ---------------------------------------------------------


@pytest.fixture()
def pipeline(acfb, monkeypatch):
    """(init(**parameter overrides) -> model, fake pb_utils, BLS calls)."""
    root = acfb[2].path
    module, pb, calls, config = load_pipeline_model(root, monkeypatch, "acar_bank_triton_model_under_test")

    def init(**parameters):
        changed = json.loads(json.dumps(config))
        for key, value in parameters.items():
            changed["parameters"][key] = {"string_value": value}
        model = module.TritonPythonModel()
        model.initialize({"model_config": json.dumps(changed)})
        return model

    return init, pb, calls


def _ask(model, pb, clips, rois, **bank):
    tensors = [pb.Tensor("clips", clips), pb.Tensor("rois", rois)]
    tensors += [pb.Tensor(name, array) for name, array in bank.items()]
    (response,) = model.execute([pb.InferenceRequest(inputs=tensors)])
    return response


def _logits(response) -> np.ndarray:
    assert not response.has_error(), response.error().message()
    out = {t.name(): t.as_numpy() for t in response.output_tensors()}
    from acar_deploy.model.scores import action_scores

    np.testing.assert_allclose(out["scores"], action_scores(out["logits"]), rtol=1e-6, atol=1e-7)
    return out["logits"]


def test_entries_and_stored_kv_equal_eager(acfb, pipeline):
    eager, export, _ = acfb
    init, pb, calls = pipeline
    model = init()
    clips, rois, entries, window = bank_request(seed=0)
    want = eager_logits(eager, clips, rois, entries, window)
    no_bank = eager_logits(eager, clips, rois, entries[:0], window[:, :0])
    sees = window.any(axis=1)
    assert np.abs(want[sees] - no_bank[sees]).max() > 1e-3  # the bank moves the logits: the check can fail

    got = _logits(_ask(model, pb, clips, rois, bank_window=window, bank_entries=entries))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert [c.model_name for c in calls] == ["acar_backbone", "acar_bank_kv", "acar_bank_head"]
    assert [t.name() for t in calls[2].inputs] == ["context", "rois", "bank_keys", "bank_values", "bank_window"]

    with torch.no_grad():
        keys, values = (t.numpy() for t in eager.head.project_bank(torch.from_numpy(entries)))
    del calls[:]
    fresh = init()  # stored K/V: bank_kv does not run and the cache stays empty
    got = _logits(_ask(fresh, pb, clips, rois, bank_window=window, bank_keys=keys, bank_values=values))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert [c.model_name for c in calls] == ["acar_backbone", "acar_bank_head"]
    assert len(fresh.kv_cache) == 0


def test_shifted_window_projects_only_new_entries_and_equals_a_fresh_projection(acfb, pipeline):
    eager, _, _ = acfb
    init, pb, calls = pipeline
    clips, rois, bank, _ = bank_request(seed=1, entries=9)
    model, small = init(), init(bank_cache_entries="4")
    window_of = {(0, 6): bank_request(seed=2, entries=6)[3], (3, 9): bank_request(seed=3, entries=6)[3]}
    for lo, hi in ((0, 6), (3, 9)):
        entries, window = bank[lo:hi], window_of[(lo, hi)]
        want = eager_logits(eager, clips, rois, entries, window)
        fresh = init()  # projects every entry of this window
        expected = _logits(_ask(fresh, pb, clips, rois, bank_window=window, bank_entries=entries))
        for cached in (model, small):
            got = _logits(_ask(cached, pb, clips, rois, bank_window=window, bank_entries=entries))
            np.testing.assert_array_equal(got, expected)  # the cache hit path = projecting all entries
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert model.kv_cache.projected == 9  # not 12: entries 3..5 were projected once
    assert len(model.kv_cache) == 9 and len(small.kv_cache) == 4  # the bound holds after each request
    # Duplicated entries in one window are projected once and both columns get their K/V.
    twice = np.concatenate([bank[:2], bank[:2]])
    window = np.ones((len(rois), 4), bool)
    got = _logits(_ask(init(), pb, clips, rois, bank_window=window, bank_entries=twice))
    np.testing.assert_allclose(got, eager_logits(eager, clips, rois, twice, window), rtol=1e-4, atol=1e-4)


def test_zero_actors_call_nothing_and_zero_entries_equal_eager(acfb, pipeline):
    eager, _, _ = acfb
    init, pb, calls = pipeline
    model = init()
    clips, rois, entries, window = bank_request(seed=4)
    response = _ask(model, pb, clips, np.zeros((0, 5), np.float32), bank_window=np.zeros((0, 6), bool),
                    bank_entries=entries)
    assert {t.name(): t.as_numpy().shape for t in response.output_tensors()} == {"logits": (0, 60), "scores": (0, 60)}
    assert calls == []
    for bank in ({"bank_entries": entries[:0]}, {"bank_keys": np.zeros((2, 0, 16, 1, 1), np.float32),
                                                 "bank_values": np.zeros((2, 0, 16, 1, 1), np.float32)}):
        got = _logits(_ask(model, pb, clips, rois, bank_window=window[:, :0], **bank))
        np.testing.assert_allclose(got, eager_logits(eager, clips, rois, entries[:0], window[:, :0]),
                                   rtol=1e-4, atol=1e-4)
    assert [c.model_name for c in calls] == ["acar_backbone", "acar_bank_head"] * 2  # nothing to project
    # A head that cannot take M = 0 (TensorRT, OpenVINO) gets one all-masked zero entry: same logits.
    del calls[:]
    masked = init(bank_head_min_entries="1")
    got = _logits(_ask(masked, pb, clips, rois, bank_window=window[:, :0], bank_entries=entries[:0]))
    np.testing.assert_allclose(got, eager_logits(eager, clips, rois, entries[:0], window[:, :0]), rtol=1e-4, atol=1e-4)
    assert calls[-1].inputs[4].as_numpy().shape == (len(rois), 1) and not calls[-1].inputs[4].as_numpy().any()


def test_bad_bank_requests_are_error_responses(pipeline):
    init, pb, calls = pipeline
    model = init()
    clips, rois, entries, window = bank_request(seed=5)
    kv = np.zeros((2, 6, 16, 1, 1), np.float32)
    cases = {
        "needs bank_window": {"bank_entries": entries},
        "not both": {"bank_window": window, "bank_entries": entries, "bank_keys": kv, "bank_values": kv},
        "not neither": {"bank_window": window},
        "bank_window must be bool [R, M] with R = 3": {"bank_window": window[:2], "bank_entries": entries},
        "got float32 [3, 6]": {"bank_window": window.astype(np.float32), "bank_entries": entries},
        "bank_entries must be [M, 16, 1, 1] with M = 5": {"bank_window": window[:, :5], "bank_entries": entries},
        "go together": {"bank_window": window, "bank_keys": kv},
        "bank_values must be [depth, M, C, h, w] = [2, 6, 16, 1, 1]": {"bank_window": window, "bank_keys": kv,
                                                                        "bank_values": kv[:1]},
    }
    for message, bank in cases.items():
        response = _ask(model, pb, clips, rois, **bank)
        assert response.has_error() and message in response.error().message(), (message, response.error())
    assert calls == []
    assert not _ask(model, pb, clips, rois, bank_window=window, bank_entries=entries).has_error()
    limited = init(bank_max_entries="5")  # a TensorRT bank_head's profile max M
    response = _ask(limited, pb, clips, rois, bank_window=window, bank_entries=entries)
    assert "6 bank entries exceed the bank engines' profile max of 5" in response.error().message()


def test_cli_writes_a_bank_set(acfb, tmp_path):
    from typer.testing import CliRunner

    from acar_deploy.cli.main import app

    _, export, _ = acfb
    out = tmp_path / "repo"
    result = CliRunner().invoke(app, ["triton", str(export), "--out", str(out), "--kind", "cpu", "--bank-cache", "8",
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    assert sorted(m["name"] for m in json.loads(result.stdout)["models"]) == [
        "acar", "acar_backbone", "acar_bank_head", "acar_bank_kv"]
    params = {k: v.string_value for k, v in parse_config(out / "acar").parameters.items()}
    assert params["bank_cache_entries"] == "8"


def test_ort_fp16_engine_of_the_acfb_export_is_served(acfb, tmp_path, monkeypatch):
    """An ONNX Runtime fp16 engine folder of the acfb export: its three graphs are the set's models and
    the pipeline's logits stay within the fp16 bound docs/bank.md gives for this engine against eager."""
    engines = pytest.importorskip("acar_deploy.engines")
    eager, export, _ = acfb
    engine = tmp_path / "acfb-ort-fp16"
    engines.build_engine(engines.BuildSettings(export, runtime="ort", precision="fp16", out_dir=engine), progress=False)
    root = build_model_repository(export, tmp_path / "repo", engines=(engine,),
                                  settings=TritonSettings(kind=InstanceKind.cpu)).path
    for model, file in PARTS.items():
        assert (root / model / "1" / "model.onnx").read_bytes() == (engine / file).read_bytes()
        assert config_io(parse_config(root / model)) == graph_io(root / model / "1" / "model.onnx")
    module, pb, calls, config = load_pipeline_model(root, monkeypatch, "acar_bank_fp16_triton_model")
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config)})
    clips, rois, entries, window = bank_request(seed=6)
    want = eager_logits(eager, clips, rois, entries, window)
    got = _logits(_ask(model, pb, clips, rois, bank_window=window, bank_entries=entries))
    np.testing.assert_allclose(got, want, rtol=0, atol=20 * 2**-11 * np.abs(want).max() + 1e-5)
    assert [c.model_name for c in calls] == ["acar_backbone", "acar_bank_kv", "acar_bank_head"]


def test_openvino_engine_of_the_acfb_export_feeds_an_empty_window_as_one_masked_entry(acfb, tmp_path):
    """Config only (this test has no OpenVINO backend): IR models, and `bank_head_min_entries` 1
    because OpenVINO's bank_head is wrong at M = 0 (docs/bank.md)."""
    pytest.importorskip("openvino")
    engines = pytest.importorskip("acar_deploy.engines")
    _, export, _ = acfb
    engine = tmp_path / "acfb-openvino-fp32"
    engines.build_engine(engines.BuildSettings(export, runtime="openvino", precision="fp32", out_dir=engine),
                         progress=False)
    repo = build_model_repository(export, tmp_path / "repo", engines=(engine,),
                                  settings=TritonSettings(kind=InstanceKind.cpu))
    assert {m.name: m.platform for m in repo.models if m.name != "acar"} == {
        "acar_backbone": "openvino", "acar_bank_kv": "openvino", "acar_bank_head": "openvino"}
    assert config_io(parse_config(repo.path / "acar_bank_head")) == graph_io(export / "bank.onnx")
    params = {k: v.string_value for k, v in parse_config(repo.path / "acar").parameters.items()}
    assert params["bank_head_min_entries"] == "1"
