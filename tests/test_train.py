"""End-to-end training on generated images: learning, run folders, callbacks, resume."""

import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import pytest
import torch

from conftest import LEARN_SEED, at_least, at_most, make_image_folder, tiny_config, without_timing
from imgcls.train import evaluate_run, load_model, train
from imgcls.train.trainer import TrainingDiverged


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data") / "images", classes=4,
                             per_class=40, size=24, seed=LEARN_SEED)


def data_section(folder, **kw):
    return {"path": str(folder), "image_size": 24, **kw}


def test_training_learns_and_records_a_complete_run(folder, tmp_path, learn_seed):
    cfg = tiny_config(seed=learn_seed, data=data_section(folder),
                      train={"epochs": 6, "tensorboard": True, "tta": "mirror"})
    run, summary = train(cfg, tmp_path / "run")
    # 4 distinct patterns: chance is 0.25
    at_least(summary["test_accuracy_plain"], 0.8, "test accuracy", summary["images"]["test"])
    at_least(summary["best_val_accuracy"], 0.8, "best val accuracy", summary["images"]["val"])
    for name in ("config.yaml", "environment.json", "preprocess.json", "metrics.jsonl",
                 "summary.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run.path / name).is_file(), name
    assert list((run.path / "tensorboard").glob("events.out.tfevents.*"))
    metrics = run.metrics()
    assert [m["epoch"] for m in metrics] == list(range(1, 7))
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds",
            "images_per_second"} <= set(metrics[0])
    assert metrics[0]["lr"] > metrics[-1]["lr"]  # the cosine schedule ran
    saved = json.loads((run.path / "summary.json").read_text())
    for key in ("test_accuracy", "best_val_accuracy", "wall_seconds",
                "train_images_per_second", "epochs", "seed", "versions", "device"):
        assert key in saved
    assert 0.0 <= saved["test_accuracy"] <= 1.0 and saved["versions"]["torch"]
    assert run.config() == cfg  # the resolved config reproduces the run
    again = evaluate_run(run.path)
    assert again["accuracy"] == pytest.approx(summary["test_accuracy_plain"])
    assert again["tta_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert again["tta_share"] == summary["tta_share"] == 1.0
    # confidence-gated TTA: a gate nothing passes is the plain answer, for no views
    gated = evaluate_run(run.path, tta_margin=1e-9)
    assert gated["tta_share"] < 0.2 and gated["tta_margin"] == 1e-9
    assert abs(gated["tta_accuracy"] - gated["accuracy"]) <= gated["tta_share"]


def test_policy_and_mixup_train_and_report_mixed_accuracy(folder, tmp_path, learn_seed):
    cfg = tiny_config(seed=learn_seed, data=data_section(folder),
                      augment={"ops": [{"name": "randaugment", "num_ops": 1, "magnitude": 5}],
                               "mix": {"mixup_alpha": 0.4, "cutmix_alpha": 1.0}},
                      train={"epochs": 6, "label_smoothing": 0.1})
    run, summary = train(cfg, tmp_path / "run")
    at_least(summary["test_accuracy_plain"], 0.7, "test accuracy",  # chance is 0.25
             summary["images"]["test"])
    train_acc = [m["train_accuracy"] for m in run.metrics()]
    # mixed targets cap what a prediction can score: below 1, yet rising as it learns
    at_least(train_acc[-1], 0.3, "last epoch's mixed train accuracy")
    at_most(train_acc[-1], 0.95, "last epoch's mixed train accuracy")
    at_least(train_acc[-1] - train_acc[0], 0.0, "rise of the mixed train accuracy")
    assert run.config().augment.ops[0]["bins"] == 31  # saved fully resolved


def test_same_seed_same_result(folder, tmp_path):
    cfg = tiny_config(data=data_section(folder), train={"epochs": 2})
    _, a = train(cfg, tmp_path / "a")
    _, b = train(cfg, tmp_path / "b")
    assert a["test_loss"] == b["test_loss"]
    _, c = train(cfg.model_copy(update={"seed": 1}), tmp_path / "c")
    assert c["test_loss"] != a["test_loss"]


def test_early_stopping_stops(folder, tmp_path):
    cfg = tiny_config(data=data_section(folder), optim={"lr": 1e-9}, train={
        "epochs": 20, "early_stopping": {"monitor": "val_accuracy", "mode": "max",
                                         "patience": 2, "min_delta": 0.01}})
    run, summary = train(cfg, tmp_path / "run")
    assert summary["epochs"] == 3 and summary["stop_reason"].startswith("early stopping")


def test_non_finite_loss_stops_with_a_clear_message(folder, tmp_path):
    cfg = tiny_config(data=data_section(folder), optim={"name": "sgd", "lr": 1e12},
                      train={"epochs": 3})
    with pytest.raises(TrainingDiverged, match="lower optim.lr"):
        train(cfg, tmp_path / "run")


def test_a_run_gives_back_the_callers_threads_and_determinism(folder, tmp_path):
    """tiny_config's runs ask for one thread and deterministic kernels; the caller's own
    settings come back after the run, and after one that fails."""
    torch.set_num_threads(3)
    train(tiny_config(data=data_section(folder), train={"epochs": 1}), tmp_path / "run")
    assert torch.get_num_threads() == 3 and not torch.are_deterministic_algorithms_enabled()
    diverging = tiny_config(data=data_section(folder), optim={"name": "sgd", "lr": 1e12})
    with pytest.raises(TrainingDiverged):
        train(diverging, tmp_path / "diverged")
    assert torch.get_num_threads() == 3 and not torch.are_deterministic_algorithms_enabled()


def test_refuses_to_overwrite_a_run(folder, tmp_path):
    cfg = tiny_config(data=data_section(folder), train={"epochs": 1})
    train(cfg, tmp_path / "run")
    with pytest.raises(ValueError, match="already holds a run"):
        train(cfg, tmp_path / "run")


def test_resume_after_kill_9_matches_uninterrupted_run(folder, tmp_path):
    cfg = tiny_config(data=data_section(folder), model={"name": "fastnet94", "args": {}},
                      optim={"name": "muon", "lr": 0.5, "muon_lr": 0.1, "momentum": 0.8,
                             "weight_decay": 1e-3, "norm_lr_scale": 0.1},
                      schedule={"name": "linear", "warmup_epochs": 1},
                      augment={"ops": [{"name": "flip", "alternate": True},
                                       {"name": "translate", "pixels": 2}]},
                      train={"epochs": 6, "batch_size": 32, "loss_reduction": "sum",
                             "label_smoothing": 0.2})
    _, reference = train(cfg, tmp_path / "reference")
    config = tmp_path / "c.yaml"
    config.write_text(cfg.to_yaml())
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "imgcls.cli", "train", str(config),
                             "--run-dir", str(killed)], env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 120
    while (not metrics.exists() or len(metrics.read_text().splitlines()) < 2) \
            and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists(), "the run finished before the kill"
    run, resumed = train(resume=killed)
    ref_metrics = json.loads("[" + ",".join(
        (tmp_path / "reference" / "metrics.jsonl").read_text().splitlines()) + "]")
    assert without_timing(run.metrics()) == without_timing(ref_metrics)
    assert resumed["test_loss"] == reference["test_loss"]
    assert resumed["test_accuracy"] == reference["test_accuracy"]
    a = torch.load(killed / "checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "reference/checkpoints/last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_load_model_predicts_like_the_run(folder, tmp_path):
    cfg = tiny_config(data=data_section(folder), train={"epochs": 2})
    run, _ = train(cfg, tmp_path / "run")
    model, pre, _ = load_model(run.path)
    assert pre.classes == ["class_0", "class_1", "class_2", "class_3"]
    assert model(torch.zeros(1, 3, 24, 24)).shape == (1, 4)


def test_ctrl_c_during_a_checkpoint_write_lets_the_write_finish(tmp_path):
    """torch.save interrupted mid-zip raises a RuntimeError instead of KeyboardInterrupt
    (an interrupted trial then looked failed); the write now completes first."""
    from imgcls.tracking.io import atomic_torch_save

    class CtrlCWhilePickled:
        def __reduce__(self):
            signal.raise_signal(signal.SIGINT)  # the user presses Ctrl-C mid-save
            return (dict, ())

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with pytest.raises(KeyboardInterrupt):
            atomic_torch_save({"w": torch.ones(3), "x": CtrlCWhilePickled()}, tmp_path / "a.pt")
    finally:
        signal.signal(signal.SIGINT, previous)
    with zipfile.ZipFile(tmp_path / "a.pt") as archive:  # complete, without unpickling it
        assert archive.testzip() is None
        assert any(name.endswith("data.pkl") for name in archive.namelist())
