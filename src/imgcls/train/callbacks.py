"""Cross-cutting concerns as callbacks, so the training loop stays one readable screen.

Hooks are called in list order; `state_dict`/`load_state_dict` let a resumed run continue
each callback exactly where it stopped.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from imgcls.tracking.io import atomic_torch_save

if TYPE_CHECKING:
    from imgcls.train.trainer import Trainer

console = Console()


class Callback:
    def on_fit_start(self, trainer: Trainer) -> None: ...
    def on_batch_end(self, trainer: Trainer, images: int) -> None: ...
    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None: ...
    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Monitor:
    """Tracks the best value of one metric."""

    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0):
        self.monitor, self.mode, self.min_delta = monitor, mode, min_delta
        self.best = -math.inf if mode == "max" else math.inf

    def improved(self, metrics: dict[str, Any]) -> bool:
        if self.monitor not in metrics:
            raise KeyError(f"cannot monitor {self.monitor!r}: this run logs "
                           f"{', '.join(k for k in metrics if k != 'epoch')} "
                           "(val_* needs data.val_fraction > 0)")
        value = metrics[self.monitor]
        better = (value > self.best + self.min_delta if self.mode == "max"
                  else value < self.best - self.min_delta)
        if better:
            self.best = value
        return better


class MetricsLog(Callback):
    """metrics.jsonl: one line per epoch."""

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        trainer.run.append_metrics(metrics)


class EarlyStopping(Callback):
    def __init__(self, monitor: str, mode: str, patience: int, min_delta: float):
        self.tracker = Monitor(monitor, mode, min_delta)
        self.patience, self.wait = patience, 0

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        self.wait = 0 if self.tracker.improved(metrics) else self.wait + 1
        if self.wait >= self.patience:
            trainer.stop_reason = (f"early stopping: {self.tracker.monitor} did not improve "
                                   f"for {self.patience} epochs")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.tracker.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.best, self.wait = state["best"], state["wait"]


class Checkpoint(Callback):
    """best.pt (weights) whenever the monitored metric improves; last.pt (everything needed
    to resume) after every epoch. Both are written atomically."""

    def __init__(self, monitor: str, mode: str):
        self.tracker = Monitor(monitor, mode)
        self.best_epoch = 0

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        folder = trainer.run.checkpoints
        if self.tracker.improved(metrics):
            self.best_epoch = metrics["epoch"]
            atomic_torch_save({"model": trainer.model.state_dict(), "epoch": metrics["epoch"],
                               self.tracker.monitor: self.tracker.best}, folder / "best.pt")
        atomic_torch_save(trainer.state_dict(), folder / "last.pt")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.tracker.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.best, self.best_epoch = state["best"], state["best_epoch"]


class TensorBoard(Callback):
    def __init__(self) -> None:
        self.writer = None

    def on_fit_start(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events of epochs after the resumed checkpoint
        self.writer = SummaryWriter(str(trainer.run.path / "tensorboard"),
                                    purge_step=trainer.epoch + 1)

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        for key, value in metrics.items():
            if key != "epoch":
                group, _, name = key.partition("_")
                self.writer.add_scalar(f"{group}/{name}" if name else key, value,
                                       metrics["epoch"])
        self.writer.flush()

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        self.writer.close()


class ProgressBar(Callback):
    """A live bar with images/s and ETA on a terminal, and one line per epoch anywhere."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[speed]:>6.0f} img/s"), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=True)
        self.task = None

    def on_fit_start(self, trainer: Trainer) -> None:
        steps = len(trainer.train_loader)
        self.progress.start()
        self.task = self.progress.add_task("train", total=trainer.cfg.train.epochs * steps,
                                           completed=trainer.epoch * steps, speed=0.0)
        self.first = (time.perf_counter(), 0)

    def on_batch_end(self, trainer: Trainer, images: int) -> None:
        now = time.perf_counter()
        if images <= trainer.train_loader.batch_size:  # measure from the first step's end
            self.first = (now, images)
        speed = (images - self.first[1]) / max(now - self.first[0], 1e-9)
        self.progress.update(self.task, advance=1, speed=speed,
                             description=f"epoch {trainer.epoch + 1}/{trainer.cfg.train.epochs}")

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        shown = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in metrics.items())
        self.progress.console.print(shown)

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        self.progress.stop()
