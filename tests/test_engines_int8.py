"""ONNX Runtime INT8 (QDQ) engines: which nodes are quantized, calibration records, and the
frame-mAP drop of a model trained on synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from engine_support import CLIP_SHAPE, sample_feeds, write_npz_calibration

from acar_deploy.engines import (
    BuildSettings,
    EagerRunner,
    Int8Policy,
    RunnerOptions,
    build_engine,
    open_runner,
)
from acar_deploy.engines.builds.calibration import load_calibration_set


def dequantized_inputs(model: onnx.ModelProto) -> dict[str, list[bool]]:
    """Per node: which of its inputs come straight from a DequantizeLinear."""
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name: [i in dq for i in n.input] for n in model.graph.node}


@pytest.fixture(scope="module")
def int8_engine(tmp_path_factory, tiny_export):
    export = tiny_export
    root = tmp_path_factory.mktemp("int8")
    calib = write_npz_calibration(root / "calib", 3)
    settings = BuildSettings(export.export_dir, precision="int8", out_dir=root / "tiny-ort-int8",
                             int8=Int8Policy(calib_data=calib, calib_clips=6))
    return export, calib, build_engine(settings, progress=False)


def test_stem_convs_stay_fp32_and_other_convs_are_quantized(int8_engine):
    export, _, info = int8_engine
    source = onnx.load(str(export.export_dir / "backbone.onnx"))
    stem_weights = {i for n in source.graph.node if n.op_type == "Conv" for i in n.input[1:2]
                    if i.endswith(("slow_conv1.weight", "fast_conv1.weight"))}
    assert len(stem_weights) == 2
    record = json.loads((info.path / "engine.json").read_text())["parts"]["backbone"]
    model = onnx.load(str(info.parts["backbone"]))
    from_dq = dequantized_inputs(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    stems = [n for n in convs if n.name in record["fp32_reasons"]["stem_convs"]]
    # the recorded stems are exactly the convs that read the stem weights (by the exporter's names)
    assert sorted(n.name for n in stems) == sorted(record["fp32_nodes"])
    source_by_name = {n.name: n for n in source.graph.node}
    assert {source_by_name[n.name].input[1] for n in stems} == stem_weights
    for conv in convs:
        quantized = from_dq[conv.name][0] and from_dq[conv.name][1]
        assert quantized == (conv not in stems), conv.name
    assert len(record["quantized_nodes"]) == len(convs) - 2


def test_head_islands_are_not_quantized(int8_engine):
    _, _, info = int8_engine
    model = onnx.load(str(info.parts["head"]))
    from_dq = dequantized_inputs(model)
    nodes = list(model.graph.node)
    producers = {o: n for n in nodes for o in n.output}
    softmax = [n for n in nodes if n.op_type == "Softmax"]
    assert len(softmax) == 2
    for node in softmax:
        assert not any(from_dq[node.name])
        logits = producers[node.input[0]]  # Where(mask) <- Div <- MatMul: none of them read Q/DQ values
        chain = [logits]
        while chain[-1].op_type != "MatMul":
            chain.append(producers[[i for i in chain[-1].input if i in producers and producers[i].op_type != "Not"][-1]])
        assert all(not any(from_dq[n.name]) for n in chain), [n.name for n in chain]
    assert any(n.op_type == "Conv" and all(from_dq[n.name][:2]) for n in nodes)
    # RoiAlign computes in fp32 (it reads the dequantized context) and its output is never re-quantized
    roi_aligns = [n for n in nodes if n.op_type == "RoiAlign"]
    quantize_inputs = {n.input[0] for n in nodes if n.op_type == "QuantizeLinear"}
    assert roi_aligns and not any(n.output[0] in quantize_inputs for n in roi_aligns)


def test_calibration_is_recorded_and_hashed(int8_engine):
    export, calib, info = int8_engine
    recorded = json.loads((info.path / "engine.json").read_text())["calibration"]
    # 3 files x (clip with 2 boxes, clip with 1 box), limited to 6 clips -> 9 boxes
    assert (recorded["clips"], recorded["rois"], recorded["method"]) == (6, 9, "minmax")
    again = load_calibration_set(calib, 6, CLIP_SHAPE)
    assert again.sha256 == recorded["sha256"]
    assert load_calibration_set(calib, 5, CLIP_SHAPE).sha256 != recorded["sha256"]


def test_int8_runs_split_and_fused_close_to_eager(int8_engine):
    export, _, info = int8_engine
    feeds = sample_feeds(np.random.default_rng(9), 2, [2, 3])
    with EagerRunner.from_checkpoint(export.checkpoint) as eager:
        expected = eager.infer(feeds)["logits"]
    # the logit range (max - min), as the bound below is stated; this seeded random-init model's logits
    # straddle zero, so its largest |logit| is well below the range
    scale = float(expected.max() - expected.min())
    for graph in ("split", "fused"):
        with open_runner(info.path, RunnerOptions(graph=graph)) as runner:
            got = runner.infer(feeds)["logits"]
        # 8-bit activations over ~20 quantized layers: a few percent of the logit range, never more than 10%
        diff = float(np.abs(got - expected).max())
        assert 0 < diff < 0.1 * scale, (graph, diff, scale)


def test_default_calibration_is_synthetic(tmp_path, tiny_export):
    export = tiny_export
    settings = BuildSettings(export.export_dir, precision="int8", out_dir=tmp_path / "e",
                             int8=Int8Policy(calib_clips=2))
    recorded = build_engine(settings, progress=False).engine_json["calibration"]
    assert recorded["source"].startswith("synthetic") and recorded["clips"] == 2 and recorded["rois"] >= 2


# --- frame-mAP on a model trained on synthetic data -------------------------------------------------


@pytest.fixture(scope="module")
def trained_on_synth(tmp_path_factory):
    """`acar-deploy synth` data, acar_tiny trained on it for a few epochs, exported at its frame size."""
    import yaml

    from acar_deploy.data.synth import SynthSettings, synthesize
    from acar_deploy.export.exporter import ExportSettings, Parts, export_model
    from acar_deploy.train.loop import TrainSettings, train

    root = tmp_path_factory.mktemp("synth")
    data = root / "data"
    synthesize(SynthSettings(out_dir=data, videos=12, seconds=4, seed=0, width=128, height=96))
    config = yaml.safe_load((data / "config.yaml").read_text())
    config["input"].update(num_frames=32, short_side=64)  # 128x96 frames -> 85x64 clips of 32 frames
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = train(TrainSettings(config=str(root / "config.yaml"), data=data, out=root / "run", epochs=6,
                                 workers=0, validate=False, progress=False))
    checkpoint = result.final_checkpoint
    export_dir = root / "export"
    export_model(export_dir, checkpoint, None, ExportSettings(parts=Parts.split, input_size=(64, 85), validate=False))
    return data, checkpoint, export_dir


def test_int8_frame_map_drop_is_bounded(trained_on_synth, tmp_path):
    from acar_deploy.verify.parity import ParitySettings, check_parity

    data, checkpoint, export_dir = trained_on_synth
    # calibrated on the training split of the dataset (clips + their person boxes), evaluated on val
    settings = BuildSettings(export_dir, precision="int8", out_dir=tmp_path / "e", int8=Int8Policy(calib_data=data))
    info = build_engine(settings, progress=False)
    assert info.engine_json["calibration"]["source"] == str(data)
    report = check_parity(ParitySettings(engine=str(info.path), data=Path(data), checkpoint=checkpoint,
                                         max_map_drop=100.0), progress=False)
    drop_points = (report.map_eager - report.map_engine) * 100
    print(f"frame-mAP eager {report.map_eager:.4f}, int8 {report.map_engine:.4f}, drop {drop_points:.2f} points, "
          f"top-1 changed {report.top1_changed:.3f} over {report.boxes} boxes")
    assert report.map_eager > 0.5  # the model learned the synthetic actions: the comparison means something
    # ~9 val keyframes / ~25 boxes: one swapped rank among a class's positives moves its AP by several
    # points, so the bound is 5 points (the R50 gate on real AVA is 0.5 points over 50k boxes).
    assert drop_points <= 5.0
    assert report.top1_changed <= 0.1
