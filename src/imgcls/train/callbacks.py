"""Cross-cutting concerns as callbacks, so the training loop stays one readable screen.

Hooks are called in list order. Each callback has a stable `key`; a checkpoint stores every
callback's `state_dict()` under its key, so a resumed run restores each one's state by name,
whatever callbacks were added or reordered since. Callbacks act on the trainer through its
public attributes (`eval_model`, `lr_scale`, `stop_reason`, `run`); the trainer never looks
for a particular callback.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Protocol

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import nn

from imgcls.log import ROOT, get_logger
from imgcls.train import distributed
from imgcls.train.optim import frozen_norm_stats
from imgcls.train.schedule import refresh_lr

if TYPE_CHECKING:
    from imgcls.config import Config
    from imgcls.data import DataSplits
    from imgcls.tracking.run import Run
    from imgcls.train.stage import Stage

console = Console()
log = get_logger(__name__)


class Trainer(Protocol):
    """What callbacks see of `imgcls.train.trainer.Trainer`, and all they may change:
    `eval_model` (EMA), `lr_scale` (the plateau schedule), `stop_reason` (early stopping),
    `stage.horizon.steps` (a time-paced run's `train.steps`); `choose_tta` fixes the test's
    TTA on validation before the test."""

    cfg: Config
    run: Run
    model: nn.Module
    eval_model: nn.Module
    device: torch.device
    epoch: int  # epochs completed
    lr_scale: float
    stop_reason: str | None
    stage: Stage
    loaders: Any  # imgcls.train.setup.Loaders
    data: DataSplits
    tta_choice: dict[str, Any] | None  # made on validation during training (restored on resume)

    @property
    def is_main(self) -> bool: ...
    def main_group(self) -> dict[str, Any]: ...
    def choose_tta(self, forgone: float = 0.0) -> str: ...
    def state_dict(self) -> dict[str, Any]: ...


class Callback:
    """`key` names the callback's saved state; subclasses that keep state set their own,
    and a user's callback defaults to its class name."""

    # whether checkpoints of older versions (callback states as a list, by position) hold
    # this callback's state: false for the built-in callbacks added since
    in_list_checkpoints: bool = True

    @property
    def key(self) -> str:
        return type(self).__name__

    def on_setup(self, trainer: Trainer) -> None:
        """Once, when the trainer is built (model and stage ready), before any state is
        restored."""

    def on_fit_start(self, trainer: Trainer) -> None: ...
    def on_batch_end(self, trainer: Trainer, images: int) -> None: ...
    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None: ...

    def on_train_end(self, trainer: Trainer) -> None:
        """After the last epoch, before the final test."""

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        """With the run's summary, which a callback may add its figures to."""

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        """When training stops on an error or Ctrl-C (raised on afterwards): what a callback
        holds open elsewhere is marked as stopped."""

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

    key = "metrics_log"

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if trainer.is_main:
            trainer.run.append_metrics(metrics)


class EarlyStopping(Callback):
    key = "early_stopping"

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
    to resume) after every epoch. Both are written atomically. After training, the best
    weights are put back into the evaluated model for the test."""

    key = "checkpoint"

    def __init__(self, monitor: str, mode: str):
        self.tracker = Monitor(monitor, mode)
        self.best_epoch = 0

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        improved = self.tracker.improved(metrics)  # tracked on every rank, written by rank 0
        if improved:
            self.best_epoch = metrics["epoch"]
        if not trainer.is_main:
            return
        if improved:
            trainer.run.save_checkpoint("best", {"model": trainer.eval_model.state_dict(),
                                                 "epoch": metrics["epoch"],
                                                 self.tracker.monitor: self.tracker.best})
        trainer.run.save_checkpoint("last", trainer.state_dict())

    def on_train_end(self, trainer: Trainer) -> None:
        distributed.barrier()  # rank 0 has written best.pt
        if trainer.run.has_checkpoint("best"):
            state = trainer.run.load_checkpoint("best", trainer.device)
            trainer.eval_model.load_state_dict(state["model"])

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        summary["best_epoch"] = self.best_epoch

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.tracker.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.best, self.best_epoch = state["best"], state["best_epoch"]


class ReduceLROnPlateau(Callback):
    """Keras's ReduceLROnPlateau: every group's lr x `factor` when the monitored metric has
    not improved for `patience` epochs, then `cooldown` epochs without counting; the main
    group's lr never goes below `min_lr`. The factor reaches the lr schedule through
    `trainer.lr_scale`."""

    key = "plateau"

    def __init__(self, monitor: str, mode: str, factor: float, patience: int, cooldown: int,
                 min_lr: float, min_delta: float):
        self.tracker = Monitor(monitor, mode, min_delta)
        self.factor, self.patience, self.cooldown, self.min_lr = factor, patience, cooldown, min_lr
        self.scale, self.wait, self.cooling = 1.0, 0, 0

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        self.wait = 0 if self.tracker.improved(metrics) else self.wait + 1
        if self.cooling:  # epochs of grace after a reduction (torch's reading of Keras's)
            self.cooling -= 1
            self.wait = 0
        if self.wait >= self.patience:
            floor = self.min_lr / trainer.main_group()["initial_lr"]
            self.scale = max(self.scale * self.factor, min(floor, self.scale))
            trainer.lr_scale = self.scale
            refresh_lr(trainer.stage.scheduler)
            self.cooling, self.wait = self.cooldown, 0

    def on_fit_start(self, trainer: Trainer) -> None:
        trainer.lr_scale = self.scale  # a resumed run continues at its reduced lr

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.tracker.best, "scale": self.scale, "wait": self.wait,
                "cooling": self.cooling}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.best, self.scale = state["best"], state["scale"]
        self.wait, self.cooling = state["wait"], state["cooling"]


class EMA(Callback):
    """An exponential moving average of the weights and BatchNorm statistics, updated after
    every optimizer step: a free ensemble along the training path. Validation, best.pt and
    the test use the average. With `warmup` the decay starts low, min(decay,
    (1 + n) / (10 + n)) after n updates, so early random weights fade fast."""

    key = "ema"

    def __init__(self, decay: float, warmup: bool = True):
        self.model: nn.Module | None = None
        self.decay, self.warmup, self.updates = decay, warmup, 0

    def on_setup(self, trainer: Trainer) -> None:
        self.start(trainer.model)
        trainer.eval_model = self.model  # validated, saved as best.pt and tested

    def start(self, model: nn.Module) -> None:
        """Begin the average at `model`'s current weights."""
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        n = self.updates
        decay = min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay
        pairs = zip(self.model.state_dict().values(), model.state_dict().values(), strict=True)
        floats, others = [], []
        for average, current in pairs:
            (floats if average.is_floating_point() else others).append((average, current))
        if floats:
            averages, currents = zip(*floats, strict=True)
            torch._foreach_lerp_(list(averages), list(currents), 1.0 - decay)
        for average, current in others:  # e.g. BatchNorm's batch count
            average.copy_(current)

    def on_batch_end(self, trainer: Trainer, images: int) -> None:
        self.update(trainer.model)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = state["updates"]


class TensorBoard(Callback):
    key = "tensorboard"

    def __init__(self) -> None:
        self.writer = None

    def on_fit_start(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if not trainer.is_main:
            return
        # purge_step drops events of epochs after the resumed checkpoint
        self.writer = SummaryWriter(str(trainer.run.tensorboard),
                                    purge_step=trainer.epoch + 1)

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key, value in metrics.items():
            if key != "epoch":
                group, _, name = key.partition("_")
                self.writer.add_scalar(f"{group}/{name}" if name else key, value,
                                       metrics["epoch"])
        self.writer.flush()

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.close()


class ProgressBar(Callback):
    """A live bar with images/s and ETA on a terminal, and one line per epoch anywhere."""

    key = "progress"

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[speed]:>6.0f} img/s"), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=True)
        self.task = None
        self.quiet = False

    def on_fit_start(self, trainer: Trainer) -> None:
        # one bar, from rank 0, unless imgcls' messages were turned down (`imgcls --quiet`)
        self.quiet = not trainer.is_main or logging.getLogger(ROOT).level > logging.INFO
        if self.quiet:
            return
        steps = len(trainer.loaders.train)
        self.progress.start()
        self.task = self.progress.add_task("train", total=trainer.cfg.train.epochs * steps,
                                           completed=trainer.epoch * steps, speed=0.0)
        self.first = (time.perf_counter(), 0)

    def on_batch_end(self, trainer: Trainer, images: int) -> None:
        if self.quiet:
            return
        now = time.perf_counter()
        if images <= trainer.loaders.train.batch_size:  # measure from the first step's end
            self.first = (now, images)
        speed = (images - self.first[1]) / max(now - self.first[0], 1e-9)
        self.progress.update(self.task, advance=1, speed=speed,
                             description=f"epoch {trainer.epoch + 1}/{trainer.cfg.train.epochs}")

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if self.quiet:
            return
        shown = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in metrics.items())
        self.progress.console.print(shown)

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        if not self.quiet:
            self.progress.stop()


def _epoch_list(epochs: list[int]) -> str:
    """[1, 2, 3, 5] -> '1-3, 5'."""
    runs: list[list[int]] = []
    for e in sorted(set(epochs)):
        if runs and e == runs[-1][-1] + 1:
            runs[-1].append(e)
        else:
            runs.append([e])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def near_chance(accuracy: float, chance: float, n: int, margin: float = 0.03) -> bool:
    """Within `margin`, or two binomial standard errors for small splits (`n` images), of
    chance: a run that learned nothing, whatever its figure says."""
    spread = 2 * math.sqrt(chance * (1 - chance) / max(n, 1))
    return accuracy <= chance + max(margin, spread)


class LearningCheck(Callback):
    """Warns about runs that fail without an error, in the log and in `summary["warnings"]`:

    - chance: validation accuracy at chance (the majority class's share of the validation
      split, within a margin) in an epoch whose training accuracy is clearly above chance;
    - modes: on a fixed batch (the first `probe_size` validation images, else training
      images), the evaluated model's predictions in eval mode and in train mode (batch
      statistics, running statistics left alone, dropout off) agree on fewer than
      `min_agreement` of the images while training accuracy is clearly above chance, from
      epoch `settle_epochs + 1` on (fast recipes' statistics legitimately lag in their
      first epoch);
    - nothing: training accuracy still at chance after `patience` epochs or more.

    "Clearly above chance" is at least chance + `lift` and twice chance (at most halfway
    from chance to 1, so two-class runs can reach it). The probe leaves training alone: no
    gradients, BatchNorm running statistics and batch counts untouched, the RNG state
    restored, every module's mode put back. The epochs behind each warning are the
    callback's state, so a resumed run keeps the warnings of its first part."""

    key = "learning_check"
    in_list_checkpoints = False

    def __init__(self, margin: float = 0.03, lift: float = 0.2, min_agreement: float = 0.5,
                 patience: int = 3, probe_size: int = 256, settle_epochs: int = 1):
        self.margin, self.lift, self.min_agreement = margin, lift, min_agreement
        self.settle_epochs = settle_epochs
        self.patience, self.probe_size = patience, probe_size
        self.chance_epochs: list[list[float]] = []  # [epoch, val accuracy, train accuracy]
        self.disagreements: list[list[float]] = []  # [epoch, agreement, images]
        self.epochs, self.best_train = 0, 0.0  # for "learning nothing"

    # -- what chance is ---------------------------------------------------------------------
    @staticmethod
    def chance(counts: list[int]) -> tuple[float, int]:
        """The majority class's share of a split (1 / classes when balanced), its size."""
        total = sum(counts)
        return (max(counts) / total if total else 1.0), total

    def at_chance(self, accuracy: float, chance: float, n: int) -> bool:
        return near_chance(accuracy, chance, n, self.margin)

    def clearly_above(self, accuracy: float, chance: float) -> bool:
        """chance + lift and twice chance, but never more than halfway from chance to 1
        (imbalanced data: chance 0.9 -> 0.95)."""
        return accuracy >= min(max(chance + self.lift, 2 * chance), (1 + chance) / 2)

    @staticmethod
    def train_chance(trainer: Trainer, counts: list[int]) -> tuple[float, int]:
        """Chance for training accuracy: 1 / classes under the balanced sampler (training
        batches are balanced draws), else the majority class's share."""
        total = sum(counts)
        if trainer.cfg.data.sampler == "balanced":
            return 1 / max(1, sum(c > 0 for c in counts)), total
        return LearningCheck.chance(counts)

    # -- the hooks --------------------------------------------------------------------------
    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        train = metrics.get("train_accuracy")
        if train is None:
            return
        counts = trainer.data.counts()
        train_chance, train_n = self.train_chance(trainer, counts["train"])
        epoch = metrics["epoch"]
        self.epochs += 1
        self.best_train = max(self.best_train, train)
        if self.epochs == self.patience and self.learning_nothing(trainer, train_chance,
                                                                  train_n):
            self._warn(trainer, self.nothing_message(train_chance))
        if not self.clearly_above(train, train_chance):
            return
        val = metrics.get("val_accuracy")
        if val is not None and "val" in counts:
            val_chance, val_n = self.chance(counts["val"])
            if self.at_chance(val, val_chance, val_n):
                first = not self.chance_epochs
                self.chance_epochs.append([epoch, val, train])
                self._warn(trainer, self.chance_message(val_chance) if first else
                           f"epoch {epoch}: validation accuracy still at chance ({val:.3f}, "
                           f"training {train:.3f})")
        if epoch <= self.settle_epochs:
            return
        agreement, n = self.mode_agreement(trainer)
        if n and agreement < self.min_agreement:
            first = not self.disagreements
            self.disagreements.append([epoch, agreement, n])
            self._warn(trainer, self.modes_message() if first else
                       f"epoch {epoch}: eval-mode and train-mode predictions agree on "
                       f"{agreement:.0%} of {n} images")

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        summary["warnings"] = self.warnings(trainer)

    def warnings(self, trainer: Trainer) -> list[str]:
        found = []
        if self.chance_epochs:
            found.append(self.chance_message(self.chance(trainer.data.counts()["val"])[0]))
        if self.disagreements:
            found.append(self.modes_message())
        train_chance, train_n = self.train_chance(trainer, trainer.data.counts()["train"])
        if self.epochs >= self.patience and self.learning_nothing(trainer, train_chance,
                                                                  train_n):
            found.append(self.nothing_message(train_chance))
        return found

    def learning_nothing(self, trainer: Trainer, chance: float, n: int) -> bool:
        """Training accuracy never left chance; not judged with class weights, which trade
        majority-class accuracy for the others on purpose."""
        return (trainer.cfg.train.class_weights is None
                and self.at_chance(self.best_train, chance, n))

    # -- the messages -----------------------------------------------------------------------
    def chance_message(self, chance: float) -> str:
        epochs = _epoch_list([int(e) for e, _, _ in self.chance_epochs])
        val = max(v for _, v, _ in self.chance_epochs)
        train = max(t for _, _, t in self.chance_epochs)
        return (f"validation accuracy at chance in epoch(s) {epochs} (at most {val:.3f}; "
                f"chance {chance:.3f}, the validation split's majority class) while training "
                f"accuracy reached {train:.3f}: the network learns, but not what evaluation "
                "measures. Likely causes: BatchNorm statistics that do not match evaluation "
                "(the eval-mode network differs from the train-mode one); images with "
                "constant or identical channels (grayscale stored as RGB: try data.channels: "
                "1); a learning rate too high for the running statistics (lower optim.lr); "
                "validation labels that differ from the training labels")

    def modes_message(self) -> str:
        epochs = _epoch_list([int(e) for e, _, _ in self.disagreements])
        lowest = min(a for _, a, _ in self.disagreements)
        n = int(self.disagreements[0][2])
        return (f"eval-mode and train-mode predictions disagree in epoch(s) {epochs}: they "
                f"agree on as few as {lowest:.0%} of {n} fixed images (train mode: batch "
                "statistics, dropout off). The BatchNorm running statistics (eval "
                "statistics) do not describe what the network sees in training; likely "
                "causes: images with constant or identical channels (grayscale stored as "
                "RGB: try data.channels: 1), a learning rate too high for the statistics to "
                "follow, or too few steps for them to settle")

    def nothing_message(self, chance: float) -> str:
        return (f"learning nothing: training accuracy stayed at chance (at most "
                f"{self.best_train:.3f}; chance {chance:.3f}) for {self.epochs} epochs. Likely "
                "causes: a learning rate far too high or too low (try imgcls lr-find), "
                "labels that do not match the images, or data without signal (constant or "
                "corrupt images: check with imgcls data info and imgcls augment preview)")

    def _warn(self, trainer: Trainer, message: str) -> None:
        if trainer.is_main:
            log.warning(f"warning: {message}")

    # -- the probe --------------------------------------------------------------------------
    @torch.no_grad()
    def mode_agreement(self, trainer: Trainer) -> tuple[float, int]:
        """The share of a fixed batch on which the evaluated model's eval-mode and
        train-mode predictions agree, and the batch's size (0: nothing to compare)."""
        loader = trainer.loaders.val if trainer.loaders.val is not None else trainer.loaders.train
        n = min(self.probe_size, len(loader.labels))
        model = trainer.eval_model
        frozen = {id(m) for m in trainer.stage.frozen_norms}
        frozen_names = {name for name, m in trainer.model.named_modules() if id(m) in frozen}
        live = [name for name, m in model.named_modules()  # BatchNorms whose mode matters
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and name not in frozen_names]
        if not n or not live:
            return 1.0, 0
        modes = [(m, m.training) for m in model.modules()]
        devices = [trainer.device] if trainer.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                x = loader.normalize(loader.gather(torch.arange(n, device=loader.labels.device)))
                evaluated = model.eval()(x).argmax(1)
                model.train()
                for name, m in model.named_modules():
                    dropout = (isinstance(m, nn.modules.dropout._DropoutNd)
                               or type(m).__name__ in ("DropPath", "DropBlock2d"))
                    if dropout or name in frozen_names:
                        m.eval()
                with frozen_norm_stats(model):
                    trained = model(x).argmax(1)
        finally:
            for m, training in modes:
                m.training = training
        return (evaluated == trained).float().mean().item(), n

    def state_dict(self) -> dict[str, Any]:
        return {"chance_epochs": self.chance_epochs, "disagreements": self.disagreements,
                "epochs": self.epochs, "best_train": self.best_train}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.chance_epochs, self.disagreements = state["chance_epochs"], state["disagreements"]
        self.epochs, self.best_train = state["epochs"], state["best_train"]
