"""K/V stored in the bank (`acar-deploy bank project`): stored = eager `project_bank`, logits with stored
K/V = eager `ACFBHead.forward` (K/V on the fly), interrupted runs leave old-or-complete videos,
K/V of other weights are refused, banks without K/V (and version-1 banks) still work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from acar_deploy.errors import InputError


@pytest.fixture(scope="module")
def kv_setup(tmp_path_factory):
    """Synthetic temporal data, an fp32 val and an fp16 train bank of a no-bank model, two acfb checkpoints
    (A, B). The ORT export path (stored K/V through bank_kv / bank_head graphs, parity) is tested in
    test_acfb_export.py, which already pays for an export."""
    from acar_deploy.bank.extract import ExtractSettings, extract_bank
    from acar_deploy.data.synth import SynthSettings, synthesize
    from acar_deploy.model.acar import ACARModel
    from acar_deploy.model.checkpoint import save_checkpoint
    from acar_deploy.model.config import ModelConfig

    root = tmp_path_factory.mktemp("kvstore")
    data = synthesize(SynthSettings(root / "data", videos=3, seconds=5, seed=2, width=64, height=48,
                                    temporal=True)).out_dir
    configs = {}
    for name in ("config", "config_acfb"):
        cfg = yaml.safe_load((data / f"{name}.yaml").read_text())
        cfg["input"]["short_side"] = 48
        configs[name] = ModelConfig.from_dict({k: v for k, v in cfg.items() if k != "train"})
    torch.manual_seed(0)
    nobank = save_checkpoint(ACARModel(configs["config"]).eval(), root / "nobank.pt")
    # fp32: the val split (1 video; parity and detect read it), fp16: the train split (2 videos)
    banks = {p: extract_bank(ExtractSettings(checkpoint=nobank, data=data, out=root / f"bank_{p}", split=split,
                                             precision=p, progress=False)).out
             for p, split in (("fp32", "val"), ("fp16", "train"))}
    models, ckpts = {}, {}
    for name, seed in (("A", 0), ("B", 1)):
        torch.manual_seed(seed)
        model = ACARModel(configs["config_acfb"]).eval()
        with torch.no_grad():  # weights away from torch's init, so that the bank's messages move the logits
            for layer in model.head.hr2o:
                layer.conv.weight.mul_(20.0)
        models[name], ckpts[name] = model, save_checkpoint(model, root / f"acfb_{name}.pt")
    return root, data, banks, models, ckpts


def _fresh(bank, tmp_path, name="bank"):
    """A writable copy of a module bank (projection writes into the bank folder)."""
    return shutil.copytree(bank, tmp_path / name)


def _project(bank, engine, **kw):
    from acar_deploy.engines.bank_projection import ProjectSettings, project_bank_kv

    return project_bank_kv(ProjectSettings(bank=bank, engine=str(engine), progress=False, **kw))


def _eager_kv(model, features):
    with torch.no_grad():
        keys, values = model.head.project_bank(torch.from_numpy(np.array(features, np.float32)))
    return keys.numpy(), values.numpy()


def test_stored_kv_equal_eager_project_bank(kv_setup, tmp_path):
    """fp32 bank: stored = eager to 1e-4; fp16 bank: = eager rounded to fp16 (ORT: test_acfb_export.py).
    bank.json names the weights (checkpoint sha256, depth); windows carry the K/V of their rows."""
    from acar_deploy.artifacts import sha256_file
    from acar_deploy.bank.window import FeatureBank
    from acar_deploy.formats.bank import BankManifest, open_video_arrays

    _, _, banks, models, ckpts = kv_setup
    for precision in ("fp32", "fp16"):
        engine = f"eager:{ckpts['A']}:"
        bank = _fresh(banks[precision], tmp_path, precision)
        result = _project(bank, engine, batch=3)  # several bank_kv calls per video
        manifest = BankManifest.load(bank)
        assert manifest.format_version == 2 and manifest.projection is not None
        assert manifest.projection.weights.checkpoint_sha256 == sha256_file(ckpts["A"])
        assert manifest.projection.weights.depth == models["A"].config.head.depth == 2
        assert sorted(result.projected) == sorted(v.video_id for v in manifest.videos) and result.entries > 0
        feature_bank = FeatureBank(bank)
        assert feature_bank.use_stored_kv(manifest.projection.weights)
        for video in manifest.videos:
            features, index = open_video_arrays(bank, manifest, video.video_id)
            keys, values = feature_bank.kv_arrays(video.video_id)
            assert keys.dtype == np.dtype(precision.replace("fp", "float"))
            assert keys.shape == (2, video.entries, *manifest.feature_shape)
            ref_keys, ref_values = _eager_kv(models["A"], features)
            for got, ref in ((keys, ref_keys), (values, ref_values)):
                if precision == "fp32":
                    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
                else:  # one fp16 rounding: half an ulp of 2^-10 relative
                    np.testing.assert_allclose(got.astype(np.float32), ref, atol=1e-4, rtol=2 ** -10)
                    assert np.abs(got.astype(np.float32) - ref).max() > 0  # really stored in fp16
            t = int(index["timestamp"][len(index) // 2])
            window = feature_bank.window(video.video_id, t, 1)
            rows = (index["timestamp"] >= t - 1) & (index["timestamp"] <= t + 1)
            np.testing.assert_array_equal(window.keys, np.asarray(keys)[:, rows])
            np.testing.assert_array_equal(window.values, np.asarray(values)[:, rows])


def test_logits_with_stored_kv_equal_kv_on_the_fly(kv_setup, tmp_path):
    """A keyframe's window from the bank: the eager runner fed the stored K/V = ACFBHead.forward on the
    window's entries (K/V on the fly); bad K/V feeds fail in one line."""
    from acar_deploy.bank.window import FeatureBank
    from acar_deploy.engines.bank_projection import eager_projection_weights
    from acar_deploy.engines.runners.eager import EagerRunner

    _, _, banks, models, ckpts = kv_setup
    model = models["A"]
    bank = _fresh(banks["fp32"], tmp_path)
    _project(bank, f"eager:{ckpts['A']}:")
    feature_bank = FeatureBank(bank)
    assert feature_bank.use_stored_kv(eager_projection_weights(ckpts["A"], model.config))
    video = max(feature_bank.manifest.videos, key=lambda v: v.entries)
    window = feature_bank.window(video.video_id, video.first_timestamp + 2, 2)
    assert len(window) >= 4
    torch.manual_seed(0)
    clips = torch.randn(1, 3, model.config.input.num_frames, 48, 64).numpy()
    rois = np.array([[0, 0.1, 0.1, 0.5, 0.9], [0, 0.4, 0.2, 0.9, 0.8], [0, 0.0, 0.0, 1.0, 1.0]], np.float32)
    mask = np.ones((3, len(window)), bool)
    mask[0, ::2] = False  # box 0 sees every other entry only
    with torch.no_grad():
        context = model.context(torch.from_numpy(clips))
        expected = model.head(context, torch.from_numpy(rois.copy()), torch.from_numpy(window.features),
                              torch.from_numpy(mask)).numpy()
        alone = model.head(context, torch.from_numpy(rois.copy()), torch.zeros(0, *window.features.shape[1:]),
                           torch.zeros(3, 0, dtype=torch.bool)).numpy()
    assert np.abs(expected - alone).max() > 1e-3  # the window matters
    stored = {"clips": clips, "rois": rois, "bank_keys": window.keys, "bank_values": window.values, "bank_window": mask}
    with EagerRunner(model) as eager:
        assert eager.supports_stored_kv
        np.testing.assert_allclose(eager.infer(stored)["logits"], expected, atol=1e-4, rtol=1e-4)
        with pytest.raises(InputError, match="bank_keys"):
            eager.infer({**stored, "bank_values": window.values[:, :1]})
        with pytest.raises(InputError, match="bank_window"):
            eager.infer({**stored, "bank_window": mask[:, :1]})


def test_detect_reads_the_stored_kv_and_refuses_other_weights(kv_setup, tmp_path, monkeypatch):
    """detect --bank with stored K/V (project_bank never runs: it would raise) = detect on the same bank
    without them; a model with other weights is refused in one line naming bank.json's field."""
    from acar_deploy.data.ava_csv import read_predictions
    from acar_deploy.data.dataset import load_dataset
    from acar_deploy.detect import DetectSettings, detect
    from acar_deploy.model.acfb import ACFBHead

    _, data, banks, _, ckpts = kv_setup
    bank = _fresh(banks["fp32"], tmp_path)
    _project(bank, f"eager:{ckpts['A']}:")
    video_id = load_dataset(data).val_keyframes()[0].video_id
    settings = DetectSettings(checkpoint=ckpts["A"], media=data / "videos" / f"{video_id}.mp4",
                              boxes=data / "val_proposals.csv", out=tmp_path / "stored.csv", bank=bank,
                              progress=False)
    with monkeypatch.context() as patch:
        patch.setattr(ACFBHead, "project_bank", lambda self, e: (_ for _ in ()).throw(AssertionError("projected")))
        detect(settings)
    detect(DetectSettings(**{**settings.__dict__, "bank": banks["fp32"], "out": tmp_path / "fly.csv"}))
    stored, fly = read_predictions(tmp_path / "stored.csv"), read_predictions(tmp_path / "fly.csv")
    assert len(stored.score) > 0
    np.testing.assert_allclose(stored.score, fly.score, atol=1e-3)
    with pytest.raises(InputError, match=r"bank\.json: field 'projection\.weights'.*bank project"):
        detect(DetectSettings(**{**settings.__dict__, "checkpoint": ckpts["B"], "out": tmp_path / "b.csv"}))


def test_interrupted_projection_leaves_old_or_complete_videos(kv_setup, tmp_path, monkeypatch):
    from acar_deploy.engines.runners.eager import EagerRunner
    from acar_deploy.formats.bank import BankManifest, kv_dir, stored_kv_record

    _, _, banks, _, ckpts = kv_setup
    bank = _fresh(banks["fp16"], tmp_path)
    manifest = BankManifest.load(bank)
    videos = [v.video_id for v in manifest.videos]
    assert manifest.videos[1].entries > 2
    a, b = f"eager:{ckpts['A']}:", f"eager:{ckpts['B']}:"
    real = EagerRunner._project_bank
    calls = {"n": 0}
    fail_at = 1 + -(-manifest.videos[0].entries // 2) + 2  # the probe, video 1 (2 entries a call), 1 call of video 2

    def failing(self, entries):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise RuntimeError("killed")
        return real(self, entries)

    # first projection, interrupted inside video 2: video 1 complete, the others without K/V
    with monkeypatch.context() as patch:
        patch.setattr(EagerRunner, "_project_bank", failing)
        with pytest.raises(RuntimeError, match="killed"):
            _project(bank, a, batch=2)
    assert BankManifest.load(bank).projection is None  # readers still see a bank without K/V
    assert stored_kv_record(bank, videos[0]) is not None
    assert all(not kv_dir(bank, v).exists() for v in videos[1:])
    assert not [p for p in (bank / "videos" / videos[1]).iterdir() if p.name.startswith(".")]  # no temp left
    resumed = _project(bank, a)
    assert resumed.kept == videos[:1] and resumed.projected == videos[1:]
    hashes_a = {v: stored_kv_record(bank, v) for v in videos}
    whole = _fresh(banks["fp16"], tmp_path, "whole")
    _project(whole, a)
    assert hashes_a == {v: stored_kv_record(whole, v) for v in videos}  # = one uninterrupted run

    # replacing A's K/V by B's, interrupted: each video holds A's or B's complete K/V; bank.json still A
    calls["n"] = 0
    with monkeypatch.context() as patch:
        patch.setattr(EagerRunner, "_project_bank", failing)
        with pytest.raises(RuntimeError, match="killed"):
            _project(bank, b, force=True, batch=2)
    records = {v: stored_kv_record(bank, v) for v in videos}
    assert records[videos[0]].weights != hashes_a[videos[0]].weights  # B, complete
    assert all(records[v] == hashes_a[v] for v in videos[1:])  # A, untouched
    from acar_deploy.artifacts import sha256_file

    for v, record in records.items():
        assert sha256_file(kv_dir(bank, v) / "keys.npy") == record.keys_sha256
    from acar_deploy.bank.window import FeatureBank

    reader = FeatureBank(bank)
    reader.use_stored_kv(BankManifest.load(bank).projection.weights)  # still A's
    with pytest.raises(InputError, match=r"kv\.json: field 'weights'.*rerun"):
        reader.check_arrays()
    finished = _project(bank, b, force=True)  # the rerun keeps video 1 (B's, intact) and does the others
    assert finished.kept == videos[:1] and finished.projected == videos[1:]

    # a corrupted K/V file (sha256 differs from kv.json) is re-projected, the others kept
    keys_file = kv_dir(bank, videos[1]) / "keys.npy"
    good = stored_kv_record(bank, videos[1])
    raw = bytearray(keys_file.read_bytes())
    raw[-1] ^= 0xFF
    keys_file.write_bytes(bytes(raw))
    healed = _project(bank, b)
    assert healed.projected == [videos[1]] and stored_kv_record(bank, videos[1]) == good


def test_other_weights_refused_and_banks_without_kv_still_work(kv_setup, tmp_path):
    from acar_deploy.bank.window import FeatureBank
    from acar_deploy.formats.bank import BankManifest

    _, _, banks, models, ckpts = kv_setup
    export = f"eager:{ckpts['A']}:"
    bank = _fresh(banks["fp16"], tmp_path)
    _project(bank, export)
    with pytest.raises(InputError, match=r"bank\.json: field 'projection\.weights'.*--force"):
        _project(bank, f"eager:{ckpts['B']}:")
    from acar_deploy.engines.bank_projection import eager_projection_weights

    with pytest.raises(InputError, match=r"bank\.json: field 'projection\.weights'"):
        FeatureBank(bank).use_stored_kv(eager_projection_weights(ckpts["B"], models["B"].config))
    assert FeatureBank(bank).use_stored_kv(eager_projection_weights(ckpts["A"], models["A"].config))
    again = _project(bank, export)  # same weights: nothing to redo
    assert again.projected == [] and len(again.kept) == len(BankManifest.load(bank).videos)

    # a version-1 bank.json (written before K/V could be stored) loads; windows carry entries only
    old = _fresh(banks["fp16"], tmp_path, "old")
    data = json.loads((old / "bank.json").read_text())
    data["format_version"] = 1
    data.pop("projection", None)
    (old / "bank.json").write_text(json.dumps(data))
    reader = FeatureBank(old)
    assert reader.manifest.format_version == 1 and not reader.has_kv
    assert reader.use_stored_kv(eager_projection_weights(ckpts["A"], models["A"].config)) is False
    video = reader.manifest.videos[0]
    window = reader.window(video.video_id, video.first_timestamp, 2)
    assert window.keys is None and len(window) > 0
    manifest = BankManifest.load(old)
    manifest.write(old)
    assert "projection" not in json.loads((old / "bank.json").read_text())  # stays a version-1 file


def test_cli_bank_project_and_info(kv_setup, tmp_path):
    """`acar-deploy bank project` parses into project_bank_kv: JSON summary, one-line refusals (exit 2)."""
    from typer.testing import CliRunner

    from acar_deploy.cli.main import app
    from acar_deploy.formats.bank import BankManifest

    _, _, banks, _, ckpts = kv_setup
    bank = _fresh(banks["fp16"], tmp_path)
    result = CliRunner().invoke(app, ["bank", "project", str(bank), "--checkpoint", str(ckpts["A"]), "--format", "json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["entries_projected"] == BankManifest.load(bank).entries > 0 and summary["weights"]["depth"] == 2
    result = CliRunner().invoke(app, ["bank", "project", str(bank), "--checkpoint", str(ckpts["B"])])
    assert result.exit_code == 2 and "projection.weights" in result.output and "--force" in result.output
    result = CliRunner().invoke(app, ["bank", "project", str(bank)])
    assert result.exit_code == 2 and "exactly one of --engine" in result.output
    result = CliRunner().invoke(app, ["bank", "info", str(bank), "--format", "json"])
    assert json.loads(result.output)["projection"]["weights"]["checkpoint_sha256"] == summary["weights"]["checkpoint_sha256"]


def test_sharded_projection_takes_every_other_video_and_rank_0_writes_the_manifest(kv_setup, tmp_path, monkeypatch):
    """Rank 1 of 2 (barrier and gather of the process group stubbed out): projects videos 1, 3, ... only
    and leaves bank.json to rank 0."""
    from acar_deploy.engines import bank_projection
    from acar_deploy.formats.bank import BankManifest, kv_dir, stored_kv_record

    _, _, banks, _, ckpts = kv_setup
    bank = _fresh(banks["fp16"], tmp_path)
    videos = [v.video_id for v in BankManifest.load(bank).videos]
    assert len(videos) == 2
    gathered = []
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(bank_projection, "barrier", lambda world: None)
    monkeypatch.setattr(bank_projection, "gather", lambda value, world: gathered.append(value) or [value])
    result = _project(bank, f"eager:{ckpts['A']}:")
    assert gathered == [([videos[1]], [], BankManifest.load(bank).videos[1].entries)]
    assert result.projected == [videos[1]] and result.processes == 2
    assert stored_kv_record(bank, videos[1]) is not None and not kv_dir(bank, videos[0]).exists()
    assert BankManifest.load(bank).projection is None  # rank 0 writes it


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun smoke test on Linux CI only")
def test_torchrun_two_gloo_processes_store_the_same_kv(kv_setup, tmp_path):
    """`bank project` under torchrun (2 gloo processes, one video each) = one process: the same kv.json per
    video (keys/values sha256, weights) and the same bank.json projection; rank 0's summary counts both."""
    from acar_deploy.formats.bank import BankManifest, stored_kv_record

    _, _, banks, _, ckpts = kv_setup
    single = _fresh(banks["fp16"], tmp_path, "single")
    threads = torch.get_num_threads()
    try:
        one = _project(single, f"eager:{ckpts['A']}:", threads=1)
    finally:
        torch.set_num_threads(threads)
    sharded = _fresh(banks["fp16"], tmp_path, "sharded")
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "acar_deploy", "bank", "project", str(sharded),
         "--checkpoint", str(ckpts["A"]), "--threads", "1", "--format", "json"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)  # rank 0 only
    assert summary["processes"] == 2 and summary["projected_videos"] == len(one.projected) == 2
    assert summary["entries_projected"] == one.entries > 0
    videos = [v.video_id for v in BankManifest.load(single).videos]
    assert [stored_kv_record(sharded, v) for v in videos] == [stored_kv_record(single, v) for v in videos]
    assert BankManifest.load(sharded) == BankManifest.load(single)
