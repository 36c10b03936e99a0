"""ONNX export of a seeded tiny ACAR model: every part, standard and plugin variants, against eager.

Two module-scoped exports (all parts, dynamic frame size, traced with R=3 and B=2) are shared:
`standard` (RoiAlign-16 + standard-op HR2O) and `plugin` (ACAR_RoIAlign + ACAR_HR2O custom nodes
with model-local function definitions). The reference is always eager PyTorch on the same inputs.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from acar_deploy.errors import OutputExistsError
from acar_deploy.export import ExportSettings, NodeChoice, Parts, export_model
from acar_deploy.export.plugin_nodes import CUSTOM_DOMAIN, HR2O_OP, ROI_ALIGN_OP
from acar_deploy.export.specs import Normalization, random_clips, random_context, random_rois
from acar_deploy.model import action_scores, load_model, save_checkpoint

SIZE = (96, 96)
TOL = 1e-4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A seeded acar_tiny whose logits are far from zero (fc2 scaled), saved as a checkpoint."""
    model = load_model(None, "acar_tiny", seed=3)
    with torch.no_grad():
        model.head.fc2.weight.mul_(4.0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(model, path)
    return path, model.eval()


def _export(tiny, tmp_path_factory, choice: NodeChoice):
    path, _ = tiny
    out = tmp_path_factory.mktemp(f"export-{choice.value}") / "tiny"
    settings = ExportSettings(
        parts=Parts.all, roi_align=choice, hr2o=choice, input_size=SIZE, dynamic_size=True
    )
    return export_model(out, path, None, settings)


@pytest.fixture(scope="module")
def standard(tiny, tmp_path_factory):
    return _export(tiny, tmp_path_factory, NodeChoice.onnx)


@pytest.fixture(scope="module")
def plugin(tiny, tmp_path_factory):
    return _export(tiny, tmp_path_factory, NodeChoice.plugin)


@pytest.fixture(params=["standard", "plugin"])
def exported(request):
    return request.getfixturevalue(request.param)


def _session(result, part):
    return ort.InferenceSession(str(result.files[part]), providers=["CPUExecutionProvider"])


def _inputs(batch, rois, size, seed=0):
    rng = np.random.default_rng(seed)
    return random_clips(rng, batch, size, Normalization()), random_rois(rng, rois, batch)


def _eager(model, clips, rois):
    with torch.inference_mode():
        context = model.context(torch.from_numpy(clips))
        logits = model.head(context, torch.from_numpy(rois))
    return context.numpy(), logits.numpy(), action_scores(logits).numpy()


def test_tiny_logits_are_far_from_zero(tiny):
    _, model = tiny
    clips, rois = _inputs(2, 17, SIZE)
    _, logits, _ = _eager(model, clips, rois)
    assert logits.std() > 0.1


def test_validation_covers_every_case_within_1e4(exported):
    rows = exported.report.rows
    seen = {(r.part, r.output, r.R, r.B, tuple(r.size)) for r in rows}
    sizes = {SIZE, (80, 120)}
    for size in sizes:
        for batch in (1, 2):
            assert ("backbone", "context", None, batch, size) in seen
            for count in (1, 3, 17):
                assert ("head", "logits", count, batch, size) in seen
                assert ("fused", "logits", count, batch, size) in seen
                assert ("fused", "scores", count, batch, size) in seen
    assert all(r.ok and r.max_abs <= TOL for r in rows), [r for r in rows if r.max_abs > TOL]


def test_fused_graph_matches_eager(exported, tiny):
    _, model = tiny
    clips, rois = _inputs(2, 5, SIZE, seed=11)
    _, logits, scores = _eager(model, clips, rois)
    got_logits, got_scores = _session(exported, "fused").run(["logits", "scores"], {"clips": clips, "rois": rois})
    assert np.abs(got_logits - logits).max() <= TOL
    assert np.abs(got_scores - scores).max() <= TOL
    # scores are the official activation: softmax over the 13 pose classes, sigmoid over the rest
    pose = np.exp(logits[:, :13] - logits[:, :13].max(1, keepdims=True))
    assert np.allclose(got_scores[:, :13], pose / pose.sum(1, keepdims=True), atol=1e-5)
    assert np.allclose(got_scores[:, 13:], 1 / (1 + np.exp(-logits[:, 13:])), atol=1e-5)


@pytest.mark.parametrize("count", [1, 40])
def test_graph_traced_with_three_rois_runs_other_counts(exported, tiny, count):
    _, model = tiny
    clips, rois = _inputs(2, count, SIZE, seed=count)
    context, logits, _ = _eager(model, clips, rois)
    (got,) = _session(exported, "head").run(["logits"], {"context": context, "rois": rois})
    assert got.shape == (count, 60)
    assert np.abs(got - logits).max() <= TOL
    (got_fused,) = _session(exported, "fused").run(["logits"], {"clips": clips, "rois": rois})
    assert np.abs(got_fused - logits).max() <= TOL


def test_dynamic_size_graph_runs_at_a_third_size(exported, tiny):
    _, model = tiny
    clips, rois = _inputs(1, 4, (112, 144), seed=5)
    context, logits, _ = _eager(model, clips, rois)
    (got_context,) = _session(exported, "backbone").run(["context"], {"clips": clips})
    assert got_context.shape == context.shape == (1, context.shape[1], 7, 9)
    assert np.abs(got_context - context).max() <= TOL
    (got,) = _session(exported, "fused").run(["logits"], {"clips": clips, "rois": rois})
    assert np.abs(got - logits).max() <= TOL


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def test_plugin_head_holds_custom_nodes_with_plugin_attributes(plugin):
    graph = onnx.load(str(plugin.files["head"]))
    onnx.checker.check_model(graph, full_check=True)
    custom = [n for n in graph.graph.node if n.domain == CUSTOM_DOMAIN]
    assert sorted(n.op_type for n in custom) == [HR2O_OP, HR2O_OP, ROI_ALIGN_OP]  # acar_tiny: HR2O depth 2
    assert not [n for n in graph.graph.node if n.op_type == "RoiAlign"]
    for node in custom:
        attrs = _attrs(node)
        assert attrs["plugin_version"] == b"1" and attrs["plugin_namespace"] == b"acar"
    roi = next(n for n in custom if n.op_type == ROI_ALIGN_OP)
    attrs = _attrs(roi)
    assert attrs["sampling_ratio"] == 0 and attrs["coordinate_transformation_mode"] == b"output_half_pixel"
    assert (attrs["output_height"], attrs["output_width"]) == (7, 7)
    hr2o = next(n for n in custom if n.op_type == HR2O_OP)
    assert _attrs(hr2o)["scale"] == pytest.approx(1 / np.sqrt(16))  # hidden_dim 16
    assert {(f.domain, f.name) for f in graph.functions} == {(CUSTOM_DOMAIN, HR2O_OP), (CUSTOM_DOMAIN, ROI_ALIGN_OP)}
    assert {o.domain: o.version for o in graph.opset_import}[CUSTOM_DOMAIN] == 1
    assert plugin.manifest["parts"]["head"]["custom_nodes"] == {ROI_ALIGN_OP: 1, HR2O_OP: 2}


def test_standard_head_uses_roialign16_with_explicit_sampling_ratio(standard):
    graph = onnx.load(str(standard.files["head"]))
    assert not [n for n in graph.graph.node if n.domain]
    assert not graph.functions
    (roi,) = [n for n in graph.graph.node if n.op_type == "RoiAlign"]
    attrs = _attrs(roi)
    assert "sampling_ratio" in attrs and attrs["sampling_ratio"] == 0
    assert attrs["coordinate_transformation_mode"] == b"output_half_pixel"
    assert attrs["mode"] == b"avg"
    assert {o.domain: o.version for o in graph.opset_import}[""] >= 17


def test_plugin_graph_matches_standard_graph_in_ort(standard, plugin):
    rng = np.random.default_rng(9)
    feeds = {"context": random_context(rng, 2, 320, (6, 6)), "rois": random_rois(rng, 9, 2)}
    (want,) = _session(standard, "head").run(["logits"], feeds)
    (got,) = _session(plugin, "head").run(["logits"], feeds)
    assert np.abs(got - want).max() <= 1e-5


def test_manifest_follows_the_design_contract(standard, tiny):
    folder = standard.path
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "acar-deploy-export" and manifest["format_version"] == 1
    assert manifest["model_name"] == "acar_tiny"
    assert manifest["config"]["head"]["depth"] == 2
    assert manifest["roi_align"] == "onnx" and manifest["hr2o"] == "onnx"
    assert manifest["dynamic_size"] is True and manifest["input_size"] == list(SIZE)
    assert manifest["normalization"] == {"norm_value": 255.0, "mean": [0.45] * 3, "std": [0.225] * 3}
    assert len(manifest["classes"]) == 60
    assert manifest["classes"][0] == {"id": 1, "name": "bend/bow (at the waist)"}
    from acar_deploy.artifacts import sha256_file

    assert manifest["checkpoint_sha256"] == sha256_file(tiny[0])
    parts = manifest["parts"]
    assert set(parts) == {"backbone", "head", "fused"}
    assert parts["backbone"]["inputs"] == [{"name": "clips", "dtype": "float32", "shape": ["B", 3, 32, "H", "W"]}]
    assert parts["backbone"]["outputs"] == [{"name": "context", "dtype": "float32", "shape": ["B", 320, "h", "w"]}]
    assert [t["name"] for t in parts["head"]["inputs"]] == ["context", "rois"]
    assert parts["head"]["inputs"][1]["shape"] == ["R", 5]
    assert [t["name"] for t in parts["fused"]["outputs"]] == ["logits", "scores"]
    assert parts["fused"]["outputs"][0]["shape"] == ["R", 60]
    for part in parts.values():
        assert part["sha256"] == sha256_file(folder / part["file"])
        graph = onnx.load(str(folder / part["file"]))
        dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input]
        assert dims == [t["shape"] for t in part["inputs"]]
    assert not list(folder.glob("*.data"))  # single-file graphs
    assert set(manifest["versions"]) >= {"torch", "onnx", "onnxruntime", "acar_deploy"}
    assert len(manifest["validation"]) == len(standard.report.rows)
    assert {"part", "output", "R", "B", "max_abs", "max_rel", "atol", "ok"} <= set(manifest["validation"][0])


def test_existing_folder_is_only_replaced_with_force(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(OutputExistsError, match="--force"):
        export_model(tmp_path / "taken", None, "acar_tiny", ExportSettings())


def test_a_dynamic_axis_baked_into_the_graph_is_an_export_error():
    from acar_deploy.export.exporter import ExportError, _check_dynamic_inputs
    from acar_deploy.export.specs import ExportGeometry, make_spec

    spec = make_spec("head", ExportGeometry(SIZE, (6, 6), 320, 60))
    graph = onnx.helper.make_graph(
        [], "g",
        [onnx.helper.make_tensor_value_info("context", onnx.TensorProto.FLOAT, ["B", 320, 6, 6]),
         onnx.helper.make_tensor_value_info("rois", onnx.TensorProto.FLOAT, [3, 5])],  # R frozen at 3
        [],
    )
    with pytest.raises(ExportError, match=r"rois axis 0 \(R\) was baked in as 3"):
        _check_dynamic_inputs(onnx.helper.make_model(graph), spec)
