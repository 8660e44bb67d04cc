"""Imbalanced classes end to end: the metrics of every epoch and of the test, the per-class
table in the summary, `imgcls eval` and the report; the balanced sampler; class weights."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import LEARN_SEED, at_least, pattern_images, tiny_config
from imgcls.cli import app
from imgcls.config import ConfigError
from imgcls.data.loader import Batches
from imgcls.report import run_sections
from imgcls.report.html import write_report
from imgcls.train import train
from imgcls.train.callbacks import Callback
from imgcls.train.features import FeatureLoader
from imgcls.train.imbalance import resolve_class_weights
from imgcls.train.metrics import check_monitors

TRAIN_COUNTS = [40, 20, 10, 10, 10, 10]  # train/ per class (val takes 20% of each)
TEST_COUNTS = [8, 6, 4, 3, 2, 1]  # test/ per class: the supports of the per-class table
CLASSES = [f"c{i}" for i in range(6)]
# the training split (after val_fraction 0.2): 32, 16, 8, 8, 8, 8 images
AUTO_WEIGHTS = [w * 6 / 19 for w in (1, 2, 4, 4, 4, 4)]  # 1/n scaled to mean 1


def write_split(root, split, counts, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    for i, (label, image) in enumerate(zip(labels, pattern_images(labels, 24, seed),
                                           strict=True)):
        folder = root / split / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:03d}.png")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imbalanced") / "images"
    write_split(root, "train", TRAIN_COUNTS, 2 * LEARN_SEED)
    write_split(root, "test", TEST_COUNTS, 2 * LEARN_SEED + 1)
    return root


def config(folder, **sections):
    data = {"path": str(folder), "image_size": 24, **sections.pop("data", {})}
    return tiny_config(seed=LEARN_SEED, data=data, **sections)


class Probe(Callback):
    """What each epoch trained on: (batches' class name, sampler)."""

    def __init__(self):
        self.seen = []

    def on_epoch_end(self, trainer, metrics):
        self.seen.append((type(trainer.train_batches).__name__, trainer.train_batches.sampler))


@pytest.fixture(scope="module")
def balanced_run(folder, tmp_path_factory):
    """Balanced sampler, a first head-only stage on cached features, TTA, best.pt chosen by
    val_macro_f1."""
    probe = Probe()
    cfg = config(folder, data={"sampler": "balanced"},
                 train={"epochs": 8, "tta": "mirror",
                        "checkpoint": {"monitor": "val_macro_f1", "mode": "max"}},
                 stages=[{"epochs": 1, "train": "head", "cache_features": True},
                         {"epochs": 7, "train": "all"}])
    base = tmp_path_factory.getbasetemp()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMGCLS_CACHE", str(base / "cache"))
        run, summary = train(cfg, base / "balanced-run", callbacks=[probe])
    return run, summary, probe


def test_every_epoch_logs_the_new_validation_metrics(balanced_run):
    run, _, _ = balanced_run
    metrics = run.metrics()
    assert len(metrics) == 8
    for m in metrics:  # the cached-feature epoch (head logits) as well as the others
        assert m["val_loss"] > 0
        for key in ("val_accuracy", "val_macro_f1", "val_balanced_accuracy",
                    "val_top5_accuracy"):  # 6 classes: top-5 exists
            assert 0.0 <= m[key] <= 1.0, key


def test_summary_has_the_test_metrics_and_exact_supports(balanced_run):
    run, summary, _ = balanced_run
    for key in ("test_macro_f1", "test_balanced_accuracy", "test_top5_accuracy"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert [row["class"] for row in summary["per_class"]] == CLASSES
    assert [row["support"] for row in summary["per_class"]] == TEST_COUNTS
    assert summary["sampler"] == "balanced" and summary["class_weights"] is None
    saved = json.loads((run.path / "summary.json").read_text())
    assert [row["support"] for row in saved["per_class"]] == TEST_COUNTS
    # the figures come from the TTA logits (tta: mirror), as test_accuracy does
    recall = [row["recall"] for row in summary["per_class"]]
    assert summary["test_balanced_accuracy"] == pytest.approx(np.mean(recall))
    hits = sum(r * n for r, n in zip(recall, TEST_COUNTS, strict=True))
    assert summary["test_accuracy"] == pytest.approx(hits / sum(TEST_COUNTS), abs=1e-6)


def test_checkpoint_monitors_val_macro_f1(balanced_run):
    run, summary, _ = balanced_run
    scores = [m["val_macro_f1"] for m in run.metrics()]
    best = torch.load(run.checkpoints / "best.pt", weights_only=True)
    assert best["val_macro_f1"] == pytest.approx(max(scores))
    assert summary["best_epoch"] == scores.index(max(scores)) + 1 == best["epoch"]


def test_the_sampler_reaches_cached_feature_stages(balanced_run):
    _, _, probe = balanced_run
    assert probe.seen == [("FeatureLoader", "balanced")] + [("BatchLoader", "balanced")] * 7


def test_balanced_training_learns_the_minority_classes(balanced_run):
    _, summary, _ = balanced_run
    # 6 classes: chance balanced accuracy is 1/6
    at_least(summary["test_balanced_accuracy"], 0.5, "test balanced accuracy",
             sum(TEST_COUNTS))


def test_eval_prints_the_per_class_table_and_json(balanced_run):
    run, summary, _ = balanced_run
    runner = CliRunner()
    shown = runner.invoke(app, ["eval", str(run.path)])
    assert shown.exit_code == 0, shown.output
    for text in ("macro-F1", "balanced accuracy", "top-5 accuracy", "per class", "precision",
                 "support", '"per_class"'):
        assert text in shown.output, text
    only = runner.invoke(app, ["eval", str(run.path), "--json"])
    assert only.exit_code == 0, only.output
    record = json.loads(only.output)
    assert [row["support"] for row in record["per_class"]] == TEST_COUNTS
    assert record["tta_macro_f1"] == pytest.approx(summary["test_macro_f1"], abs=1e-6)
    assert record["tta_top5_accuracy"] == pytest.approx(summary["test_top5_accuracy"])


def test_report_shows_the_per_class_table(balanced_run, tmp_path):
    run, _, _ = balanced_run
    copy = tmp_path / "run"  # without checkpoints: no test predictions to recompute
    shutil.copytree(run.path, copy, ignore=shutil.ignore_patterns("checkpoints"))
    sections = run_sections(copy)
    table = next(s for s in sections if s.title == "per-class metrics (test)").table
    assert [row["class"] for row in table] == CLASSES
    assert [row["support"] for row in table] == [str(n) for n in TEST_COUNTS]
    page = write_report(tmp_path / "report", "run", sections).read_text()
    assert "per-class metrics (test)" in page and "<td>c5</td>" in page
    summary_rows = next(s for s in sections if s.title == "summary").table
    assert "test macro-F1" in [row["figure"] for row in summary_rows]


# -- class weights -------------------------------------------------------------------------

def test_auto_class_weights_are_inverse_frequency_with_mean_1():
    labels = np.array([0] * 90 + [1] * 10)
    assert resolve_class_weights("auto", labels, ["a", "b"]) == pytest.approx([0.2, 1.8])
    three = np.array([0] * 60 + [1] * 30 + [2] * 10)
    assert resolve_class_weights("auto", three, ["a", "b", "c"]) == pytest.approx(
        [1 / 3, 2 / 3, 2])
    # a class without training images gets 1; the mean stays 1
    assert resolve_class_weights("auto", np.array([0] * 10 + [2] * 10), "abc") == (
        pytest.approx([1, 1, 1]))
    assert resolve_class_weights(None, labels, ["a", "b"]) is None
    assert resolve_class_weights([1, 3], labels, ["a", "b"]) == [1.0, 3.0]


def test_class_weights_train_with_sum_smoothing_and_mixup(folder, tmp_path):
    cfg = config(folder, augment={"mix": {"mixup_alpha": 0.4}},
                 train={"epochs": 2, "class_weights": "auto", "loss_reduction": "sum",
                        "label_smoothing": 0.1}, optim={"lr": 0.001})
    _, summary = train(cfg, tmp_path / "run")
    assert summary["class_weights"] == pytest.approx(AUTO_WEIGHTS)
    assert summary["sampler"] == "shuffle"
    assert np.isfinite(summary["test_loss"])


def test_class_weights_of_the_wrong_length_name_the_classes(folder, tmp_path):
    cfg = config(folder, train={"epochs": 1, "class_weights": [1.0, 2.0]})
    with pytest.raises(ConfigError, match=r"train\.class_weights has 2 weight\(s\), but the "
                       r"data has 6 classes \(c0, c1, c2, c3, c4, c5\)"):
        train(cfg, tmp_path / "run")


def test_top5_monitor_needs_more_than_5_classes(folder):
    cfg = config(folder, train={"checkpoint": {"monitor": "val_top5_accuracy"}})
    with pytest.raises(ConfigError, match="train.checkpoint.monitor.*more than 5 classes"):
        check_monitors(cfg, 5)
    check_monitors(cfg, 6)


# -- the balanced sampler ------------------------------------------------------------------

def drawn(batches, epoch):
    return torch.cat(batches.order(epoch)[1])


def test_balanced_sampler_draws_classes_equally_and_reproducibly():
    labels = torch.tensor([0] * 900 + [1] * 100)
    labels = labels[torch.randperm(1000, generator=torch.Generator().manual_seed(0))]

    def batches(seed, sampler="balanced"):
        return Batches(labels, 64, True, False, seed, (0, 1), sampler)

    ids = drawn(batches(0), 0)
    assert len(ids) == len(labels) and len(batches(0)) == 16  # as many images as the split
    minority = (labels[ids] == 1).float().mean().item()
    # Binomial(1000, 1/2): the share's std is 0.016; the shuffle gives exactly 0.1
    assert 0.4 < minority < 0.6
    assert (labels[drawn(batches(0, "shuffle"), 0)] == 1).sum() == 100
    # with replacement, yet spread over each class's images (expected distinct: 99, 384)
    assert len(ids[labels[ids] == 1].unique()) > 80
    assert len(ids[labels[ids] == 0].unique()) > 300
    assert torch.equal(ids, drawn(batches(0), 0))  # same (seed, epoch): same draw
    assert not torch.equal(ids, drawn(batches(0), 1))
    assert not torch.equal(ids, drawn(batches(1), 0))
    features = FeatureLoader(torch.zeros(1000, 2), labels, 64, shuffle=True, seed=0,
                             sampler="balanced")  # cached features: the same order
    assert torch.equal(ids, drawn(features, 0))
