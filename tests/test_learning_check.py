"""The learning check: warnings about runs that fail silently (validation at chance while
training learns, eval-mode and train-mode networks that disagree, learning nothing), in
the log and summary.json, without changing what training computes."""

from __future__ import annotations

import copy
import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import imgcls.train
import imgcls.train.setup
from conftest import make_image_folder, pattern_images, tiny_config, without_timing
from imgcls.config import Config
from imgcls.data import DataSplits, ImageSet
from imgcls.data.loader import BatchLoader
from imgcls.train import train
from imgcls.train.callbacks import Callback, LearningCheck


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data") / "images", classes=4,
                             per_class=24, size=24, mixed_sizes=False)


def tiny(folder, **train_keys):
    return tiny_config(data={"path": str(folder), "image_size": 24},
                       train={"epochs": 4, **train_keys})


# -- a fake trainer: just what the callback reads ---------------------------------------------
def small_net(classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5),
                         nn.Linear(8, classes))


def fake_trainer(model: nn.Module, n: int = 64, classes: int = 4, val: bool = True,
                 **sections):
    """What the check reads of a trainer, around a real model and real images."""
    labels = np.arange(n) % classes
    images = ImageSet(pattern_images(labels, 16), labels)
    loader = BatchLoader(images, 32, torch.full((3,), 0.3), torch.full((3,), 0.2),
                         torch.device("cpu"))
    data = DataSplits(train=images, val=images if val else None, test=images,
                      classes=[str(c) for c in range(classes)])
    return SimpleNamespace(
        cfg=Config.model_validate(sections), data=data, model=model, eval_model=model,
        device=torch.device("cpu"), is_main=True,
        stage=SimpleNamespace(frozen_norms=[]),
        loaders=SimpleNamespace(train=loader, val=loader if val else None))


def fit(model: nn.Module, trainer, steps: int = 25) -> nn.Module:
    """A few Adam steps on the probe images, so predictions differ between images."""
    loader = trainer.loaders.train
    x = loader.normalize(loader.gather(torch.arange(len(loader.labels))))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), loader.labels).backward()
        optimizer.step()
    return model


def calibrate(model: nn.Module, trainer) -> None:
    """Running statistics that match the probe batch exactly (a cumulative average)."""
    loader = trainer.loaders.val
    x = loader.normalize(loader.gather(torch.arange(len(loader.labels))))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model.train()(x)
    model.eval()


CORRUPTIONS = {  # running statistics that no longer describe the activations
    "variance x 1e4": lambda m: m.running_var.mul_(1e4),
    "mean + 3 std": lambda m: m.running_mean.add_(3 * m.running_var.sqrt()),
}


@pytest.fixture(scope="module")
def fitted() -> dict[str, torch.Tensor]:
    """The weights of a small BatchNorm net that tells the probe images apart."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net: threads only contend
    model = small_net()
    trainer = fake_trainer(model)
    fit(model, trainer)
    calibrate(model, trainer)
    torch.set_num_threads(threads)
    return copy.deepcopy(model.state_dict())


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_healthy_batchnorm_agrees_and_corrupted_statistics_warn(caplog, corrupt, fitted):
    model = small_net()
    model.load_state_dict(fitted)
    model.eval()
    trainer = fake_trainer(model)
    assert len(set(model(trainer.loaders.val.normalize(trainer.loaders.val.gather(
        torch.arange(64)))).argmax(1).tolist())) == 4  # it tells the classes apart
    check = LearningCheck()
    agreement, n = check.mode_agreement(trainer)
    assert n == 64 and agreement >= 0.9
    check.on_epoch_end(trainer, {"epoch": 1, "train_accuracy": 0.9, "val_accuracy": 0.85})
    assert check.disagreements == [] and check.warnings(trainer) == []

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                corrupt(m)
    with caplog.at_level(logging.WARNING, logger="imgcls"):
        check.on_epoch_end(trainer, {"epoch": 2, "train_accuracy": 0.9, "val_accuracy": 0.85})
    assert len(check.disagreements) == 1 and check.disagreements[0][1] < 0.5
    [warning] = check.warnings(trainer)
    assert "eval-mode and train-mode predictions disagree in epoch(s) 2" in warning
    assert "BatchNorm running statistics" in warning and "data.channels: 1" in warning
    assert "disagree in epoch(s) 2" in caplog.text


def test_the_probe_leaves_training_state_alone():
    model = small_net()
    trainer = fake_trainer(model, val=False)  # without a validation split: training images
    model.train()
    model[1].eval()  # a mixed state must come back as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    agreement, n = LearningCheck(probe_size=40).mode_agreement(trainer)
    assert n == 40 and 0.0 <= agreement <= 1.0
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [m.training for m in model.modules()] == [True, True, False] + [True] * 8
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_learning_nothing_warns_once_and_survives_a_resume(caplog):
    trainer = fake_trainer(small_net())
    check = LearningCheck()
    with caplog.at_level(logging.WARNING, logger="imgcls"):
        for epoch in range(1, 5):
            check.on_epoch_end(trainer, {"epoch": epoch, "train_accuracy": 0.26,
                                         "val_accuracy": 0.25})
    assert caplog.text.count("learning nothing") == 1  # logged once, at epoch 3
    resumed = LearningCheck()
    resumed.load_state_dict(json.loads(json.dumps(check.state_dict())))
    [warning] = resumed.warnings(trainer)
    assert warning.startswith("learning nothing: training accuracy stayed at chance")
    assert "for 4 epochs" in warning and "lr-find" in warning and "labels" in warning
    # a run that learns is not "learning nothing", nor is a run too short to tell
    check.on_epoch_end(trainer, {"epoch": 5, "train_accuracy": 0.7, "val_accuracy": 0.7})
    assert check.warnings(trainer) == []
    short = LearningCheck()
    short.on_epoch_end(trainer, {"epoch": 1, "train_accuracy": 0.25})
    assert short.warnings(trainer) == []


def test_chance_levels_follow_the_majority_class_and_two_class_runs():
    check = LearningCheck()
    assert check.chance([30, 10]) == (0.75, 40)
    assert check.clearly_above(0.75, 0.5) and not check.clearly_above(0.7, 0.5)
    assert check.clearly_above(0.31, 0.1) and not check.clearly_above(0.29, 0.1)
    assert check.at_chance(0.12, 0.1, 1000) and not check.at_chance(0.2, 0.1, 1000)
    assert check.at_chance(0.3, 0.25, 20)  # a small split: two standard errors of margin


def test_validation_labels_unlike_training_warn_in_log_and_summary(folder, tmp_path,
                                                                   monkeypatch, caplog):
    real = imgcls.train.load_data

    def shifted_val_labels(cfg):  # val labels of another class: a classic silent bug
        data = real(cfg)
        data.val = ImageSet(data.val.images, (data.val.labels + 1) % len(data.classes))
        return data

    monkeypatch.setattr(imgcls.train, "load_data", shifted_val_labels)
    with caplog.at_level(logging.WARNING, logger="imgcls"):
        run, summary = train(tiny(folder), tmp_path / "run")
    saved = json.loads((run.path / "summary.json").read_text())
    assert saved["warnings"] == summary["warnings"]
    chance = [w for w in saved["warnings"] if w.startswith("validation accuracy at chance")]
    assert len(chance) == 1, saved["warnings"]
    assert "labels that differ" in chance[0] and "BatchNorm" in chance[0]
    assert "validation accuracy at chance in epoch(s)" in caplog.text
    assert not any(w.startswith("learning nothing") for w in saved["warnings"])


def test_a_healthy_run_has_no_warnings_and_trains_bit_identically(folder, tmp_path,
                                                                  monkeypatch):
    probed = []
    probe = LearningCheck.mode_agreement

    def counted(self, trainer):
        probed.append(probe(self, trainer))
        return probed[-1]

    monkeypatch.setattr(LearningCheck, "mode_agreement", counted)
    run, summary = train(tiny(folder), tmp_path / "checked")
    assert summary["warnings"] == []
    assert probed and all(a >= 0.5 for a, _ in probed)  # the probe ran, and agreed

    class Off(Callback):
        key = "learning_check"

    monkeypatch.setattr(imgcls.train.setup, "LearningCheck", Off)
    plain, plain_summary = train(tiny(folder), tmp_path / "plain")
    assert "warnings" not in plain_summary

    assert without_timing(run.metrics()) == without_timing(plain.metrics())
    assert summary["test_loss"] == plain_summary["test_loss"]
    weights = run.load_checkpoint("last")["model"]
    for name, value in plain.load_checkpoint("last")["model"].items():
        assert torch.equal(weights[name], value), name


def test_chance_on_imbalanced_data_and_under_the_balanced_sampler():
    check = LearningCheck()
    assert check.clearly_above(0.96, 0.9) and not check.clearly_above(0.94, 0.9)  # halfway
    assert check.clearly_above(0.5, 0.25) and not check.clearly_above(0.45, 0.25)  # 2x chance
    trainer = fake_trainer(nn.Identity(), data={"sampler": "balanced"})
    assert check.train_chance(trainer, [90, 10]) == (0.5, 100)
    assert check.train_chance(fake_trainer(nn.Identity()), [90, 10]) == (0.9, 100)
    check.best_train = 0.5  # at the majority share of 90/10? far below it: yet with weights
    weighted = fake_trainer(nn.Identity(), train={"class_weights": "auto"})
    assert not check.learning_nothing(weighted, 0.9, 100)
    assert check.learning_nothing(fake_trainer(nn.Identity()), 0.9, 100)
