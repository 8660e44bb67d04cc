"""Learning-rate schedules: a warm-up from `start_factor`, then a shape, as a multiplier of
each group's lr, evaluated at every optimizer step. Each param group may run the same
schedule over its own horizon (see `optim.param_groups`); `plateau` multiplies in a factor
that the ReduceLROnPlateau callback lowers when the monitored metric stalls."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch

from imgcls.registry import Registry

if TYPE_CHECKING:
    from imgcls.config import ScheduleConfig


class Position(NamedTuple):
    t: float  # progress through the decay, 0 -> 1, after the warm-up
    epoch: float  # epochs since the start of the run (warm-up included)
    step: int  # optimizer steps since the start


SCHEDULES: Registry[Callable[[ScheduleConfig, Position], float]] = Registry("schedule")


@SCHEDULES.register("constant")
def constant(cfg: ScheduleConfig, at: Position) -> float:
    return 1.0


@SCHEDULES.register("plateau")
def plateau(cfg: ScheduleConfig, at: Position) -> float:
    """Constant; ReduceLROnPlateau (schedule.plateau) lowers it when the metric stalls."""
    return 1.0


@SCHEDULES.register("linear")
def linear(cfg: ScheduleConfig, at: Position) -> float:
    return 1.0 + (cfg.end_factor - 1.0) * at.t


@SCHEDULES.register("cosine")
def cosine(cfg: ScheduleConfig, at: Position) -> float:
    return cfg.end_factor + (1.0 - cfg.end_factor) * 0.5 * (1.0 + math.cos(math.pi * at.t))


@SCHEDULES.register("onecycle")
def onecycle(cfg: ScheduleConfig, at: Position) -> float:
    """Cosine decay; with a warm-up (cosine-shaped, see `multiplier`) this is one-cycle."""
    return cosine(cfg, at)


@SCHEDULES.register("step")
def step(cfg: ScheduleConfig, at: Position) -> float:
    """x gamma every `step_epochs` epochs (torch's StepLR)."""
    return cfg.gamma ** math.floor(at.epoch / cfg.step_epochs + 1e-9)


@SCHEDULES.register("multistep")
def multistep(cfg: ScheduleConfig, at: Position) -> float:
    """x gamma at each epoch in `milestones` (torch's MultiStepLR)."""
    return cfg.gamma ** sum(at.epoch + 1e-9 >= m for m in cfg.milestones)


@SCHEDULES.register("exponential")
def exponential(cfg: ScheduleConfig, at: Position) -> float:
    """x gamma after every epoch (torch's ExponentialLR)."""
    return cfg.gamma ** math.floor(at.epoch + 1e-9)


@SCHEDULES.register("inverse_time")
def inverse_time(cfg: ScheduleConfig, at: Position) -> float:
    """1 / (1 + decay * step): what Keras optimizers' `decay=` argument did (note 003)."""
    return 1.0 / (1.0 + cfg.decay * at.step)


@dataclass
class Horizon:
    """The optimizer steps a stage's schedule spans (param groups with an lr horizon of
    their own keep theirs). Mutable: a time-paced run (`imgcls fit`) stretches or shrinks it
    while it trains, and the decay follows from the step it is at."""

    steps: int


def multiplier(cfg: ScheduleConfig, total: Horizon, warmup_steps: int,
               steps_per_epoch: int) -> Callable[[int], float]:
    shape = SCHEDULES.get(cfg.name)

    def at(step: int) -> float:
        if step < warmup_steps:
            t = step / warmup_steps
            if cfg.name == "onecycle":
                t = 0.5 * (1.0 - math.cos(math.pi * t))
            return cfg.start_factor + (1.0 - cfg.start_factor) * t
        t = (step - warmup_steps) / max(1, total.steps - warmup_steps)
        if t > 1.0:
            return 0.0  # past its horizon: frozen
        return shape(cfg, Position(t, step / steps_per_epoch, step))

    return at


def create_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig,
                     steps_per_epoch: int, epochs: float,
                     scale: Callable[[], float] | None = None,
                     horizon: Horizon | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """Every group's schedule over `epochs` (or `horizon`, when given), or over its own
    `horizon_epochs`; `scale` (the plateau factor) multiplies every group's multiplier."""
    horizon = horizon or Horizon(max(1, round(epochs * steps_per_epoch)))
    lambdas = []
    for group in optimizer.param_groups:
        own = group.get("horizon_epochs")
        total = (Horizon(max(1, round(own * steps_per_epoch))) if own else horizon)
        warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total.steps)
        at = multiplier(cfg, total, warmup, steps_per_epoch)
        lambdas.append(at if scale is None else
                       lambda step, at=at: at(step) * scale())
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


def refresh_lr(scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """Recompute every group's lr at the current step (after the plateau factor changed),
    so the very next step uses it."""
    for group, at in zip(scheduler.optimizer.param_groups, scheduler.lr_lambdas, strict=True):
        group["lr"] = group["initial_lr"] * at(scheduler.last_epoch)
