"""Training methods: optimizers, SAM, L2, EMA, clipping, schedules, plateau, TTA, lr-find
and the non-finite-loss stop; hand computations where a formula exists, tiny real runs
otherwise."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from conftest import at_least, at_most
from conftest import learning_config as config
from imgcls.config import ConfigError, OptimConfig, ScheduleConfig
from imgcls.configure import validate
from imgcls.models import build_model
from imgcls.train import load_model, train
from imgcls.train.callbacks import EMA, Callback, ReduceLROnPlateau
from imgcls.train.evaluate import gated_tta_logits, tta_logits
from imgcls.train.lr_find import exponential_lrs, lr_find, smooth, suggest
from imgcls.train.optim import SAM, Lion, create_optimizer, frozen_norm_stats, l2_penalty
from imgcls.train.schedule import create_scheduler
from imgcls.train.trainer import TrainingDiverged


# -- optimizers ------------------------------------------------------------------------------
# sgd at 0.05 (its Nesterov momentum 0.9 is on by default; at 0.1 some seeds sat at chance for
# 6 epochs) and 8 epochs: under IMGCLS_TEST_SEED=0..9 every optimizer reached a loss ratio
# <= 0.44 and a test accuracy >= 0.875 (35 of 40 images)
@pytest.mark.parametrize("optim", [
    {"name": "sgd", "lr": 0.05},
    {"name": "adam", "lr": 0.003},
    {"name": "adamw", "lr": 0.003, "weight_decay": 0.05},
    {"name": "adadelta", "lr": 1.0, "rho": 0.95, "eps": 1e-7},  # note 001's Keras defaults
    {"name": "rmsprop", "lr": 0.002},
    {"name": "lion", "lr": 0.003, "betas": [0.9, 0.99], "weight_decay": 0.1},
    {"name": "sgd", "lr": 0.05, "sam": {"rho": 0.05}},
    {"name": "adamw", "lr": 0.003, "sam": {"rho": 0.5, "adaptive": True}},
    {"name": "adam", "lr": 0.003, "l2": 1e-4, "norm_l2": 1e-4, "clip_grad_norm": 1.0},
])
def test_every_optimizer_learns(folder, tmp_path, optim):
    run, summary = train(config(folder, optim=optim, train={"epochs": 8}), tmp_path / "run")
    losses = [m["train_loss"] for m in run.metrics()]
    # a run that learns nothing stays near 1
    at_most(losses[-1] / losses[0], 0.8, "last / first epoch's train loss")
    at_least(summary["test_accuracy"], 0.6, "test accuracy",  # 4 classes: chance is 0.25
             summary["images"]["test"])


def test_lion_step_is_the_sign_of_the_gradient_with_decoupled_decay():
    w = nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = Lion([{"params": [w], "weight_decay": 0.1}], lr=0.01, betas=(0.9, 0.99))
    w.grad = torch.tensor([0.5, -1e-6, 0.0])
    opt.step()
    expected = torch.tensor([1.0, -2.0, 3.0]) * (1 - 0.01 * 0.1) - 0.01 * torch.tensor(
        [1.0, -1.0, 0.0])
    assert torch.allclose(w.detach(), expected)
    assert torch.allclose(opt.state[w]["exp_avg"], 0.01 * w.grad)


# -- SAM -------------------------------------------------------------------------------------
def quadratic_grad(w, a):
    """loss(w) = 1/2 w^T A w + sum(w^3)/3; its gradient A w + w^2, by hand."""
    return a @ w + w**2


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_step_matches_the_hand_computation(adaptive):
    a = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    w0 = torch.tensor([1.0, -0.5])
    w = nn.Parameter(w0.clone())
    opt = torch.optim.SGD([w], lr=0.1)
    sam = SAM(opt, rho=0.2, adaptive=adaptive)

    def backward():
        opt.zero_grad()
        (0.5 * w @ a @ w + (w**3).sum() / 3).backward()

    backward()
    sam.ascend()
    g = quadratic_grad(w0, a)
    t = w0.abs() if adaptive else torch.ones(2)
    e = 0.2 * t * t * g / (t * g).norm()
    assert torch.allclose(w.detach(), w0 + e)
    backward()
    sam.descend()
    assert torch.allclose(w.detach(), w0)
    opt.step()
    assert torch.allclose(w.detach(), w0 - 0.1 * quadratic_grad(w0 + e, a), atol=1e-6)


def test_second_pass_leaves_batchnorm_statistics_alone():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(8, 3, 6, 6)
    net(x).sum().backward()
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num" in k}
    with frozen_norm_stats(net):
        out = net(x * 3)  # different statistics: would move the running mean if counted
        out.sum().backward()
    after = {k: v for k, v in net.state_dict().items() if k in before}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert net[1].track_running_stats
    net.eval()
    assert not torch.allclose(net(x * 3), out)  # the second pass used batch statistics


def test_sam_refuses_fp16_loss_scaling_when_the_config_is_read(folder):
    with pytest.raises(ConfigError, match="optim.sam: not supported with train.amp = 'fp16'"):
        config(folder, optim={"sam": {"rho": 0.05}}, train={"amp": "fp16", "device": "cuda"})
    stage = {"epochs": 3, "train": "all", "optim": {"sam": {"rho": 0.05}}}
    with pytest.raises(ConfigError, match=r"stages\[0\]\.optim\.sam"):
        config(folder, train={"amp": "fp16", "device": "cuda"}, stages=[stage])


# -- regularizers ----------------------------------------------------------------------------
def test_l2_penalty_is_the_closed_form_and_its_gradient_is_l2_w():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2, bias=False))
    opt = create_optimizer(net, OptimConfig(name="sgd", l2=1e-2, norm_l2=3e-3))
    weights = [net[0].weight, net[2].weight]
    norms = [net[0].bias, net[1].weight, net[1].bias]
    expected = (1e-2 / 2 * sum((p**2).sum() for p in weights)
                + 3e-3 / 2 * sum((p**2).sum() for p in norms))
    penalty = l2_penalty(opt)
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-6)
    penalty.backward()
    assert torch.allclose(net[0].weight.grad, 1e-2 * net[0].weight)
    assert torch.allclose(net[1].bias.grad, 3e-3 * net[1].bias)
    assert l2_penalty(create_optimizer(net, OptimConfig(name="sgd"))) is None


def test_ema_update_and_its_warmup():
    a, b = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    ema = EMA(decay=0.9, warmup=False)
    ema.start(a)
    with torch.no_grad():
        b.weight.fill_(3.0)
        b.running_mean.fill_(2.0)
    b.num_batches_tracked.fill_(7)
    ema.update(b)
    assert torch.allclose(ema.model.weight, torch.full((2,), 0.9 * 1.0 + 0.1 * 3.0))
    assert torch.allclose(ema.model.running_mean, torch.full((2,), 0.1 * 2.0))
    assert ema.model.num_batches_tracked.item() == 7  # counts are copied, not averaged
    warm = EMA(decay=0.999, warmup=True)
    warm.start(a)
    warm.update(b)  # first update: decay (1 + 1) / (10 + 1)
    d = 2 / 11
    assert torch.allclose(warm.model.weight, torch.full((2,), d * 1.0 + (1 - d) * 3.0))


def test_ema_run_evaluates_and_saves_the_average(folder, tmp_path):
    cfg = config(folder, train={"epochs": 4, "ema": {"decay": 0.9}})
    run, summary = train(cfg, tmp_path / "run")
    assert summary["ema"]
    at_least(summary["test_accuracy"], 0.6, "test accuracy", summary["images"]["test"])
    last = torch.load(run.checkpoints / "last.pt", weights_only=True)
    ema_state = last["callbacks"]["ema"]
    best = torch.load(run.checkpoints / "best.pt", weights_only=True)
    if best["epoch"] == 4:  # best.pt holds the average, not the raw weights
        key = next(k for k in best["model"] if k.endswith("weight"))
        assert torch.equal(best["model"][key], ema_state["model"][key])
        assert not torch.equal(best["model"][key], last["model"][key])
    model, _, _ = load_model(run.path)
    assert model.training is False


def test_dropout_and_drop_path_reach_models_that_have_them():
    cfg = validate({"model": {"name": "vgg16_bn", "dropout": 0.3}}).model
    rates = {m.p for m in build_model(cfg, 10, 32).modules() if isinstance(m, nn.Dropout)}
    assert rates == {0.3}
    with pytest.raises(ConfigError, match="resnet18_cifar' has no dropout; models with it:"):
        validate({"model": {"name": "resnet18_cifar", "dropout": 0.3}})
    with pytest.raises(ConfigError, match="drop_path.*timm models have it"):
        validate({"model": {"name": "wrn16_8", "drop_path": 0.1}})
    with pytest.raises(ConfigError, match="set the same thing"):
        validate({"model": {"name": "wrn16_8", "dropout": 0.1, "args": {"dropout": 0.2}}})
    timm_cfg = validate({"model": {"name": "timm:resnet10t", "dropout": 0.25,
                                   "drop_path": 0.1}}).model
    net = build_model(timm_cfg, 10, 32)
    assert net.drop_rate == 0.25
    assert any(type(m).__name__ == "DropPath" for m in net.modules())


# -- schedules -------------------------------------------------------------------------------
def lr_curve(cfg, steps_per_epoch=4, epochs=6, steps=None):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = create_scheduler(opt, cfg, steps_per_epoch, epochs)
    out = []
    for _ in range(steps or steps_per_epoch * epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("cfg,formula", [
    (ScheduleConfig(name="step", step_epochs=2, gamma=0.5), lambda s: 0.5 * 0.5 ** (s // 8)),
    (ScheduleConfig(name="multistep", milestones=[1, 4]),
     lambda s: 0.5 * 0.1 ** ((s >= 4) + (s >= 16))),
    (ScheduleConfig(name="exponential", gamma=0.9), lambda s: 0.5 * 0.9 ** (s // 4)),
    (ScheduleConfig(name="inverse_time", decay=0.004), lambda s: 0.5 / (1 + 0.004 * s)),
    (ScheduleConfig(name="cosine", end_factor=0.1),
     lambda s: 0.5 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / 24)))),
    (ScheduleConfig(name="linear", warmup_epochs=1, start_factor=0.2),
     lambda s: 0.5 * (0.2 + 0.8 * s / 4) if s < 4 else 0.5 * (1 - (s - 4) / 20)),
])
def test_schedule_follows_its_formula(cfg, formula):
    curve = lr_curve(cfg)
    assert curve == pytest.approx([formula(s) for s in range(24)])


def test_schedule_defaults_and_errors():
    assert ScheduleConfig(name="step").gamma == 0.1
    assert ScheduleConfig(name="exponential").gamma == 0.95
    with pytest.raises(ConfigError, match="milestones"):
        validate({"schedule": {"name": "multistep"}})
    with pytest.raises(ConfigError, match="decay"):
        validate({"schedule": {"name": "inverse_time"}})


def test_reduce_lr_on_plateau_follows_keras():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    plateau = ReduceLROnPlateau("val_loss", "min", factor=0.5, patience=2, cooldown=1,
                                min_lr=0.2, min_delta=0.0)
    trainer = SimpleNamespace(lr_scale=1.0, main_group=lambda: opt.param_groups[0])
    sched = create_scheduler(opt, ScheduleConfig(name="plateau"), 1, 20,
                             lambda: trainer.lr_scale)
    trainer.stage = SimpleNamespace(scheduler=sched)
    seen = []
    for loss in [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95]:
        opt.step()
        sched.step()
        plateau.on_epoch_end(trainer, {"val_loss": loss})
        seen.append(opt.param_groups[0]["lr"])
    # two epochs without improvement -> x0.5; one epoch of cooldown; two more -> x0.5 again;
    # then the floor 0.2
    assert seen == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2, 0.2])


def test_plateau_run_lowers_the_logged_lr(folder, tmp_path):
    cfg = config(folder, optim={"lr": 1e-9}, schedule={
        "name": "plateau", "plateau": {"monitor": "val_accuracy", "mode": "max",
                                       "patience": 1, "factor": 0.1}}, train={"epochs": 4})
    run, _ = train(cfg, tmp_path / "run")
    lrs = [m["lr"] for m in run.metrics()]
    assert lrs[0] == pytest.approx(1e-9) and lrs[-1] < lrs[0] / 5


# -- TTA -------------------------------------------------------------------------------------
def test_tta_views_and_weights():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    model = nn.Flatten()  # logits = the pixels themselves: every view is visible
    assert torch.equal(tta_logits(model, x, "none"), x.flatten(1))
    assert torch.allclose(tta_logits(model, x, "mirror"), 0.5 * (x + x.flip(-1)).flatten(1))
    padded = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    up_left, down_right = padded[..., :4, :4], padded[..., 2:, 2:]
    assert up_left[0, 0, 1, 1] == x[0, 0, 0, 0] and down_right[0, 0, 0, 0] == x[0, 0, 1, 1]
    views = [(x, 0.25), (x.flip(-1), 0.25), (up_left, 0.125), (up_left.flip(-1), 0.125),
             (down_right, 0.125), (down_right.flip(-1), 0.125)]
    expected = sum(w * v for v, w in views).flatten(1)
    assert torch.allclose(tta_logits(model, x, "mirror_translate"), expected)


def test_gated_tta_gives_the_views_only_to_unsure_images():
    # logits = the two pixels: the mirror swaps them, so TTA averages each image's logits
    x = torch.tensor([[4.0, 0.0], [0.2, 0.0], [0.0, 3.0], [1.0, 1.1]]).reshape(4, 1, 1, 2)
    model = nn.Flatten()
    plain = model(x)
    full = tta_logits(model, x, "mirror")
    margins = (plain.softmax(1).max(1).values - plain.softmax(1).min(1).values).tolist()
    assert margins[1] < 0.2 and margins[3] < 0.2 and min(margins[0], margins[2]) > 0.9
    gated, viewed = gated_tta_logits(model, x, "mirror", plain, margin=0.2)
    assert viewed == 2
    assert torch.equal(gated[[0, 2]], plain[[0, 2]])  # sure: the plain answer
    assert torch.equal(gated[[1, 3]], full[[1, 3]])  # unsure: the views' mean
    everyone, viewed = gated_tta_logits(model, x, "mirror", plain, margin=None)
    assert viewed == 4 and torch.equal(everyone, full)
    nobody, viewed = gated_tta_logits(model, x, "mirror", plain, margin=1e-9)
    assert viewed == 0 and torch.equal(nobody, plain)


# -- lr-find ---------------------------------------------------------------------------------
def test_lr_find_on_a_tiny_model(folder, tmp_path):
    cfg = config(folder, optim={"name": "adamw", "lr": 0.01, "norm_lr_scale": 2})
    torch.set_num_threads(3)  # the caller's; the config asks for one
    result = lr_find(cfg, tmp_path / "find", start=1e-4, end=100, steps=60)
    assert torch.get_num_threads() == 3 and not torch.are_deterministic_algorithms_enabled()
    assert result.lrs == pytest.approx(list(exponential_lrs(1e-4, 100, 60)[:len(result.lrs)]))
    assert "diverged" in result.stopped and len(result.lrs) < 60
    # it learned on the way
    at_most(min(result.smoothed) / result.smoothed[0], 0.8, "lowest / first smoothed loss")
    assert 1e-4 < result.suggested_lr < result.lrs[-1]
    assert result.suggested_lr <= result.min_loss_lr
    saved = json.loads((tmp_path / "find" / "lr_find.json").read_text())
    assert saved["suggested_lr"] == result.suggested_lr


def test_lr_find_smoothing_and_suggestion_by_hand():
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])  # bias-corrected
    lrs = list(exponential_lrs(1e-3, 1.0, 31))
    losses = [2.0 - (0.1 if i < 10 else 1.0 if i < 20 else 1.5) * (i / 30) for i in range(31)]
    steepest, lowest = suggest(lrs, losses, skip=0.0)
    assert steepest == lrs[20] and lowest == lrs[30]


# -- non-finite loss -------------------------------------------------------------------------
class PoisonWeights(Callback):
    """Makes the loss NaN from the second step of epoch 2 on, as a bad step would."""

    def on_batch_end(self, trainer, images):
        if trainer.epoch == 1 and images == trainer.loaders.train.batch_size:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))


def test_nan_loss_stops_at_once_and_keeps_the_last_good_checkpoint(folder, tmp_path):
    cfg = config(folder, train={"epochs": 3})
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 2: training loss is nan"):
        train(cfg, tmp_path / "run", callbacks=[PoisonWeights()])
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert not (tmp_path / "run" / "summary.json").exists()


# -- progressive resizing --------------------------------------------------------------------
class RecordSizes(Callback):
    """The image sizes the network was actually fed in training, per epoch."""

    def __init__(self):
        self.sizes, self.seen = [], set()

    def on_fit_start(self, trainer):
        def record(module, args):
            if module.training and torch.is_grad_enabled():  # not the no-grad mode probe
                self.seen.add(args[0].shape[-1])
        trainer.model.register_forward_pre_hook(record)

    def on_epoch_end(self, trainer, metrics):
        self.sizes.append(self.seen)
        self.seen = set()


def test_progressive_resizing_trains_small_then_full_size(folder, tmp_path):
    sizes = RecordSizes()
    cfg = config(folder, model={"name": "fastnet94", "args": {}},
                 train={"epochs": 5, "image_sizes": [12, 16, 24]})
    _, summary = train(cfg, tmp_path / "run", callbacks=[sizes])
    assert sizes.sizes == [{12}, {16}, {24}, {24}, {24}]  # the last entry holds
    at_least(summary["test_accuracy"], 0.6, "test accuracy", summary["images"]["test"])
    with pytest.raises(ConfigError, match="image_sizes.0"):
        validate({"train": {"image_sizes": [2]}})
    _, cropped = train(cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"resize_mode": "crop"})}), tmp_path / "crop")
    at_least(cropped["test_accuracy"], 0.6, "test accuracy, crop mode",
             cropped["images"]["test"])
    assert cropped["test_loss"] != summary["test_loss"]
    flatten_head = config(folder, train={"image_sizes": [16, 24]})
    with pytest.raises(ConfigError, match="flowers_cnn cannot take 16 px inputs"):
        train(flatten_head, tmp_path / "flat")
