"""Exact resume and DDP equivalence: an interrupted run resumes to the same weights; 2-process gloo DDP
makes the same update as one process over the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from acar_deploy.data.synth import SynthSettings, synthesize

# --- exact resume ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """3 train videos (6 keyframes) + 1 val video, and a config small enough for a few seconds per epoch."""
    import yaml

    root = synthesize(SynthSettings(tmp_path_factory.mktemp("data") / "synth", videos=4, seconds=3, seed=5)).out_dir
    cfg = yaml.safe_load((root / "config.yaml").read_text())
    cfg["input"]["short_side"] = 64
    cfg["train"]["batch_size"] = 2
    cfg["train"]["n_epochs"] = 2
    (root / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    return root


class _Interrupted(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_weights(tiny_data, tmp_path):
    from acar_deploy.model.checkpoint import read_checkpoint
    from acar_deploy.train import TrainSettings, train

    base = TrainSettings(config=str(tiny_data / "tiny.yaml"), data=tiny_data, out=tmp_path / "full", epochs=2,
                         workers=0, threads=1, progress=False)
    full = train(base)
    assert [h.epoch for h in full.history] == [1, 2]

    def stop_after_first(record):
        if record.epoch == 1:
            raise _Interrupted

    # decoding in a worker process this time: the data must not depend on where it is decoded
    cut = replace(base, out=tmp_path / "cut", workers=1)
    with pytest.raises(_Interrupted):
        train(cut, on_epoch_end=stop_after_first)
    assert sorted(p.name for p in (tmp_path / "cut").glob("ckpt_*.pt")) == ["ckpt_1.pt"]
    resumed = train(replace(cut, resume=True))
    assert [h.epoch for h in resumed.history] == [1, 2]

    a = read_checkpoint(full.final_checkpoint)
    b = read_checkpoint(resumed.final_checkpoint)
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    mom_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
    mom_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
    assert all(torch.equal(x, y) for x, y in zip(mom_a, mom_b, strict=True))
    assert full.history[-1].val_map == resumed.history[-1].val_map
    # the weights did change over the run (the comparison is not trivially true)
    first = read_checkpoint(tmp_path / "cut" / "ckpt_1.pt")["state_dict"]
    assert any(not torch.equal(first[k], v) for k, v in b["state_dict"].items() if v.is_floating_point())


def test_existing_run_needs_resume_or_force(tiny_data, tmp_path):
    from acar_deploy.errors import OutputExistsError
    from acar_deploy.train import TrainSettings, train

    settings = TrainSettings(config=str(tiny_data / "tiny.yaml"), data=tiny_data, out=tmp_path / "r", epochs=1,
                             workers=0, threads=1, validate=False, progress=False)
    train(settings)
    with pytest.raises(OutputExistsError, match="--resume"):
        train(settings)


# --- DDP equivalence ----------------------------------------------------------------------------------


def _global_batch():
    """4 clips; rank 0 gets clips 0-1 (3 boxes), rank 1 clips 2-3 (1 box): unequal box counts."""
    g = torch.Generator().manual_seed(123)
    clips = torch.randn(4, 3, 32, 64, 64, generator=g)
    rois = torch.tensor([[0, 0.1, 0.1, 0.5, 0.6], [0, 0.4, 0.2, 0.9, 0.9], [1, 0.2, 0.3, 0.6, 0.8],
                         [3, 0.0, 0.1, 0.4, 0.7]])
    targets = (torch.rand(4, 60, generator=g) < 0.15).float()
    return clips, rois, targets


def _part(rank: int):
    clips, rois, targets = _global_batch()
    lo = 2 * rank
    keep = (rois[:, 0] >= lo) & (rois[:, 0] < lo + 2)
    part_rois = rois[keep].clone()
    part_rois[:, 0] -= lo
    return {"clips": clips[lo:lo + 2], "rois": part_rois, "targets": targets[keep]}


def _model():
    from acar_deploy.model.acar import build_model
    from acar_deploy.train.loop import set_train_mode

    torch.manual_seed(7)
    model = build_model("acar_tiny")
    set_train_mode(model, freeze_bn=True)
    for m in model.modules():  # dropout masks are per-process random draws: no DDP scheme reproduces them
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    return model


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from acar_deploy.train.config import TrainConfig
    from acar_deploy.train.loop import Distributed, make_optimizer, train_step

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model = _model()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = make_optimizer(model, TrainConfig())
    for group in opt.param_groups:
        group["lr"] = 0.1
    loss, rois = train_step(ddp, opt, _part(rank), "cpu", Distributed(rank, world, rank))
    torch.save({"state": model.state_dict(), "loss": loss, "rois": rois}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_two_process_gloo_ddp_matches_one_process_on_the_global_batch(tmp_path):
    import torch.multiprocessing as mp

    from acar_deploy.train.config import TrainConfig
    from acar_deploy.train.loop import make_optimizer, train_step

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)

    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = make_optimizer(model, TrainConfig())
    for group in opt.param_groups:
        group["lr"] = 0.1
    clips, rois, targets = _global_batch()
    loss, n = train_step(model, opt, {"clips": clips, "rois": rois, "targets": targets}, "cpu")
    single = model.state_dict()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["rois"] == n == 4
        assert got["loss"] == pytest.approx(loss, rel=1e-5)
        changed = 0
        for key, value in single.items():
            torch.testing.assert_close(got["state"][key], value, rtol=0, atol=1e-6, msg=key)
            changed += int(not torch.equal(value, before[key]))
        assert changed > 10  # the step moved the weights


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun smoke test on Linux CI only")
def test_torchrun_cli_trains_with_two_gloo_processes(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "acar_deploy.train",
         "--config", str(tiny_data / "tiny.yaml"), "--data", str(tiny_data), "--out", str(out),
         "--epochs", "1", "--workers", "0", "--threads", "1", "--no-val", "--format", "json"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    from acar_deploy.model.checkpoint import read_checkpoint

    ckpt = read_checkpoint(out / "ckpt_1.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2  # both processes' RNG states, for exact resume
    assert ckpt["iteration"] == 2  # 6 train keyframes / (2 processes x 2 clips) -> 2 steps
