"""Learning-rate range test (Smith 2017; fastai's lr_find): train from the config's
initial weights while the lr grows exponentially from `start` to `end`, one step each,
record the loss, and stop once it blows up. The useful lr is where the loss falls fastest;
the run's own schedule, optimizer, augmentation and batch size are what is tested."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from imgcls.config import Config, ConfigError
from imgcls.data import load_data
from imgcls.tracking.run import Run
from imgcls.train.setup import callers_torch_settings
from imgcls.train.trainer import Trainer


@dataclass
class LRFindResult:
    lrs: list[float] = field(default_factory=list)  # the main group's lr at each step
    losses: list[float] = field(default_factory=list)  # mean training loss of the step
    smoothed: list[float] = field(default_factory=list)  # bias-corrected moving average
    steepest_lr: float | None = None  # where the smoothed loss falls fastest (suggested)
    min_loss_lr: float | None = None  # where it is lowest; a tenth of it is a safe choice
    stopped: str = "reached the end lr"

    @property
    def suggested_lr(self) -> float | None:
        return self.steepest_lr

    def to_dict(self) -> dict:
        return {**asdict(self), "suggested_lr": self.suggested_lr}


def exponential_lrs(start: float, end: float, steps: int) -> np.ndarray:
    return start * (end / start) ** (np.arange(steps) / max(1, steps - 1))


def smooth(losses: list[float], beta: float = 0.9) -> list[float]:
    """Exponential moving average with the bias correction of Adam's first moment."""
    average, out = 0.0, []
    for i, loss in enumerate(losses):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta ** (i + 1)))
    return out


def suggest(lrs: list[float], smoothed: list[float], skip: float = 0.1
            ) -> tuple[float | None, float | None]:
    """(steepest-descent lr, lowest-loss lr), looking only up to the lowest loss and past
    the first `skip` share of points, whose average is still settling."""
    if len(lrs) < 5:
        return None, None
    lowest = int(np.argmin(smoothed))
    first = min(int(len(lrs) * skip), max(0, lowest - 2))
    if lowest - first < 2:
        return None, lrs[lowest]
    slope = np.gradient(np.asarray(smoothed[first:lowest + 1]),
                        np.log(np.asarray(lrs[first:lowest + 1])))
    return lrs[first + int(np.argmin(slope))], lrs[lowest]


@callers_torch_settings()
def lr_find(cfg: Config, out: str | Path, start: float = 1e-6, end: float = 10.0,
            steps: int = 100, diverge: float = 4.0) -> LRFindResult:
    """Run the range test into the folder `out` (config, lr_find.json are written there)."""
    if not 0 < start < end:
        raise ConfigError(f"lr-find: need 0 < start < end, got start={start}, end={end}")
    if steps < 5:
        raise ConfigError(f"lr-find: steps = {steps}; need at least 5 points")
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"tensorboard": False, "ema": None})})
    run = Run.create(cfg, out)
    trainer = Trainer(cfg, run, load_data(cfg.data))
    trainer.init_from_data()
    trainer.prepare_batches()
    groups = trainer.stage.optimizer.param_groups
    main_lr = trainer.main_group()["lr"]
    ratios = [g["lr"] / main_lr for g in groups]  # keep the config's per-group lr ratios
    trainer.model.train()

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = 0
        while True:  # as many epochs as the steps need
            yield from trainer.train_batches.epoch(epoch)
            epoch += 1

    result = LRFindResult()
    for lr, (x, y) in zip(exponential_lrs(start, end, steps), batches(), strict=False):
        for group, ratio in zip(groups, ratios, strict=True):
            group["lr"] = lr * ratio
        loss_sum, _ = trainer.train_step(x, y)
        loss = loss_sum.item() / len(y)
        result.lrs.append(float(lr))
        result.losses.append(loss)
        result.smoothed = smooth(result.losses)
        if not math.isfinite(loss) or result.smoothed[-1] > diverge * min(result.smoothed):
            result.stopped = f"loss diverged at lr {lr:.3g}"
            break
    result.steepest_lr, result.min_loss_lr = suggest(result.lrs, result.smoothed)
    run.write_lr_find(result.to_dict())
    return result
