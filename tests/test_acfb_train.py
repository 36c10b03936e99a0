"""Training and evaluation with a feature bank: batch windows, evaluate = manual forward, CLI errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from acar_deploy.bank.dataset import bank_inputs, collate_with_bank
from acar_deploy.errors import InputError


def _item(b: int, n_rois: int, n_bank: int, flip: bool = False) -> dict:
    return {
        "clip": torch.zeros(3, 4, 8, 8), "rois": torch.rand(n_rois, 4) * 0.5, "targets": torch.zeros(n_rois, 60),
        "video_id": f"v{b}", "timestamp": 1, "boxes": np.zeros((n_rois, 4), np.float32), "scores": None,
        "frame_size": (8, 8), "flip": flip, "bank": torch.full((n_bank, 2, 1, 3), float(b)),
    }


def test_batch_window_mask_hand_computed():
    batch = collate_with_bank([_item(0, 2, 3), _item(1, 1, 0), _item(2, 2, 1)])
    entries, window = bank_inputs(batch, "cpu")
    assert entries.shape == (4, 2, 1, 3) and entries[:3].eq(0).all() and entries[3].eq(2).all()
    expected = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(window, expected)
    assert bank_inputs({"rois": batch["rois"]}, "cpu") == ()


@pytest.fixture(scope="module")
def temporal_run(tmp_path_factory):
    from acar_deploy.bank.extract import ExtractSettings, extract_bank
    from acar_deploy.data.synth import SynthSettings, synthesize
    from acar_deploy.model.acar import ACARModel
    from acar_deploy.model.checkpoint import save_checkpoint
    from acar_deploy.model.config import ModelConfig

    root = tmp_path_factory.mktemp("acfbtrain")
    data = synthesize(SynthSettings(root / "data", videos=4, seconds=5, seed=1, width=64, height=48,
                                    temporal=True)).out_dir
    configs = {}
    for name in ("config", "config_acfb"):
        cfg = yaml.safe_load((data / f"{name}.yaml").read_text())
        cfg["input"]["short_side"] = 48
        cfg["train"]["n_epochs"] = 1
        configs[name] = root / f"{name}.yaml"
        configs[name].write_text(yaml.safe_dump(cfg))
    torch.manual_seed(0)
    model = ACARModel(ModelConfig.from_dict({k: v for k, v in yaml.safe_load(configs["config"].read_text()).items()
                                             if k != "train"}))
    ckpt = save_checkpoint(model, root / "nobank.pt")
    banks = {}
    for split in ("train", "val"):
        banks[split] = extract_bank(ExtractSettings(checkpoint=ckpt, data=data, out=root / f"bank_{split}",
                                                    split=split, progress=False)).out
    return root, data, configs, banks


def test_train_and_validate_with_bank(temporal_run):
    from acar_deploy.bank.dataset import open_bank_for
    from acar_deploy.bank.window import FeatureBank
    from acar_deploy.data.clips import ClipSpec
    from acar_deploy.data.dataset import KeyframeDataset, load_dataset, model_class_ids
    from acar_deploy.detect import evaluate_split
    from acar_deploy.model.checkpoint import load_model
    from acar_deploy.model.scores import action_scores
    from acar_deploy.train import TrainSettings, train

    root, data, configs, banks = temporal_run
    result = train(TrainSettings(config=str(configs["config_acfb"]), data=data, out=root / "run", workers=0,
                                 threads=1, bank=banks["train"], val_bank=banks["val"], progress=False))
    assert len(result.history) == 1 and result.history[0].val_map is not None
    model = load_model(result.final_checkpoint)
    assert model.config.head.type == "acfb"

    # evaluate_split with the bank = a manual forward with that keyframe's window
    folder = load_dataset(data)
    spec = ClipSpec.from_model_config(model.config, fps=folder.fps)
    bank = open_bank_for(banks["val"], model.config, "val")
    evaluation = evaluate_split(model, folder, spec, "cpu", root / "pred.csv", bank=bank)
    assert evaluation.mAP == pytest.approx(result.history[0].val_map)
    kf = folder.val_keyframes()[0]
    item = KeyframeDataset([kf], folder.media_dir, model_class_ids(60), spec=spec)[0]
    window = FeatureBank(banks["val"]).window(kf.video_id, kf.timestamp, model.config.head.bank_window)
    rois = torch.cat([torch.zeros(len(item["rois"]), 1), item["rois"]], 1)
    with torch.no_grad():
        logits = model(item["clip"][None], rois, torch.from_numpy(window.features.copy()),
                       torch.ones(len(rois), len(window), dtype=torch.bool))
    scores = action_scores(logits).numpy()
    pred = np.genfromtxt(root / "pred.csv", delimiter=",", dtype=None, encoding="utf-8")
    first = [r for r in pred if r[0] == kf.video_id and int(r[1]) == kf.timestamp][:60]
    np.testing.assert_allclose([r[7] for r in first], scores[0], atol=1e-3)


def test_bank_option_errors(temporal_run):
    from acar_deploy.train import TrainSettings, train

    root, data, configs, banks = temporal_run
    with pytest.raises(InputError, match="--bank"):
        train(TrainSettings(config=str(configs["config_acfb"]), data=data, out=root / "e1", progress=False))
    with pytest.raises(InputError, match="acfb models only"):
        train(TrainSettings(config=str(configs["config"]), data=data, out=root / "e2", bank=banks["train"],
                            progress=False))
    with pytest.raises(InputError, match="field 'split'"):
        train(TrainSettings(config=str(configs["config_acfb"]), data=data, out=root / "e3", bank=banks["val"],
                            val_bank=banks["val"], progress=False))


def test_detect_with_bank_matches_evaluation(temporal_run):
    from acar_deploy.bank.dataset import open_bank_for
    from acar_deploy.data.ava_csv import read_predictions
    from acar_deploy.data.clips import ClipSpec
    from acar_deploy.data.dataset import load_dataset
    from acar_deploy.detect import DetectSettings, detect, evaluate_split
    from acar_deploy.model.acar import ACARModel
    from acar_deploy.model.checkpoint import save_checkpoint
    from acar_deploy.model.config import ModelConfig

    root, data, configs, banks = temporal_run
    torch.manual_seed(3)
    config = ModelConfig.from_dict({k: v for k, v in yaml.safe_load(configs["config_acfb"].read_text()).items()
                                    if k != "train"})
    model = ACARModel(config).eval()
    ckpt = save_checkpoint(model, root / "acfb_random.pt")
    folder = load_dataset(data)
    evaluate_split(model, folder, ClipSpec.from_model_config(config, fps=folder.fps), "cpu", root / "all.csv",
                   bank=open_bank_for(banks["val"], config, "val"))
    video_id = folder.val_keyframes()[0].video_id
    settings = DetectSettings(checkpoint=ckpt, media=data / "videos" / f"{video_id}.mp4",
                              boxes=data / "val_proposals.csv", out=root / "one.csv", bank=banks["val"])
    detect(settings)
    one, everything = read_predictions(root / "one.csv"), read_predictions(root / "all.csv")
    keep = everything.video_id == video_id
    assert len(one.score) == int(keep.sum()) > 0
    np.testing.assert_allclose(one.score, everything.score[keep], atol=1e-3)
    with pytest.raises(InputError, match="--bank"):
        detect(DetectSettings(**{**settings.__dict__, "bank": None, "out": root / "two.csv"}))
