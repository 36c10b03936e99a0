"""Feature bank: format validation, window lookup (hand-computed), extraction = eager maps, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from acar_deploy.bank.extract import ExtractSettings, extract_bank, staging_dir
from acar_deploy.bank.info import BankInfoSettings, bank_info
from acar_deploy.bank.window import FeatureBank, window_slice
from acar_deploy.errors import InputError, OutputExistsError
from acar_deploy.formats.bank import BankManifest, BankVideo


def test_window_slice_hand_computed():
    ts = np.array([1, 1, 2, 4, 5, 5, 9])
    assert window_slice(ts, 4, 2) == slice(2, 6)  # [2, 6] -> 2, 4, 5, 5
    assert window_slice(ts, 4, 2, causal=True) == slice(2, 4)  # [2, 4] -> 2, 4
    assert window_slice(ts, 1, 2) == slice(0, 3)  # video start: [-1, 3] -> 1, 1, 2
    assert window_slice(ts, 9, 3) == slice(6, 7)  # video end: [6, 12] -> 9
    assert window_slice(ts, 7, 1) == slice(6, 6)  # [6, 8]: empty
    assert window_slice(ts, 5, 0) == slice(4, 6)  # w = 0: this second only
    assert window_slice(ts[:0], 5, 3) == slice(0, 0)


def test_manifest_round_trip_and_errors(tmp_path):
    manifest = BankManifest("fp16", (16, 2, 3), "train", "gt", {"checkpoint": "a.pt"},
                            (BankVideo("v1", 3, 1, 2, "ab", "cd"),))
    manifest.write(tmp_path)
    assert BankManifest.load(tmp_path) == manifest
    data = json.loads((tmp_path / "bank.json").read_text())
    data["precision"] = "int8"
    (tmp_path / "bank.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"bank\.json: field 'precision'"):
        BankManifest.load(tmp_path)
    del data["feature_shape"]
    data["precision"] = "fp32"
    (tmp_path / "bank.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"bank\.json: field 'feature_shape' is missing"):
        BankManifest.load(tmp_path)
    with pytest.raises(InputError, match="not found"):
        BankManifest.load(tmp_path / "nothing")


@pytest.fixture(scope="module")
def synth_and_checkpoint(tmp_path_factory):
    from acar_deploy.data.synth import SynthSettings, synth_config_dict, synthesize
    from acar_deploy.model.acar import ACARModel
    from acar_deploy.model.checkpoint import save_checkpoint
    from acar_deploy.model.config import ModelConfig

    root = tmp_path_factory.mktemp("bank")
    data = synthesize(SynthSettings(root / "data", videos=4, seconds=4, seed=5, width=64, height=48)).out_dir
    config = {k: v for k, v in synth_config_dict().items() if k != "train"}
    config["input"]["short_side"] = 48
    torch.manual_seed(0)
    model = ACARModel(ModelConfig.from_dict(config)).eval()
    return root, data, save_checkpoint(model, root / "ckpt.pt"), model


def _video_hashes(manifest: BankManifest) -> list[tuple]:
    return [(v.video_id, v.entries, v.features_sha256, v.index_sha256) for v in manifest.videos]


def test_extract_equals_eager_maps_and_resume_gives_same_bank(synth_and_checkpoint):
    from acar_deploy.data.clips import ClipSpec
    from acar_deploy.data.dataset import KeyframeDataset, load_dataset, model_class_ids

    root, data, ckpt, model = synth_and_checkpoint
    full = extract_bank(ExtractSettings(checkpoint=ckpt, data=data, out=root / "full", precision="fp32",
                                        progress=False))
    assert len(full.manifest.videos) == 3 and full.manifest.entries > 0

    # independent reference: eager ACARHead first-order maps of one keyframe, and its window in the bank
    folder = load_dataset(data)
    keyframes = folder.train_keyframes()
    kf = keyframes[-1]
    item = KeyframeDataset([kf], folder.media_dir, model_class_ids(60),
                           spec=ClipSpec.from_model_config(model.config, fps=folder.fps))[0]
    with torch.no_grad():
        rois = torch.cat([torch.zeros(len(item["rois"]), 1), item["rois"]], 1)
        reduced = model.head.conv_reduce(model.context(item["clip"][None]))
        expected = model.head.first_order_features(reduced, model.head.actor_features(reduced, rois), rois).numpy()
    bank = FeatureBank(root / "full")
    win = bank.window(kf.video_id, kf.timestamp, 0)
    np.testing.assert_allclose(win.features, expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(win.boxes, item["boxes"], atol=0)
    assert set(win.timestamps) == {kf.timestamp}
    # a window across the whole video holds every keyframe's entries of it
    all_entries = sum(1 for k in keyframes if k.video_id == kf.video_id for _ in k.boxes)
    assert len(bank.window(kf.video_id, kf.timestamp, 100)) == all_entries

    # interrupted after the first video, then resumed: the same bank
    calls = []

    def stop_after_first(video_id: str) -> None:
        calls.append(video_id)
        raise KeyboardInterrupt

    settings = ExtractSettings(checkpoint=ckpt, data=data, out=root / "resumed", precision="fp32", progress=False)
    with pytest.raises(KeyboardInterrupt):
        extract_bank(settings, on_video=stop_after_first)
    assert not (root / "resumed").exists() and staging_dir(root / "resumed").is_dir()
    with pytest.raises(InputError, match="--resume"):
        extract_bank(settings)
    resumed = extract_bank(ExtractSettings(**{**settings.__dict__, "resume": True}))
    assert resumed.resumed == calls and len(resumed.extracted) == 2
    assert _video_hashes(resumed.manifest) == _video_hashes(full.manifest)
    assert not staging_dir(root / "resumed").exists()
    with pytest.raises(OutputExistsError):
        extract_bank(settings)


def test_fp16_bank_and_info(synth_and_checkpoint):
    root, data, ckpt, _ = synth_and_checkpoint
    result = extract_bank(ExtractSettings(checkpoint=ckpt, data=data, out=root / "half", split="val",
                                          precision="fp16", progress=False))
    bank = FeatureBank(root / "half")
    features, index = bank.arrays(result.manifest.videos[0].video_id)
    assert features.dtype == np.float16 and isinstance(features, np.memmap)
    info = bank_info(BankInfoSettings(root / "half", half_width=1))
    # hand count: per video, each keyframe's window [t-1, t+1] sums the box counts of those seconds
    counts = []
    for v in result.manifest.videos:
        ts = np.asarray(bank.arrays(v.video_id)[1]["timestamp"])
        counts += [int(((ts >= t - 1) & (ts <= t + 1)).sum()) for t in np.unique(ts)]
    assert (info.window_entries_min, info.window_entries_max) == (min(counts), max(counts))
    assert info.window_entries_mean == pytest.approx(np.mean(counts))
    assert info.entries == sum(v.entries for v in result.manifest.videos) and info.split == "val"


def test_cli_extract_and_info(synth_and_checkpoint):
    from typer.testing import CliRunner

    from acar_deploy.cli.main import app

    root, data, ckpt, _ = synth_and_checkpoint
    out = root / "cli_bank"
    result = CliRunner().invoke(app, ["bank", "extract", "--checkpoint", str(ckpt), "--data", str(data), "--out",
                                      str(out), "--split", "val", "--format", "json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["videos"] == 1 and summary["entries"] == BankManifest.load(out).entries
    result = CliRunner().invoke(app, ["bank", "info", str(out), "--window", "0", "--format", "json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["entries"] == summary["entries"] and info["window_entries_max"] <= info["entries"]
    again = CliRunner().invoke(app, ["bank", "extract", "--checkpoint", str(ckpt), "--data", str(data), "--out",
                                     str(out), "--split", "val"])
    assert again.exit_code == 2 and "--force" in again.output
    (out / "bank.json").write_text("{}")
    broken = CliRunner().invoke(app, ["bank", "info", str(out)])
    assert broken.exit_code == 2 and "bank.json" in broken.output and "Traceback" not in broken.output


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun smoke test on Linux CI only")
def test_torchrun_two_gloo_processes_write_the_same_bank(synth_and_checkpoint):
    root, data, ckpt, _ = synth_and_checkpoint
    single = root / "full"
    if not single.exists():
        extract_bank(ExtractSettings(checkpoint=ckpt, data=data, out=single, precision="fp32", progress=False))
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "acar_deploy", "bank", "extract",
         "--checkpoint", str(ckpt), "--data", str(data), "--out", str(root / "ddp"), "--precision", "fp32"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _video_hashes(BankManifest.load(root / "ddp")) == _video_hashes(BankManifest.load(single))
