"""`acar-deploy parity` on synthetic AVA data: fp32 passes, a damaged engine fails (exit 1, says why),
an int8 engine reports its frame-mAP (checked against the evaluator run on the written predictions)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from acar_deploy.artifacts import sha256_file
from acar_deploy.cli.main import app
from acar_deploy.errors import InputError
from acar_deploy.verify.compare import compare_output, top_action_changed
from acar_deploy.verify.parity import ParityGateFailed, ParitySettings, check_parity
from acar_deploy.verify.thresholds import load_threshold_file, resolve_thresholds


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Synthetic data, a seeded random checkpoint, its export and fp32 / damaged / int8 engines."""
    import onnx
    from onnx import numpy_helper

    from acar_deploy.data.clips import scaled_size
    from acar_deploy.data.synth import SynthSettings, synthesize
    from acar_deploy.engines.build import build_engine
    from acar_deploy.engines.settings import BuildSettings, Int8Policy
    from acar_deploy.export import ExportSettings, export_model
    from acar_deploy.model.checkpoint import load_model, save_checkpoint

    root = tmp_path_factory.mktemp("parity")
    data = root / "data"
    synthesize(SynthSettings(data, videos=5, seconds=4, seed=1))
    model = load_model(None, data / "config.yaml", seed=0)
    checkpoint = root / "model.pt"
    save_checkpoint(model, checkpoint)
    width, height = json.loads((data / "dataset.json").read_text())["frame_size"]
    clip_w, clip_h = scaled_size(width, height, model.config.input.short_side)  # the clips the data layer makes
    clip_shape = (model.config.input.num_frames, clip_h, clip_w)
    export = root / "export"
    export_model(export, checkpoint, None, ExportSettings(input_size=(clip_h, clip_w), validate=False))
    fp32 = root / "fp32"
    build_engine(BuildSettings(export, precision="fp32", out_dir=fp32), progress=False)

    damaged = root / "damaged"
    shutil.copytree(fp32, damaged)
    head = onnx.load(str(damaged / "head.onnx"))
    rng = np.random.default_rng(0)
    for init in head.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.ndim >= 2:  # conv / linear weights: +-20 % noise
            init.CopyFrom(numpy_helper.from_array((w * (1 + 0.2 * rng.standard_normal(w.shape))).astype(np.float32),
                                                  init.name))
    onnx.save(head, str(damaged / "head.onnx"))
    # A badly built engine, recorded as built: engine.json lists the damaged graph's sha256.
    record = json.loads((damaged / "engine.json").read_text())
    record["parts"]["head"]["sha256"] = sha256_file(damaged / "head.onnx")
    (damaged / "engine.json").write_text(json.dumps(record))
    edited = root / "edited"
    shutil.copytree(fp32, edited)
    shutil.copy(damaged / "head.onnx", edited / "head.onnx")  # engine.json still lists the built graph

    calib = root / "calib"
    calib.mkdir()
    for i in range(3):
        np.savez(calib / f"c{i}.npz", clips=rng.standard_normal((1, 3, *clip_shape)).astype(np.float32),
                 rois=np.array([[0, 0.1, 0.2, 0.4, 0.9], [0, 0.5, 0.3, 0.8, 0.95]], np.float32))
    int8 = root / "int8"
    build_engine(BuildSettings(export, precision="int8", out_dir=int8, int8=Int8Policy(calib_data=calib, calib_clips=3)),
                 progress=False)
    return {"root": root, "data": data, "checkpoint": checkpoint, "fp32": fp32, "damaged": damaged, "int8": int8,
            "edited": edited}


def _independent_map(data, predictions_csv):
    from acar_deploy.eval.frame_map import frame_map

    meta = json.loads((data / "dataset.json").read_text())
    files = meta["files"]
    return frame_map(data / files["val_annotations"], predictions_csv, labelmap=data / files["labelmap"],
                     exclusions=data / files["val_exclusions"]).mAP


def _read_scores(csv_path):
    rows = [line.split(",") for line in csv_path.read_text().splitlines()]
    boxes = {}
    for r in rows:
        boxes.setdefault(tuple(r[:6]), []).append(float(r[7]))
    return np.array(list(boxes.values()))


def test_fp32_engine_passes(setup):
    out = setup["root"] / "out-fp32"
    result = CliRunner().invoke(app, [
        "parity", str(setup["fp32"]), "--checkpoint", str(setup["checkpoint"]), "--data", str(setup["data"]),
        "--out", str(out), "--format", "json",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "parity.json").read_text())
    assert report["passed"] and report["failures"] == []
    assert report["engine_kind"] == "ort-fp32"
    logits = report["numeric"]["logits"]
    assert logits["max_abs"] < 1e-3 and logits["within"] == 1.0 and logits["cosine"] > 0.999999
    assert report["task"]["map_diff_points"] == pytest.approx(0.0, abs=1e-9)
    assert report["task"]["top1_changed_fraction"] == 0.0
    assert report["task"]["frame_map_eager"] == pytest.approx(_independent_map(setup["data"], out / "predictions_eager.csv"))
    assert report["boxes"] == len(_read_scores(out / "predictions_eager.csv"))
    assert "PASSED" in (out / "parity.md").read_text()


def test_damaged_engine_fails_with_exit_1_and_says_why(setup):
    out = setup["root"] / "out-damaged"
    result = CliRunner().invoke(app, [
        "parity", str(setup["damaged"]), "--checkpoint", str(setup["checkpoint"]),
        "--data", str(setup["data"]), "--out", str(out),
    ])
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert message.startswith("error: parity gate failed") and message.count("\n") == 0
    assert "logits:" in message and "within atol 0.001" in message
    report = json.loads((out / "parity.json").read_text())
    assert not report["passed"] and report["failures"]
    # the reported error statistics, recomputed from the written scores
    ref, got = _read_scores(out / "predictions_eager.csv"), _read_scores(out / "predictions_engine.csv")
    assert report["numeric"]["scores"]["max_abs"] == pytest.approx(np.abs(ref - got).max(), abs=2e-6)
    assert report["task"]["top1_changed_fraction"] == pytest.approx(top_action_changed(ref, got))


def test_int8_engine_reports_frame_map(setup):
    out = setup["root"] / "out-int8"
    settings = ParitySettings(engine=str(setup["int8"]), data=setup["data"], checkpoint=setup["checkpoint"],
                              max_map_drop=100.0, out=out)
    report = check_parity(settings, progress=False)
    assert report.engine_kind == "ort-int8"
    assert report.thresholds.atol is None  # int8 is gated on the task metric unless a tolerance is pinned
    assert report.map_engine == pytest.approx(_independent_map(setup["data"], out / "predictions_engine.csv"))
    assert report.map_eager == pytest.approx(_independent_map(setup["data"], out / "predictions_eager.csv"))
    assert report.map_diff_points == pytest.approx((report.map_engine - report.map_eager) * 100)
    assert len(report.top_classes) <= 5
    diffs = [abs(c.diff_points) for c in report.top_classes]
    assert diffs == sorted(diffs, reverse=True)
    assert 0 < report.output("logits").max_abs  # int8 is not bit-exact


def test_yaml_next_to_the_config_pins_thresholds_and_flags_override(setup, tmp_path):
    config = tmp_path / "model.yaml"
    shutil.copy(setup["data"] / "config.yaml", config)
    (tmp_path / "model.parity.yaml").write_text("ort-fp32: {atol: 0.0, rtol: 0.0, max_map_drop: 0.5}\n")
    settings = ParitySettings(engine=str(setup["fp32"]), data=setup["data"], checkpoint=setup["checkpoint"],
                              config=str(config), max_keyframes=2)
    with pytest.raises(ParityGateFailed) as failed:  # exact equality is too strict even for fp32
        check_parity(settings, progress=False)
    assert any(str(config.with_suffix(".parity.yaml")) in s for s in failed.value.report.threshold_sources)
    relaxed = ParitySettings(**{**settings.__dict__, "atol": 1e-3})
    assert check_parity(relaxed, progress=False).passed


def test_threshold_file_layers_and_errors(tmp_path):
    path = tmp_path / "t.parity.yaml"
    path.write_text("default: {max_map_drop: 1.0}\nort-int8: {max_map_drop: 0.5, atol: 0.05}\n")
    table = load_threshold_file(path)
    assert table == {"default": {"max_map_drop": 1.0}, "ort-int8": {"max_map_drop": 0.5, "atol": 0.05}}
    t, sources = resolve_thresholds({"runtime": "ort", "precision": "int8"}, thresholds_file=path,
                                    overrides={"atol": 0.1, "rtol": None})
    assert (t.max_map_drop, t.atol, t.rtol) == (0.5, 0.1, None)
    assert sources[-1] == "command line: atol=0.1"
    fp32, _ = resolve_thresholds({"runtime": "ort", "precision": "fp32"}, thresholds_file=path)
    assert (fp32.max_map_drop, fp32.atol, fp32.rtol) == (1.0, 1e-3, 1e-3)

    path.write_text("ort-int8:\n  max_map_drop: 0.5\n  atoll: 0.05\n")
    with pytest.raises(InputError, match=r"t\.parity\.yaml:3: unknown threshold 'atoll'"):
        load_threshold_file(path)
    path.write_text("ort-int8: {atol: lots}\n")
    with pytest.raises(InputError, match=r":1: 'ort-int8.atol' must be a number"):
        load_threshold_file(path)


def test_compare_output_on_a_hand_computed_case():
    ref = np.array([[1.0, -2.0], [0.0, 4.0]])
    got = np.array([[1.1, -2.0], [0.0, 3.0]])
    d = compare_output("x", ref, got, atol=0.2, rtol=0.1)
    assert d.max_abs == pytest.approx(1.0)
    assert d.mean_abs == pytest.approx(1.1 / 4)
    assert d.max_rel == pytest.approx(0.25, rel=1e-5)  # |3 - 4| / 4
    # cosine: (1.1 + 4 + 12) / (sqrt(21) * sqrt(1.21 + 4 + 9))
    assert d.cosine == pytest.approx(17.1 / (np.sqrt(21) * np.sqrt(14.21)))
    # bounds 0.3, 0.4, 0.2, 0.6: errors 0.1, 0, 0, 1.0 -> 3 of 4 within
    assert d.within == pytest.approx(0.75)
    assert d.worst_index == (1, 1) and d.worst_value == 3.0 and d.worst_reference == 4.0


def test_top_action_changed_counts_rows_with_a_different_argmax():
    ref = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    got = np.array([[0.8, 0.2], [0.9, 0.1], [0.3, 0.7]])
    assert top_action_changed(ref, got) == pytest.approx(2 / 3)


def test_missing_dataset_is_an_input_error(tmp_path, setup):
    result = CliRunner().invoke(app, ["parity", str(setup["fp32"]), "--checkpoint", str(setup["checkpoint"]),
                                      "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "dataset.json" in result.stderr and result.stderr.strip().count("\n") == 0


def test_an_engine_whose_graph_was_edited_after_the_build_is_refused_in_one_line(setup):
    result = CliRunner().invoke(app, [
        "parity", str(setup["edited"]), "--checkpoint", str(setup["checkpoint"]),
        "--data", str(setup["data"]), "--out", str(setup["root"] / "out-edited"),
    ])
    assert result.exit_code == 2
    assert f"{setup['edited'] / 'head.onnx'}: sha256 differs from engine.json" in result.output
    assert not (setup["root"] / "out-edited").exists()
