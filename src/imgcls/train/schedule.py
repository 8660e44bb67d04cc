"""Learning-rate schedules: a warm-up from `start_factor`, then a decay shape from 1 to
`end_factor`, stepped once per optimizer step. Each param group may run the same schedule
over its own horizon (see `optim.param_groups`)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from imgcls.config import ScheduleConfig
from imgcls.registry import Registry

# shape(t, end) -> multiplier for progress t in [0, 1] after the warm-up
SCHEDULES: Registry[Callable[[float, float], float]] = Registry("schedule")


@SCHEDULES.register("constant")
def constant(t: float, end: float) -> float:
    return 1.0


@SCHEDULES.register("linear")
def linear(t: float, end: float) -> float:
    return 1.0 + (end - 1.0) * t


@SCHEDULES.register("cosine")
def cosine(t: float, end: float) -> float:
    return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * t))


@SCHEDULES.register("onecycle")
def onecycle(t: float, end: float) -> float:
    """Cosine decay; with a warm-up (cosine-shaped, see `multiplier`) this is one-cycle."""
    return cosine(t, end)


def multiplier(cfg: ScheduleConfig, total_steps: int, warmup_steps: int
               ) -> Callable[[int], float]:
    shape = SCHEDULES.get(cfg.name)

    def at(step: int) -> float:
        if step < warmup_steps:
            t = step / warmup_steps
            if cfg.name == "onecycle":
                t = 0.5 * (1.0 - math.cos(math.pi * t))
            return cfg.start_factor + (1.0 - cfg.start_factor) * t
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return shape(t, cfg.end_factor) if t <= 1.0 else 0.0  # past its horizon: frozen

    return at


def create_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig,
                     steps_per_epoch: int, epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    lambdas = []
    for group in optimizer.param_groups:
        horizon = group.get("horizon_epochs") or epochs
        total = max(1, round(horizon * steps_per_epoch))
        warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total)
        lambdas.append(multiplier(cfg, total, warmup))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
