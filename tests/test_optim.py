import pytest
import torch

from imgcls.config import OptimConfig, ScheduleConfig
from imgcls.models import create_model
from imgcls.train.optim import create_optimizer, orthogonalize
from imgcls.train.schedule import create_scheduler


def lrs(scheduler, steps):
    out = []
    for _ in range(steps):
        out.append([g["lr"] for g in scheduler.optimizer.param_groups])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def test_param_groups_kinds_and_per_group_settings():
    net = create_model("fastnet94", 10)
    cfg = OptimConfig(name="muon", lr=0.5, weight_decay=0.01, norm_lr_scale=0.1,
                      norm_weight_decay=0.2, muon_lr=0.24)
    groups = {(g["kind"], g["horizon_epochs"]): g for g in create_optimizer(net, cfg).param_groups}
    assert set(groups) == {("norm", 3.0), ("filters", None), ("norm", None), ("weights", None)}
    assert groups[("filters", None)]["lr"] == 0.24
    assert groups[("filters", None)]["weight_decay"] == 0.0
    assert groups[("norm", None)]["lr"] == pytest.approx(0.05)
    assert groups[("norm", None)]["weight_decay"] == 0.2
    assert groups[("weights", None)]["params"] == [net.head.weight]
    frozen = {id(net.whiten.weight)} | {id(m.weight) for m in net.modules()
                                        if isinstance(m, torch.nn.BatchNorm2d)}
    assert not frozen & {id(p) for g in groups.values() for p in g["params"]}


def test_norms_and_biases_get_no_decay_by_default():
    net = create_model("resnet18_cifar", 10)
    groups = create_optimizer(net, OptimConfig(name="adamw", weight_decay=0.05)).param_groups
    decay = {g["kind"]: g["weight_decay"] for g in groups}
    assert decay == {"weights": 0.05, "norm": 0.0}


def test_linear_schedule_and_shorter_horizon():
    net = create_model("fastnet94", 10)
    opt = create_optimizer(net, OptimConfig(name="muon"))
    sched = create_scheduler(opt, ScheduleConfig(name="linear"), steps_per_epoch=10, epochs=6)
    history = lrs(sched, 61)
    kinds = [(g["kind"], g["horizon_epochs"]) for g in opt.param_groups]
    short = kinds.index(("norm", 3.0))
    main = kinds.index(("weights", None))
    base = opt.param_groups[main]["initial_lr"]
    assert history[0][main] == pytest.approx(base)
    assert history[30][main] == pytest.approx(base * 0.5)
    assert history[60][main] == pytest.approx(0.0)
    assert history[15][short] == pytest.approx(opt.param_groups[short]["initial_lr"] * 0.5)
    assert all(h[short] == 0.0 for h in history[30:])  # frozen after its 3 epochs


@pytest.mark.parametrize("name", ["cosine", "onecycle", "linear"])
def test_warmup_rises_from_start_factor_then_decays(name):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cfg = ScheduleConfig(name=name, warmup_epochs=1, start_factor=0.1, end_factor=0.01)
    history = [h[0] for h in lrs(create_scheduler(opt, cfg, 10, 5), 51)]
    assert history[0] == pytest.approx(0.1)
    assert all(a <= b + 1e-12 for a, b in zip(history[:10], history[1:11], strict=True))
    assert history[10] == pytest.approx(1.0)
    assert all(a >= b - 1e-12 for a, b in zip(history[10:50], history[11:51], strict=True))
    assert history[50] == pytest.approx(0.01)


def test_muon_update_is_orthogonal_and_keeps_filter_norms():
    torch.manual_seed(0)
    g = torch.randn(64, 288)
    singular = torch.linalg.svdvals(orthogonalize(g))
    assert singular.min() > 0.5 and singular.max() < 1.5  # all directions move alike
    conv = torch.nn.Conv2d(32, 64, 3, bias=False)
    opt = create_optimizer(conv, OptimConfig(name="muon", muon_lr=0.1))
    conv(torch.randn(4, 32, 8, 8)).square().sum().backward()
    opt.step()
    opt.step()
    assert conv.weight.norm().item() == pytest.approx(64**0.5, rel=0.05)


def test_muon_resets_the_filter_norm_only_every_n_steps():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 16, 3, bias=False)
    opt = create_optimizer(conv, OptimConfig(name="muon", muon_lr=0.5,
                                             muon_renormalize_every=3))
    norms = []
    for _ in range(6):
        norms.append(conv.weight.norm().item())
        conv.weight.grad = torch.randn_like(conv.weight)
        opt.step()
    after_reset = 16**0.5  # steps 1 and 4 reset the norm before their update
    assert norms[0] != pytest.approx(after_reset, rel=0.01)  # the init's own norm
    # between resets the updates move it (orthogonal, 16 filters: norm ~4, at lr 0.5)
    for at in (1, 2, 4, 5):
        assert abs(norms[at] - after_reset) > 0.05, norms
    conv.weight.grad = torch.randn_like(conv.weight)
    with torch.no_grad():
        conv.weight.mul_(3.0)
    opt.step()  # step 7: a reset, so the scale-up is gone
    assert conv.weight.norm().item() < 2 * after_reset
    assert opt.state_dict()["state"][0]["muon_step"] == 7  # resumed runs keep the phase
