"""Data-parallel training: two gloo processes (as torchrun would start them) train one run;
only rank 0 writes, the replicas end identical, and the result is the one-process result."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from conftest import LEARN_SEED, at_least, at_most, make_image_folder, tiny_config
from imgcls.train import distributed, train
from imgcls.train.callbacks import Callback


class SaveFinalWeights(Callback):
    """Each process keeps its own final weights, to compare the replicas."""

    def __init__(self, folder: str):
        self.folder = folder

    def on_fit_end(self, trainer, summary):
        torch.save(trainer.model.state_dict(),
                   os.path.join(self.folder, f"rank{trainer.world.rank}.pt"))


def config(folder):
    return tiny_config(seed=LEARN_SEED, data={"path": str(folder), "image_size": 24},
                       model={"name": "flowers_cnn", "args": {"widths": [16, 16],
                                                               "batchnorm": True,
                                                               "global_pool": True,
                                                               "hidden": 0}},
                       optim={"name": "sgd", "lr": 0.05, "momentum": 0.9},
                       train={"epochs": 3, "batch_size": 16, "micro_batch_size": 4})


class StopInEpoch(Callback):
    """Ctrl-C in every process during epoch `epoch` (1-based), after its first step."""

    def __init__(self, epoch: int | None):
        self.epoch = epoch

    def on_batch_end(self, trainer, images):
        if self.epoch is not None and trainer.epoch == self.epoch - 1:
            raise KeyboardInterrupt


def worker(rank: int, world: int, port: int, folder: str, run_dir: str, out: str,
           stop_in: int | None = None, resume: bool = False) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world))
    callbacks = [SaveFinalWeights(out), StopInEpoch(stop_in)]
    try:
        if resume:
            train(resume=run_dir, callbacks=callbacks)
        else:
            train(config(folder), run_dir, callbacks=callbacks)
    except KeyboardInterrupt:
        pass
    finally:
        distributed.teardown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """30 test images: one is 0.033 of the accuracy (24 per class gave 18, 0.056 each)."""
    return make_image_folder(tmp_path_factory.mktemp("data") / "images", classes=3,
                             per_class=40, size=24, seed=LEARN_SEED)


def test_two_processes_train_one_run(folder, tmp_path):
    out = tmp_path / "weights"
    out.mkdir()
    runs = tmp_path / "runs"
    mp.spawn(worker, args=(2, free_port(), str(folder), str(runs / "ddp"), str(out)),
             nprocs=2, join=True)
    # one run folder, written once
    assert [p.name for p in runs.iterdir()] == ["ddp"]
    lines = (runs / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    summary = (runs / "ddp" / "summary.json").read_text()
    assert '"processes": 2' in summary
    # the replicas end with the same weights and BatchNorm statistics
    a, b = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and the same result as one process with the same global batch, within noise
    _, alone = train(config(folder), runs.parent / "alone")
    ddp = __import__("json").loads(summary)
    n = alone["images"]["test"]
    at_least(ddp["test_accuracy"], 0.8, "test accuracy, 2 processes", n)
    at_least(alone["test_accuracy"], 0.8, "test accuracy, 1 process", n)
    at_most(abs(ddp["test_accuracy"] - alone["test_accuracy"]), 0.15,
            "test accuracy, 2 processes - 1 process", n)

    # interrupted in epoch 3 and resumed on two processes: the uninterrupted run's weights
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    mp.spawn(worker, args=(2, free_port(), str(folder), str(runs / "cut"), str(resumed), 3),
             nprocs=2, join=True)
    assert not (runs / "cut" / "summary.json").exists()
    mp.spawn(worker, args=(2, free_port(), str(folder), str(runs / "cut"), str(resumed), None,
                           True), nprocs=2, join=True)
    c = torch.load(resumed / "rank0.pt", weights_only=True)
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert len((runs / "cut" / "metrics.jsonl").read_text().splitlines()) == 3
