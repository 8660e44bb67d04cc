"""Stages: the phases of a run (transfer learning's head-only, then fine-tuning), each
with its own trainable parameters, optimizer and lr schedule. A run without `stages:` is
one stage in which everything trains."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from imgcls.config import Config, ConfigError
from imgcls.models.parts import frozen_norms, stage_depths, trainable_parameters
from imgcls.train.optim import SAM, create_optimizer
from imgcls.train.schedule import Horizon, create_scheduler


@dataclass
class Stage:
    """One phase of training: which parameters learn, and their optimizer and schedule.
    A run without `stages:` is one stage in which everything trains."""

    index: int
    name: str
    epochs: int
    clip_grad_norm: float | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    sam: SAM | None
    frozen_norms: list[nn.Module]  # BatchNorms kept in inference mode (stage.freeze_bn)
    cache_features: bool  # a head-only stage trained on the backbone's features
    horizon: Horizon  # the optimizer steps its schedule spans
    stops_at_horizon: bool  # `train.steps` ends it (mid-epoch if need be), not its epochs

    def horizon_reached(self) -> bool:
        return self.stops_at_horizon and self.scheduler.last_epoch >= self.horizon.steps


def stage_at(cfg: Config, epoch: int) -> int:
    """The stage that epoch `epoch` (0-based) belongs to."""
    end = 0
    for index, stage in enumerate(cfg.stages):
        end += stage.epochs
        if epoch < end:
            return index
    return max(len(cfg.stages) - 1, 0)


def create_stage(cfg: Config, index: int, model: nn.Module, steps_per_epoch: int,
                 lr_scale: Callable[[], float], always_frozen: set[str]) -> Stage:
    """Make stage `index`'s parameters trainable (the rest, and `always_frozen`, frozen)
    and give it a fresh optimizer and lr schedule over its epochs."""
    stage = cfg.stages[index] if cfg.stages else None
    optim, schedule = cfg.stage_settings(index) if stage else (cfg.optim, cfg.schedule)
    names = [n for n, _ in model.named_parameters()]
    trainable = (trainable_parameters(model, stage.train, stage.fine_tune_at,
                                      stage.last_stages) if stage else set(names))
    for name, p in model.named_parameters():
        p.requires_grad_(name in trainable and name not in always_frozen)
    lr_scales = ({n: stage.layer_lr_decay ** depth for n, depth in stage_depths(model).items()}
                 if stage and stage.layer_lr_decay else None)
    optimizer = create_optimizer(model, optim, lr_scales)
    epochs = stage.epochs if stage else cfg.train.epochs
    steps = cfg.train.steps if index == max(len(cfg.stages) - 1, 0) else None
    if steps and steps > epochs * steps_per_epoch:
        where = f"stages[{index}].epochs" if stage else "train.epochs"
        raise ConfigError(f"train.steps = {steps} needs {math.ceil(steps / steps_per_epoch)} "
                          f"epochs of {steps_per_epoch} steps, but {where} is {epochs}; "
                          "raise it, or lower train.steps")
    horizon = Horizon(steps or max(1, epochs * steps_per_epoch))
    no_augment = not cfg.augment.ops and not cfg.augment.mix.enabled
    return Stage(
        index=index, name=(stage.name if stage else None) or f"stage {index + 1}",
        epochs=epochs, clip_grad_norm=optim.clip_grad_norm, optimizer=optimizer,
        scheduler=create_scheduler(optimizer, schedule, steps_per_epoch, epochs, lr_scale,
                                   horizon),
        sam=SAM(optimizer, optim.sam.rho, optim.sam.adaptive) if optim.sam else None,
        frozen_norms=(frozen_norms(model, trainable, every=stage.freeze_bn == "all")
                      if stage else []),
        cache_features=bool(stage) and stage.train == "head" and (
            stage.cache_features is True or stage.cache_features == "auto" and no_augment),
        horizon=horizon, stops_at_horizon=steps is not None)
