"""Training pieces against hand-computed references: schedule, loss, frozen BN, config, --init."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from acar_deploy.errors import InputError
from acar_deploy.train.config import SchedulerConfig, TrainConfig, load_train_config
from acar_deploy.train.schedule import learning_rate


def test_schedule_is_the_official_warmup_then_steps():
    cfg = SchedulerConfig(base_lr=0.008, warmup_lr=0.064, warmup_epochs=1, milestone_epochs=(5.6, 5.8),
                          lr_mults=(0.1, 0.1))
    steps = 100  # iterations per epoch: warm-up 100 iterations, milestones at 560 and 580
    assert learning_rate(0, steps, cfg) == pytest.approx(0.008)
    assert learning_rate(50, steps, cfg) == pytest.approx(0.008 + 0.5 * (0.064 - 0.008))
    assert learning_rate(99, steps, cfg) == pytest.approx(0.008 + 0.99 * 0.056)
    assert learning_rate(100, steps, cfg) == pytest.approx(0.064)
    assert learning_rate(559, steps, cfg) == pytest.approx(0.064)
    assert learning_rate(560, steps, cfg) == pytest.approx(0.0064)
    assert learning_rate(580, steps, cfg) == pytest.approx(0.00064)
    # milestones are int(epochs * steps): 5.6 * 7 = 39.2 -> 39
    assert learning_rate(38, 7, cfg) == pytest.approx(0.064) and learning_rate(39, 7, cfg) == pytest.approx(0.0064)


def test_loss_is_bce_on_pose_softmax_and_sigmoid_scores():
    from acar_deploy.train.loss import ava_loss

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (3, 60))
    targets = (rng.random((3, 60)) < 0.2).astype(np.float64)
    pose = np.exp(logits[:, :13]) / np.exp(logits[:, :13]).sum(1, keepdims=True)
    rest = 1 / (1 + np.exp(-logits[:, 13:]))
    p = np.concatenate([pose, rest], 1)
    expected = -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean()
    got = ava_loss(torch.tensor(logits, dtype=torch.float32), torch.tensor(targets, dtype=torch.float32))
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_official_yaml_train_section_loads(tmp_path):
    path = tmp_path / "official.yaml"
    path.write_text(
        "train:\n  batch_size: 2\n  n_epochs: 5\n  optimizer:\n    type: SGD\n    kwargs:\n      momentum: 0.8\n"
        "      weight_decay: 0.0000001\n      nesterov: True\n  scheduler:\n    type: step\n"
        "    milestone_epochs: [4.6, 4.8]\n    lr_mults: [0.1, 0.1]\n    base_lr: 0.008\n    warmup_lr: 0.064\n"
        "    warmup_epochs: 1\n"
    )
    cfg = load_train_config(path)
    assert (cfg.batch_size, cfg.n_epochs, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (2, 5, 0.8, 1e-7)
    assert cfg.scheduler.milestone_epochs == (4.6, 4.8) and cfg.optimizer.nesterov
    assert load_train_config(None) == TrainConfig()
    path.write_text("train:\n  scheduler:\n    type: cosine\n")
    with pytest.raises(InputError, match="cosine"):
        load_train_config(path)


def _tiny_batch(n_clips=2, boxes_per_clip=2, seed=0, size=(64, 64)):
    g = torch.Generator().manual_seed(seed)
    clips = torch.randn(n_clips, 3, 32, *size, generator=g)
    rois = []
    for b in range(n_clips):
        for _ in range(boxes_per_clip):
            x1, y1 = torch.rand(2, generator=g) * 0.5
            rois.append([b, float(x1), float(y1), float(x1) + 0.4, float(y1) + 0.4])
    targets = (torch.rand(len(rois), 60, generator=g) < 0.1).float()
    return {"clips": clips, "rois": torch.tensor(rois), "targets": targets}


def test_train_step_freezes_bn_statistics_but_trains_bn_affine():
    from acar_deploy.model.acar import build_model
    from acar_deploy.train.loop import make_optimizer, set_train_mode, train_step

    torch.manual_seed(0)
    model = build_model("acar_tiny")
    bn = model.backbone.slow_bn1 if hasattr(model.backbone, "slow_bn1") else next(
        m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d))
    mean_before, weight_before = bn.running_mean.clone(), bn.weight.detach().clone()
    set_train_mode(model, freeze_bn=True)
    assert not bn.training and model.head.training
    loss, rois = train_step(model, make_optimizer(model, TrainConfig()), _tiny_batch(), "cpu")
    assert rois == 4 and math.isfinite(loss)
    assert torch.equal(bn.running_mean, mean_before)  # statistics frozen
    assert not torch.equal(bn.weight.detach(), weight_before)  # affine still learns


def test_train_step_update_matches_a_hand_computed_sgd_step():
    """One step on the linear head: new weights = w - lr * (g + wd * w) with Nesterov momentum (first step)."""
    from acar_deploy.model.acar import build_model
    from acar_deploy.train.loop import make_optimizer, train_step
    from acar_deploy.train.loss import ava_loss

    torch.manual_seed(0)
    model = build_model("linear_tiny").train()
    batch = _tiny_batch()
    w0 = model.head.fc.weight.detach().clone()
    grad = torch.autograd.grad(ava_loss(model(batch["clips"], batch["rois"]), batch["targets"]),
                               model.head.fc.weight)[0]
    cfg = TrainConfig()
    opt = make_optimizer(model, cfg)
    for group in opt.param_groups:
        group["lr"] = 0.05
    train_step(model, opt, batch, "cpu")
    d = grad + cfg.optimizer.weight_decay * w0  # momentum buffer after one step = d; nesterov: d + 0.9 * d
    expected = w0 - 0.05 * (d + cfg.optimizer.momentum * d)
    torch.testing.assert_close(model.head.fc.weight.detach(), expected, rtol=1e-5, atol=1e-7)


def test_init_loads_everything_but_a_classifier_of_another_size(tmp_path):
    from dataclasses import replace

    from acar_deploy.model.acar import ACARModel
    from acar_deploy.model.checkpoint import save_checkpoint
    from acar_deploy.model.config import get_config
    from acar_deploy.train.loop import load_init_weights

    base = get_config("acar_tiny")
    torch.manual_seed(1)
    source = ACARModel(replace(base, head=replace(base.head, num_classes=80)))
    path = save_checkpoint(source, tmp_path / "zoo.pt")
    torch.manual_seed(2)
    target = ACARModel(base)
    fc_before = target.head.fc2.weight.detach().clone()
    skipped = load_init_weights(target, path)
    assert skipped == ["head.fc2.weight"]
    torch.testing.assert_close(target.head.fc2.weight, fc_before, rtol=0, atol=0)
    for key, value in source.state_dict().items():
        if not key.startswith("head.fc2."):
            torch.testing.assert_close(target.state_dict()[key], value, rtol=0, atol=0)
    with pytest.raises(InputError, match="--init"):
        load_init_weights(ACARModel(get_config("linear_tiny")), path)


def test_train_cli_bad_input_exits_2_with_one_line(tmp_path):
    from typer.testing import CliRunner

    from acar_deploy.cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["train", "--config", "acar_tiny", "--data", str(tmp_path / "nowhere"),
                              "--out", str(tmp_path / "run")])
    assert res.exit_code == 2
    assert "dataset.json" in res.output and "acar-deploy synth" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["train", "--config", str(tmp_path / "missing.yaml"), "--data", str(tmp_path),
                              "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "missing.yaml" in res.output


@pytest.mark.gpu
def test_mixed_precision_step_on_cuda_follows_the_fp32_step():
    """AMP (autocast fp16 + GradScaler) changes the weights like the fp32 step, to fp16 accuracy."""
    from acar_deploy.model.acar import build_model
    from acar_deploy.train.loop import make_optimizer, set_train_mode, train_step

    results = []
    for amp in (False, True):
        torch.manual_seed(0)
        model = build_model("linear_tiny").cuda()
        set_train_mode(model, freeze_bn=True)
        opt = make_optimizer(model, TrainConfig())
        w0 = model.head.fc.weight.detach().clone()
        scaler = torch.amp.GradScaler("cuda", init_scale=1024.0) if amp else None
        loss, _ = train_step(model, opt, _tiny_batch(), torch.device("cuda"), scaler=scaler)
        assert math.isfinite(loss)
        results.append(model.head.fc.weight.detach() - w0)
    torch.testing.assert_close(results[1], results[0], rtol=0.05, atol=1e-4)
