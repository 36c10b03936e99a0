"""Export and engine folders that do not fit: wrong input size, graphs of two exports, tampered files."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from acar_deploy.engines.compat import check_engine_fits
from acar_deploy.errors import InputError

from .conftest import SIZE_HW, assert_one_line_error, parity_args, run_cli, tree_digest


def _bench(folder, *extra, size=f"{SIZE_HW[0]}x{SIZE_HW[1]}"):
    return run_cli("bench", folder, "--iters", "1", "--warmup", "0", "--actors", "1", "--no-flops", "--size", size,
                   *extra)


def _foreign_head(engine):
    """Replace head.onnx by a graph declared for another export's context size (8x10 instead of 4x5)."""
    path = engine / "head.onnx"
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = 8, 10
    onnx.save(model, str(path))
    return path


def _tamper_weights(folder, part="backbone"):
    """Change one weight of a graph, keeping it a valid ONNX file (only the sha256 can tell)."""
    path = folder / f"{part}.onnx"
    model = onnx.load(str(path))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    array = numpy_helper.to_array(init).copy()
    array.flat[0] += 1.0
    init.CopyFrom(numpy_helper.from_array(array, init.name))
    onnx.save(model, str(path))
    return path


# --- fit of engine against the requested input and the model ---------------------------------------


@pytest.mark.parametrize("what", ["engine", "export"])
def test_bench_size_different_from_a_fixed_size_folder_is_one_line(world, what, tmp_path):
    folder = getattr(world, what)
    result = _bench(folder, "--checkpoint", world.checkpoint, size="96x128")
    record = "engine.json" if what == "engine" else "manifest.json"
    assert_one_line_error(result, 2, str(folder / record), "height", "96")


def test_check_engine_fits_names_the_field(world):
    check_engine_fits(world.engine, batch=3, size=SIZE_HW, num_frames=16, num_classes=60)  # fits: no error
    with pytest.raises(InputError, match=r"engine.json: parts.backbone.inputs.clips width is fixed at 80"):
        check_engine_fits(world.engine, size=(SIZE_HW[0], 96))
    with pytest.raises(InputError, match=r"frames is fixed at 16"):
        check_engine_fits(world.engine, num_frames=32)
    with pytest.raises(InputError, match=r"logits has 60 classes but the model has 80"):
        check_engine_fits(world.engine, num_classes=80)


def test_engine_with_a_graph_from_another_export_is_refused_by_bench(world, tmp_path):
    engine = world.copy("engine", tmp_path / "mixed")
    head = _foreign_head(engine)
    result = _bench(engine, "--checkpoint", world.checkpoint)
    assert_one_line_error(result, 2, str(head))


def test_engine_with_a_graph_from_another_export_is_refused_by_parity(world, tmp_path):
    engine = world.copy("engine", tmp_path / "mixed")
    head = _foreign_head(engine)
    out = tmp_path / "parity"
    result = run_cli(*parity_args(engine, "--data", world.data, "--checkpoint", world.checkpoint, "--out", out))
    assert_one_line_error(result, 2, str(head))
    assert not out.exists()


def test_engine_record_whose_parts_disagree_is_refused(world, tmp_path):
    engine = world.copy("engine", tmp_path / "mixed")
    record = json.loads((engine / "engine.json").read_text())
    record["parts"]["head"]["inputs"][0]["shape"] = ["B", 320, 8, 10]
    (engine / "engine.json").write_text(json.dumps(record))
    with pytest.raises(InputError, match="two exports"):
        check_engine_fits(engine, check_graphs=False)
    result = _bench(engine, "--checkpoint", world.checkpoint)
    assert_one_line_error(result, 2, str(engine), "parts.head.inputs.context")


# --- graph integrity: the sha256 recorded in manifest.json / engine.json -----------------------------


def test_build_refuses_an_export_whose_graph_no_longer_matches_its_sha256(world, tmp_path):
    export = world.copy("export", tmp_path / "export")
    graph = _tamper_weights(export)
    out = tmp_path / "engine"
    assert_one_line_error(run_cli("build", export, "--out", out), 2, str(graph), "sha256")
    assert not out.exists()


def test_triton_refuses_a_tampered_export(world, tmp_path):
    export = world.copy("export", tmp_path / "export")
    graph = _tamper_weights(export)
    out = tmp_path / "repo"
    assert_one_line_error(run_cli("triton", export, "--out", out, "--kind", "cpu"), 2, str(graph), "sha256")
    assert not out.exists()


def test_bench_refuses_a_tampered_engine(world, tmp_path):
    engine = world.copy("engine", tmp_path / "engine")
    graph = _tamper_weights(engine, "head")
    assert_one_line_error(_bench(engine, "--checkpoint", world.checkpoint), 2, str(graph), "sha256")


def test_parity_refuses_a_tampered_export(world, tmp_path):
    export = world.copy("export", tmp_path / "export")
    graph = _tamper_weights(export)
    out = tmp_path / "parity"
    result = run_cli(*parity_args(export, "--data", world.data, "--checkpoint", world.checkpoint, "--out", out))
    assert_one_line_error(result, 2, str(graph), "sha256")
    assert not out.exists()


def test_build_on_a_truncated_graph_is_one_line(world, tmp_path):
    export = world.copy("export", tmp_path / "export")
    graph = export / "backbone.onnx"
    data = graph.read_bytes()
    graph.write_bytes(data[: len(data) // 3])
    out = tmp_path / "engine"
    assert_one_line_error(run_cli("build", export, "--out", out), 2, str(graph))
    assert not out.exists()


def test_validate_on_a_manifest_missing_normalization_names_the_field(world, tmp_path):
    export = world.copy("export", tmp_path / "export")
    manifest = json.loads((export / "manifest.json").read_text())
    manifest.pop("normalization", None)
    (export / "manifest.json").write_text(json.dumps(manifest))
    before = tree_digest(export)
    assert_one_line_error(run_cli("validate", export), 2, "manifest.json", "normalization")
    assert tree_digest(export) == before


def test_build_force_over_an_engine_keeps_it_when_the_export_is_bad(world, tmp_path):
    engine = world.copy("engine", tmp_path / "engine")
    before = tree_digest(engine)
    broken = tmp_path / "broken_export"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    result = run_cli("build", broken, "--out", engine, "--force")
    assert_one_line_error(result, 2, str(broken / "manifest.json"))
    assert tree_digest(engine) == before
