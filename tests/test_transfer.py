"""Transfer learning: pretrained weights from files and runs, freezing, staged training,
cached features, on-the-fly resizing to the weights' input size."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import LEARN_SEED, at_least, make_image_folder, tiny_config, without_timing
from imgcls.config import ConfigError, OptimConfig
from imgcls.models import create_model
from imgcls.models.parts import (
    ModelStructureError,
    frozen_norms,
    layers,
    stage_depths,
    stages,
    trainable_parameters,
)
from imgcls.models.pretrained import PretrainedError, apply_state_dict, load_pretrained
from imgcls.tracking.run import Run
from imgcls.train import train
from imgcls.train.callbacks import Callback
from imgcls.train.optim import create_optimizer


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data") / "images", classes=4,
                             per_class=30, size=24, seed=LEARN_SEED)


@pytest.fixture(scope="module")
def other_folder(tmp_path_factory):
    """A second task: 3 classes, other images."""
    return make_image_folder(tmp_path_factory.mktemp("data2") / "images", classes=3,
                             per_class=30, size=24, seed=LEARN_SEED)


SMALL_RESNET = {"name": "timm:resnet10t", "small_input": True}


def config(folder, **sections):
    sections.setdefault("model", {"name": "resnet18_cifar", "args": {}})
    return tiny_config(data={"path": str(folder), "image_size": 24}, seed=LEARN_SEED,
                       **sections)


@pytest.fixture(scope="module")
def source_run(folder, tmp_path_factory):
    """A 'pretrained' backbone: resnet18_cifar trained by imgcls on the 4-class task. At
    lr 0.003: at 0.01 its first epochs blew up (val loss ~1e4), a seed in 5 then scored 0.75
    and fine-tuning on its features was erratic; at 0.003 IMGCLS_TEST_SEED=0..9 all score 1."""
    run, summary = train(config(folder, optim={"lr": 0.003},
                                train={"epochs": 5, "batch_size": 8}),
                         tmp_path_factory.mktemp("runs") / "source")
    # a sanity check of the fixture (4 patterns, chance 0.25)
    at_least(summary["test_accuracy"], 0.6, "source run's test accuracy",
             summary["images"]["test"])
    return run.path


# -- loading weights ---------------------------------------------------------------------------
def test_timm_state_dict_loads_into_a_model_with_another_head(tmp_path):
    torch.manual_seed(0)
    source = create_model("timm:resnet10t", num_classes=1000)
    path = tmp_path / "resnet10t.pth"
    torch.save(source.state_dict(), path)
    target = create_model("timm:resnet10t", num_classes=5)
    report, pre = load_pretrained(target, str(path), "timm:resnet10t", list("abcde"))
    total = len(target.state_dict())
    assert report.new == ["fc.weight", "fc.bias"]
    assert len(report.loaded) == total - 2
    assert sorted(report.skipped) == ["fc.bias", "fc.weight"]  # the old 1000-class head
    assert torch.equal(target.conv1[0].weight, source.conv1[0].weight)
    assert target.fc.weight.shape == (5, 512)
    # the preprocessing is the weights' (timm's pretrained config: 176 px), ImageNet stats
    assert pre.input_size == 176 and pre.mean == pytest.approx((0.485, 0.456, 0.406))
    assert pre.interpolation == "bicubic"


def test_safetensors_and_wrapped_checkpoints_load(tmp_path):
    from safetensors.torch import save_file

    source = create_model("resnet18_cifar", num_classes=10)
    save_file(source.state_dict(), tmp_path / "w.safetensors")
    torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}},
               tmp_path / "ddp.pt")
    for name in ("w.safetensors", "ddp.pt"):
        target = create_model("resnet18_cifar", num_classes=3)
        report, _ = load_pretrained(target, str(tmp_path / name), "resnet18_cifar",
                                    ["a", "b", "c"])
        assert report.new == ["fc.weight", "fc.bias"]
        assert torch.equal(target.features[0].weight, source.features[0].weight)


def test_clear_errors_for_missing_file_and_shape_mismatch(tmp_path):
    model = create_model("resnet18_cifar", num_classes=3)
    with pytest.raises(PretrainedError, match="no such file or folder"):
        load_pretrained(model, str(tmp_path / "nope.pth"), "resnet18_cifar", ["a", "b", "c"])
    other = create_model("resnet34_cifar", num_classes=3).state_dict()
    with pytest.raises(PretrainedError, match="is missing|has shape"):
        apply_state_dict(model, other, "resnet34.pth")
    wide = create_model("resnet18_cifar", num_classes=3).state_dict()
    wide["features.0.weight"] = torch.zeros(32, 3, 3, 3)
    with pytest.raises(PretrainedError, match=r"features.0.weight has shape \(32, 3, 3, 3\)"):
        apply_state_dict(model, wide, "bad.pth")


def test_hub_weights_offline_fail_with_where_to_put_the_file(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # read once at import: set it too, or an earlier import makes this test wait for the network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    model = create_model("timm:resnet10t", num_classes=3)
    with pytest.raises(PretrainedError, match="model.pretrained: /path/to/that file"):
        load_pretrained(model, True, "timm:resnet10t", ["a", "b", "c"])


# -- freezing ---------------------------------------------------------------------------------
def test_freezing_by_index_by_name_and_by_stages():
    model = create_model("timm:resnet10t", num_classes=3)
    every = [n for n, _ in model.named_parameters()]
    head = {"fc.weight", "fc.bias"}
    assert trainable_parameters(model, train="head") == head
    assert trainable_parameters(model, train="all") == set(every)
    names = layers(model)
    k = names.index("layer4.0.conv1")
    by_index = trainable_parameters(model, fine_tune_at=k)
    assert by_index == head | {n for n in every if n.startswith("layer4.")}
    assert trainable_parameters(model, fine_tune_at="layer4") == by_index
    assert [label for label, _ in stages(model)] == ["stem", "stage 1", "stage 2", "stage 3",
                                                     "stage 4"]
    assert trainable_parameters(model, last_stages=2) == head | {
        n for n in every if n.startswith(("layer3.", "layer4."))}
    with pytest.raises(ModelStructureError, match=f"fine_tune_at = 999: the model has "
                                                  f"{len(names)} layers"):
        trainable_parameters(model, fine_tune_at=999)
    with pytest.raises(ModelStructureError, match="did you mean 'layer4'"):
        trainable_parameters(model, fine_tune_at="layer44")
    with pytest.raises(ModelStructureError, match="last_stages = 9: the model has 5 stages"):
        trainable_parameters(model, last_stages=9)
    frozen = frozen_norms(model, by_index)
    assert model.layer1[0].bn1 in frozen and model.layer4[0].bn1 not in frozen


def test_discriminative_learning_rates_fall_by_stage():
    model = create_model("timm:resnet10t", num_classes=3)
    scales = {n: 0.5 ** depth for n, depth in stage_depths(model).items()}
    optimizer = create_optimizer(model, OptimConfig(name="sgd", lr=0.1), scales)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["fc.weight"])] == pytest.approx(0.1)
    assert lr_of[id(named["layer4.0.conv1.weight"])] == pytest.approx(0.05)
    assert lr_of[id(named["layer3.0.conv1.weight"])] == pytest.approx(0.025)
    assert lr_of[id(named["conv1.0.weight"])] == pytest.approx(0.1 * 0.5 ** 5)  # the stem


def test_registry_models_split_into_blocks():
    model = create_model("resnet18_cifar", num_classes=3)
    labels = [label for label, _ in stages(model)]
    assert labels[:2] == ["features.0", "features.1"] and len(labels) == 10  # stem, bn, 8 blocks
    fast = create_model("fastnet94", num_classes=3)
    assert [label for label, _ in stages(fast)] == ["whiten", "groups.1", "groups.2", "groups.3"]


# -- staged runs -------------------------------------------------------------------------------
HEAD_EPOCHS = 12  # on cached features: milliseconds of training, plus a checkpoint each


def two_stages(folder, source_run, head_epochs=HEAD_EPOCHS, **extra):
    return config(folder, model={"name": "resnet18_cifar", "args": {},
                                 "pretrained": str(source_run)},
                  augment={"ops": []}, train={"epochs": head_epochs + 2},
                  stages=[{"name": "head", "epochs": head_epochs, "train": "head",
                           "optim": {"lr": 0.05}},
                          {"name": "fine-tune", "epochs": 2, "fine_tune_at": "features.9",
                           "optim": {"lr": 0.001}, **extra}])


def test_a_run_started_from_a_head_only_run_equals_the_whole_run(other_folder, source_run,
                                                                   tmp_path):
    """How `imgcls fit` reuses a head-only trial: a two-stage run started where a head-only
    run of the same seed and settings ended (`Run.start_from`, then resume) trains exactly
    what it would have trained whole, without computing the head stage again."""
    whole_cfg = two_stages(other_folder, source_run, head_epochs=2)
    head_cfg = whole_cfg.model_copy(update={
        "stages": whole_cfg.stages[:1],
        "train": whole_cfg.train.model_copy(update={"epochs": 2})})
    whole, _ = train(whole_cfg, tmp_path / "whole")
    head, _ = train(head_cfg, tmp_path / "head")
    started = Run.create(whole_cfg, tmp_path / "started")
    started.start_from(head)
    assert started.load_checkpoint("last")["wall_seconds"] == 0.0  # its clock starts now
    run, summary = train(resume=started.path)
    assert [m["stage"] for m in run.metrics()] == [1, 1, 2, 2]
    assert without_timing(run.metrics()) == without_timing(whole.metrics())
    ours, theirs = (r.load_checkpoint("last")["model"] for r in (run, whole))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert summary["test_accuracy"] == whole.summary()["test_accuracy"]


def test_staged_run_freezes_then_fine_tunes(other_folder, source_run, tmp_path):
    cfg = two_stages(other_folder, source_run, layer_lr_decay=0.5)
    assert cfg.train.epochs == HEAD_EPOCHS + 2
    source = torch.load(source_run / "checkpoints/best.pt", weights_only=True)["model"]
    run, summary = train(cfg, tmp_path / "run")
    final = torch.load(run.checkpoints / "last.pt", weights_only=True)["model"]
    # frozen all along: early weights and BatchNorm statistics are the pretrained ones
    for key in ("features.0.weight", "features.1.running_mean", "features.1.running_var",
                "features.3.residual.0.weight", "features.8.residual.4.running_mean"):
        assert torch.equal(final[key], source[key]), key
    for key in ("features.9.residual.0.weight", "features.9.residual.1.running_mean",
                "features.10.residual.3.weight"):
        assert not torch.equal(final[key], source[key]), key
    metrics = run.metrics()
    assert [m["stage"] for m in metrics] == [1] * HEAD_EPOCHS + [2, 2]
    assert metrics[0]["lr"] == pytest.approx(0.05, rel=0.01)
    # the head's, on a fresh schedule
    assert metrics[HEAD_EPOCHS]["lr"] == pytest.approx(0.001, rel=0.01)
    report = json.loads((run.path / "pretrained.json").read_text())
    assert report["new"] == ["fc.weight", "fc.bias"] and len(report["loaded"]) > 100
    at_least(summary["test_accuracy"], 0.8, "test accuracy",  # 3 patterns: chance is 1/3
             summary["images"]["test"])


def test_freeze_bn_all_keeps_every_statistic_while_everything_trains(other_folder, source_run,
                                                                     tmp_path):
    cfg = config(other_folder, model={"name": "resnet18_cifar", "args": {},
                                      "pretrained": str(source_run)},
                 augment={"ops": []}, train={"epochs": 1},
                 stages=[{"epochs": 1, "train": "all", "freeze_bn": "all",
                          "optim": {"lr": 0.001}}])
    source = torch.load(source_run / "checkpoints/best.pt", weights_only=True)["model"]
    run, _ = train(cfg, tmp_path / "run")
    final = torch.load(run.checkpoints / "last.pt", weights_only=True)["model"]
    statistics = [k for k in source if k.endswith(("running_mean", "running_var"))]
    assert len(statistics) > 20
    for key in statistics:
        assert torch.equal(final[key], source[key]), key
    # the BatchNorm scales and the convolutions still learn
    for key in ("features.1.weight", "features.9.residual.1.weight", "features.0.weight"):
        assert not torch.equal(final[key], source[key]), key


class Interrupt(Callback):
    def __init__(self, epoch: int, armed: bool = True):
        self.epoch, self.armed = epoch, armed

    def on_batch_end(self, trainer, images):
        if self.armed and trainer.epoch == self.epoch - 1 and images > 40:
            raise KeyboardInterrupt


def test_two_stage_run_resumes_in_the_second_stage(other_folder, source_run, tmp_path):
    cfg = two_stages(other_folder, source_run, head_epochs=2)  # it compares, it need not learn
    _, reference = train(cfg, tmp_path / "reference", callbacks=[Interrupt(0, armed=False)])
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", callbacks=[Interrupt(4)])
    last = torch.load(tmp_path / "resumed/checkpoints/last.pt", weights_only=True)
    assert last["epoch"] == 3 and last["stage"] == 1
    run, resumed = train(resume=tmp_path / "resumed", callbacks=[Interrupt(4, armed=False)])
    assert resumed["test_loss"] == reference["test_loss"]
    ref = torch.load(tmp_path / "reference/checkpoints/last.pt", weights_only=True)["model"]
    got = torch.load(run.checkpoints / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_cached_features_train_the_head_like_the_frozen_backbone(other_folder, source_run,
                                                                   tmp_path):
    def head_only(cache):
        return config(other_folder, model={"name": "resnet18_cifar", "args": {},
                                           "pretrained": str(source_run)},
                      augment={"ops": []}, train={"epochs": 3},
                      stages=[{"epochs": 3, "train": "head", "cache_features": cache}])

    _, through = train(head_only(False), tmp_path / "through")
    run, cached = train(head_only(True), tmp_path / "cached")
    assert cached["test_accuracy"] == pytest.approx(through["test_accuracy"], abs=1e-9)
    assert cached["test_loss"] == pytest.approx(through["test_loss"], rel=1e-4)
    a = torch.load(tmp_path / "through/checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(run.checkpoints / "last.pt", weights_only=True)["model"]
    assert torch.allclose(a["fc.weight"], b["fc.weight"], atol=1e-5)
    assert torch.equal(a["features.0.weight"], b["features.0.weight"])


def test_input_size_and_normalization_come_from_the_weights(folder, tmp_path):
    """A backbone trained at 24 px on one dataset, fine-tuned on 16 px images: batches are
    resized to 24 px on the fly and normalized with the backbone's statistics."""
    small = make_image_folder(tmp_path / "small", classes=3, per_class=20, size=16)
    source, _ = train(config(folder, model={"name": "fastnet94", "args": {}},
                             train={"epochs": 1}),
                      tmp_path / "source")
    pre = json.loads((source.path / "preprocess.json").read_text())
    cfg = tiny_config(data={"path": str(small), "image_size": 16},
                      model={"name": "fastnet94", "args": {}, "pretrained": str(source.path)},
                      train={"epochs": 1}, stages=[{"epochs": 1, "train": "all"}])
    run, _ = train(cfg, tmp_path / "target")
    used = json.loads((run.path / "preprocess.json").read_text())
    assert used["image_size"] == 16 and used["input_size"] == 24
    assert used["mean"] == pytest.approx(pre["mean"]) and used["std"] == pytest.approx(pre["std"])
    override = tiny_config(data={"path": str(small), "image_size": 16},
                           model={"name": "fastnet94", "args": {}, "input_size": 32,
                                  "pretrained": str(source.path), "mean": [0.5, 0.5, 0.5]},
                           train={"epochs": 1}, stages=[{"epochs": 1, "train": "head"}])
    run, _ = train(override, tmp_path / "override")
    used = json.loads((run.path / "preprocess.json").read_text())
    assert used["input_size"] == 32 and used["mean"] == [0.5, 0.5, 0.5]


# -- configuration -----------------------------------------------------------------------------
@pytest.mark.parametrize(("stage", "message"), [
    ({"epochs": 1}, "exactly one of train"),
    ({"epochs": 1, "train": "head", "last_stages": 2}, "exactly one of train"),
    ({"epochs": 1, "train": "head", "optim": {"lr": -1}}, r"stages\[0\].*optim.lr"),
    ({"epochs": 1, "train": "head", "optim": {"lrr": 1}}, r"stages\[0\].*optim.lrr"),
    ({"epochs": 1, "train": "all", "cache_features": True}, "cache_features: true needs"),
    ({"epochs": 1, "train": "head", "cache_features": "sometimes"}, "cache_features"),
])
def test_stage_config_errors(folder, stage, message):
    with pytest.raises(ConfigError, match=message):
        config(folder, train={"epochs": 1}, stages=[stage])


def test_epochs_follow_the_stages(folder):
    with pytest.raises(ConfigError, match="stages add up to 3 epochs"):
        config(folder, train={"epochs": 5},
               stages=[{"epochs": 1, "train": "head"}, {"epochs": 2, "train": "all"}])


def test_models_layers_numbers_what_fine_tune_at_counts():
    from typer.testing import CliRunner

    from imgcls.cli import app

    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["models", "timm:resnet10t",
                                                            "--layers"])
    assert result.exit_code == 0, result.output
    model = create_model("timm:resnet10t", num_classes=10)
    index = layers(model).index("layer4.0.conv1")
    row = next(line for line in result.output.splitlines() if " layer4.0.conv1 " in line)
    assert row.split("│")[1].strip() == str(index)
    assert "last_stages: K trains the last K of stem, stage 1" in result.output


def test_a_stage_s_own_gradient_clipping_applies(folder, tmp_path):
    """optim keys a stage changes reach the step, clipping included."""
    seen = []

    class Norms(Callback):
        def on_batch_end(self, trainer, images):
            grads = [p.grad for g in trainer.stage.optimizer.param_groups for p in g["params"]
                     if p.grad is not None]
            seen.append((trainer.stage.index, torch.linalg.vector_norm(
                torch.stack([g.norm() for g in grads])).item()))

    cfg = config(folder, model={"name": "resnet18_cifar", "args": {}}, train={"epochs": 2},
                 optim={"name": "sgd", "lr": 0.05},
                 stages=[{"epochs": 1, "train": "all"},
                         {"epochs": 1, "train": "all", "optim": {"clip_grad_norm": 1e-3}}])
    train(cfg, tmp_path / "run", callbacks=[Norms()])
    assert max(n for stage, n in seen if stage == 0) > 1e-3
    assert all(n <= 1e-3 * 1.001 for stage, n in seen if stage == 1)
