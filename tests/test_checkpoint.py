"""Every supported checkpoint layout loads to the same logits; mismatches and broken files fail in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from acar_deploy.errors import InputError, OutputExistsError
from acar_deploy.model import (
    CheckpointFormat,
    build_model,
    detect_checkpoint_format,
    load_model,
    save_checkpoint,
)


def _random_tiny(name: str = "acar_tiny", seed: int = 0):
    model = build_model(name)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if key.endswith("num_batches_tracked"):
                tensor.fill_(7)
            elif key.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.3)
    return model.eval()


def _official_flat(model) -> dict[str, torch.Tensor]:
    """The model-zoo layout: the DDP-wrapped official AVA_model's state_dict."""
    out = {}
    for key, value in model.state_dict().items():
        part, rest = key.split(".", 1)
        out[f"module.{part}.module.{rest}"] = value.clone()
    return out


CLIPS = torch.randn(2, 3, 32, 64, 64, generator=torch.Generator().manual_seed(1))
ROIS = torch.tensor([[0, 0.1, 0.2, 0.6, 0.9], [0, 0.5, 0.1, 0.9, 0.5], [1, 0.0, 0.0, 1.0, 1.0]])


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(CLIPS, ROIS)


def test_every_layout_gives_identical_logits(tmp_path: Path):
    model = _random_tiny()
    expected = _logits(model)
    zoo = _official_flat(model)
    files = {
        "ours": save_checkpoint(model, tmp_path / "ours.pt", epoch=3, note="unit test"),
        "zoo": tmp_path / "zoo.pth.tar",
        "zoo_legacy": tmp_path / "zoo_legacy.pth.tar",
        "training": tmp_path / "ckpt_6.pth.tar",
        "state_dict": tmp_path / "state_dict.pt",
        "wrapped_state_dict": tmp_path / "wrapped.pt",
    }
    torch.save(zoo, files["zoo"])
    torch.save(zoo, files["zoo_legacy"], _use_new_zipfile_serialization=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    torch.save({"epoch": 6, "state_dict": zoo, "optimizer": optimizer.state_dict(),
                "scheduler": {"last_epoch": 6}}, files["training"])
    torch.save(model.state_dict(), files["state_dict"])
    torch.save({"state_dict": model.state_dict(), "step": 10}, files["wrapped_state_dict"])
    assert files["zoo_legacy"].read_bytes()[:2] != b"PK"  # really the legacy (non-zip) serialization

    formats = {"ours": "acar-deploy", "zoo": "official-zoo", "zoo_legacy": "official-zoo",
               "training": "official-training", "state_dict": "state-dict",
               "wrapped_state_dict": "state-dict"}
    for name, path in files.items():
        obj = torch.load(path, weights_only=True)
        assert detect_checkpoint_format(obj).value == formats[name]
        loaded = load_model(path, "acar_tiny")
        assert not loaded.training
        assert torch.equal(_logits(loaded), expected), name
    # our format carries its config
    assert torch.equal(_logits(load_model(files["ours"], None)), expected)
    assert torch.load(files["ours"], weights_only=True)["epoch"] == 3


def test_kinetics_backbone_loads_backbone_only(tmp_path: Path):
    model = _random_tiny(seed=4)
    path = tmp_path / "SLOWFAST_TINY_K400.pth.tar"
    torch.save({k[len("backbone."):]: v for k, v in model.state_dict().items() if k.startswith("backbone.")}, path)
    loaded = load_model(path, "acar_tiny", seed=5)
    assert detect_checkpoint_format(torch.load(path, weights_only=True)) == CheckpointFormat.KINETICS_BACKBONE
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(loaded.backbone.state_dict()[key], value), key
    fresh_head = load_model(None, "acar_tiny", seed=5).head.state_dict()
    for key, value in loaded.head.state_dict().items():
        assert torch.equal(value, fresh_head[key]), key


def test_random_init_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = (load_model(None, "acar_tiny", seed=s) for s in (0, 0, 1))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.head.fc2.weight, b.head.fc2.weight)
    assert not torch.equal(a.head.fc2.weight, c.head.fc2.weight)


def test_r101_file_with_r50_config_reports_keys():
    with torch.device("meta"):
        r101 = build_model("acar_r101")
    state = _official_flat(r101)
    with pytest.raises(InputError) as info:
        load_model(state, "acar_r50")
    message = str(info.value)
    assert "\n" not in message
    # Hand count: R50 has 4 lateral conv+BN (5 tensors each without num_batches_tracked) and a 2nd HR2O
    # layer (6 tensors) that R101 lacks: 26 missing. R101 has 17 extra res4 blocks per pathway
    # (3 convs + 3 BN x 5 tensors = 18 each) and 4 conv-only laterals: 34 * 18 + 4 = 616 unexpected.
    # Its single HR2O layer has a 1x1 output conv where R50 has 3x3: 1 shape mismatch.
    assert "26 missing (backbone.Tconv1.0.weight" in message
    assert "616 unexpected" in message
    assert "1 shape-mismatched (head.hr2o.0.conv.weight [512, 512, 1, 1] vs [512, 512, 3, 3])" in message
    assert "acar_r50" in message


def test_small_mismatch_and_wrong_objects(tmp_path: Path):
    linear = _random_tiny("linear_tiny")
    path = tmp_path / "linear.pt"
    torch.save(_official_flat(linear), path)
    with pytest.raises(InputError, match=r"linear\.pt: official-zoo checkpoint does not fit config 'acar_tiny': "
                                         r"\d+ missing \(head\.conv_reduce\.weight.*1 unexpected \(head\.fc\.weight\)"):
        load_model(path, "acar_tiny")
    assert torch.equal(_logits(load_model(path, "linear_tiny")), _logits(linear))
    with pytest.raises(InputError, match="carry no model config"):
        load_model(path, None)
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(InputError, match=r"list\.pt: not an ACAR-Net checkpoint: a list"):
        load_model(listed, "acar_tiny")
    with pytest.raises(InputError, match="unknown key layout"):
        load_model({"foo.weight": torch.zeros(1)}, "acar_tiny")
    with pytest.raises(InputError, match=r"nothere\.pt: checkpoint file not found"):
        load_model(tmp_path / "nothere.pt", "acar_tiny")


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_file_is_one_line_input_error(tmp_path: Path, legacy: bool):
    path = tmp_path / "full.pt"
    torch.save(_official_flat(_random_tiny()), path, _use_new_zipfile_serialization=not legacy)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pth.tar"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as info:
        load_model(truncated, "acar_tiny")
    message = str(info.value)
    assert message.startswith(f"{truncated}: not a readable PyTorch checkpoint") and "\n" not in message


def test_save_checkpoint_is_atomic_and_needs_force(tmp_path: Path):
    model = _random_tiny()
    path = save_checkpoint(model, tmp_path / "a" / "model.pt")
    with pytest.raises(OutputExistsError, match="--force"):
        save_checkpoint(model, path)
    save_checkpoint(_random_tiny(seed=9), path, force=True)
    assert not torch.equal(_logits(load_model(path)), _logits(model))
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]  # no temporary files left
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(model, tmp_path / "b.pt", config={})
    saved = torch.load(path, weights_only=True)
    assert saved["format"] == "acar-deploy-checkpoint" and saved["config"]["name"] == "acar_tiny"
