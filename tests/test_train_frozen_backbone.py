"""Head-only fine-tuning (`train.freeze_backbone`): the backbone never moves, the context cache serves
exactly what decoding + the frozen backbone would, and training with it equals training without it."""

from __future__ import annotations

import pytest
import torch
import yaml

from acar_deploy.errors import InputError


@pytest.fixture(scope="module")
def temporal_data(tmp_path_factory):
    from acar_deploy.bank.extract import ExtractSettings, extract_bank
    from acar_deploy.data.synth import SynthSettings, synthesize
    from acar_deploy.model.acar import ACARModel
    from acar_deploy.model.checkpoint import save_checkpoint
    from acar_deploy.model.config import ModelConfig

    root = tmp_path_factory.mktemp("frozen")
    data = synthesize(SynthSettings(root / "data", videos=4, seconds=5, seed=2, width=64, height=48,
                                    temporal=True, progress=False)).out_dir
    configs = {}
    for name in ("config", "config_acfb"):
        cfg = yaml.safe_load((data / f"{name}.yaml").read_text())
        cfg["input"]["short_side"] = 48
        cfg["train"].update(n_epochs=2, freeze_backbone=True)
        configs[name] = cfg
    torch.manual_seed(0)
    model = ACARModel(ModelConfig.from_dict({k: v for k, v in configs["config"].items() if k != "train"}))
    init = save_checkpoint(model, root / "init.pt")
    banks = {split: extract_bank(ExtractSettings(checkpoint=init, data=data, out=root / f"bank_{split}",
                                                 split=split, progress=False)).out for split in ("train", "val")}
    return root, data, configs, init, banks


def _write(root, name, cfg, **train):
    cfg = {**cfg, "train": {**cfg["train"], **train}}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _train(root, data, config, init, out, banks=None):
    from acar_deploy.train.loop import TrainSettings, train

    bank = {"bank": banks["train"], "val_bank": banks["val"]} if banks else {}
    return train(TrainSettings(config=str(config), data=data, out=root / out, init=init, workers=0, threads=1,
                               progress=False, **bank))


@pytest.mark.parametrize("name", ["config", "config_acfb"])
def test_backbone_stays_put_and_the_cache_changes_nothing(temporal_data, name):
    from acar_deploy.model.checkpoint import read_checkpoint

    root, data, configs, init, banks = temporal_data
    banks = banks if name == "config_acfb" else None
    cached = _train(root, data, _write(root, f"{name}_cached", configs[name]), init, f"{name}_cached", banks)
    direct = _train(root, data, _write(root, f"{name}_direct", configs[name], context_cache_mib=0), init,
                    f"{name}_direct", banks)
    start = read_checkpoint(init)["state_dict"]
    for run in (cached, direct):
        state = read_checkpoint(run.final_checkpoint)["state_dict"]
        backbone = [k for k in state if k.startswith("backbone.")]
        assert backbone and all(torch.equal(state[k], start[k]) for k in backbone)  # bit-exact, BN statistics too
        assert not torch.equal(state["head.fc2.weight"], start["head.fc2.weight"])  # the head did train
    # the cache serves per-clip context maps; the loader path computes them per batch: same training
    a, b = (read_checkpoint(r.final_checkpoint)["state_dict"] for r in (cached, direct))
    for key in a:
        if key.startswith("head."):
            torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-5)
    assert [h.loss for h in cached.history] == pytest.approx([h.loss for h in direct.history], rel=1e-4)
    assert [h.val_map for h in cached.history] == pytest.approx([h.val_map for h in direct.history], abs=2e-3)


def test_context_cache_computes_each_clip_once_and_equals_decoding(temporal_data):
    from acar_deploy.data.clips import ClipSpec
    from acar_deploy.data.dataset import (
        Augmentation,
        KeyframeDataset,
        collate_keyframes,
        load_dataset,
        model_class_ids,
    )
    from acar_deploy.model.checkpoint import load_model
    from acar_deploy.train.context_cache import ContextCache

    root, data, configs, init, _ = temporal_data
    model = load_model(init)
    folder = load_dataset(data)
    dataset = KeyframeDataset(folder.train_keyframes(), folder.media_dir, model_class_ids(60),
                              spec=ClipSpec.from_model_config(model.config, fps=folder.fps),
                              augmentation=Augmentation(), seed=3)
    calls = []
    real = model.context
    model.context = lambda clips: calls.append(1) or real(clips)
    cache = ContextCache(dataset, model, "cpu", collate_keyframes)
    drawn = set()
    for epoch in (1, 2, 3):
        dataset.set_epoch(epoch)
        order = list(range(len(dataset)))[::-1]
        for start, batch in zip(range(0, len(order), 2), cache.batches(order, 2), strict=True):
            for b, index in enumerate(order[start:start + 2]):
                item = dataset[index]  # decodes: the reference
                drawn.add((index, item["flip"]))
                with torch.no_grad():
                    expected = real(item["clip"][None])[0]
                torch.testing.assert_close(batch["clips"][b], expected, rtol=1e-5, atol=1e-6)
                rois = batch["rois"][batch["rois"][:, 0] == b, 1:]
                torch.testing.assert_close(rois, item["rois"].reshape(-1, 4))  # jitter/flip of this epoch
    assert len(calls) == len(drawn) and len({flip for _, flip in drawn}) == 2  # once per (keyframe, flip)


def test_train_section_freeze_keys(tmp_path):
    from acar_deploy.train.config import load_train_config

    path = tmp_path / "c.yaml"
    path.write_text("train:\n  freeze_backbone: true\n  context_cache_mib: 12\n")
    cfg = load_train_config(path)
    assert cfg.freeze_backbone and cfg.context_cache_mib == 12
    assert not load_train_config(None).freeze_backbone
    path.write_text("train:\n  context_cache_mib: -1\n")
    with pytest.raises(InputError, match="context_cache_mib"):
        load_train_config(path)
