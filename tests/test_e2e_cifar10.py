"""The real thing, small: 2,000 real CIFAR-10 training images (JPEG copy), the full test set."""

from conftest import LEARN_SEED, at_least
from imgcls.configure import validate
from imgcls.train import train


def test_fastnet_on_2000_real_cifar10_images(cifar10_subset, tmp_path):
    cfg = validate({
        "name": "e2e", "seed": LEARN_SEED,
        "data": {"source": "folder", "path": str(cifar10_subset), "val_fraction": 0.1},
        "model": {"name": "fastnet94"},
        "augment": {"flip": "alternate", "translate": 2},
        "optim": {"name": "muon", "lr": 0.67, "momentum": 0.85, "weight_decay": 0.00597,
                  "norm_lr_scale": 0.0791, "norm_weight_decay": 0.0755, "muon_lr": 0.24,
                  "muon_momentum": 0.6},
        "schedule": {"name": "linear"},
        "train": {"epochs": 5, "batch_size": 200, "eval_batch_size": 500,
                  "label_smoothing": 0.2, "loss_reduction": "sum", "tensorboard": False,
                  "checkpoint": {"monitor": "val_loss", "mode": "min"}},
    })
    run, summary = train(cfg, tmp_path / "run")
    assert summary["images"] == {"train": 1800, "val": 200, "test": 10000}
    at_least(summary["test_accuracy"], 0.40, "test accuracy", summary["images"]["test"])
