"""Optimizer registry and parameter groups.

Parameters fall into three kinds: `weights` (matrices and filters, decayed with
`optim.weight_decay`), `norm` (norm-layer parameters and biases: their own decay and lr
scale, no decay by default) and, for Muon, `filters` (conv kernels). A model may ask for
some parameters to run their lr schedule over fewer epochs (`lr_horizons`); each such
parameter gets a group of its own carrying `horizon_epochs`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from imgcls.config import OptimConfig
from imgcls.registry import Registry

OPTIMIZERS: Registry[Callable[[list[dict[str, Any]], OptimConfig], torch.optim.Optimizer]] = (
    Registry("optimizer"))


def param_groups(model: nn.Module, cfg: OptimConfig, muon: bool = False
                 ) -> list[dict[str, Any]]:
    horizons = model.lr_horizons() if hasattr(model, "lr_horizons") else {}
    groups: dict[tuple[str, float | None], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        kind = "filters" if muon and p.ndim == 4 else "norm" if p.ndim <= 1 else "weights"
        key = (kind, horizons.get(name))
        if key not in groups:
            lr = {"filters": cfg.muon_lr, "norm": cfg.lr * cfg.norm_lr_scale}.get(kind, cfg.lr)
            decay = {"filters": 0.0, "norm": cfg.norm_weight_decay}.get(kind, cfg.weight_decay)
            groups[key] = {"params": [], "kind": kind, "lr": lr, "weight_decay": decay,
                           "horizon_epochs": key[1]}
        groups[key]["params"].append(p)
    return list(groups.values())


@OPTIMIZERS.register("sgd")
def sgd(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov and cfg.momentum > 0)


@OPTIMIZERS.register("adamw")
def adamw(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def orthogonalize(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately the nearest semi-orthogonal matrix to `g` (U V^T of its SVD), by a
    quintic Newton-Schulz iteration tuned to push singular values towards 1 fast."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g / (g.norm() + 1e-7)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Muon for conv filters (momentum, then an orthogonalized update on the filters seen
    as a matrix, with the filter norm held fixed), Nesterov SGD for every other group.
    One optimizer object, so one scheduler and one state dict cover both."""

    def __init__(self, groups: list[dict[str, Any]], lr: float, momentum: float,
                 muon_momentum: float, nesterov: bool = True):
        super().__init__(groups, dict(lr=lr, momentum=momentum, weight_decay=0.0,
                                      nesterov=nesterov, muon_momentum=muon_momentum))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:
        assert closure is None, "Muon does not take a closure"
        for group in self.param_groups:
            filters = group["kind"] == "filters"
            momentum = group["muon_momentum"] if filters else group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad if filters else p.grad.add(p, alpha=group["weight_decay"])
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(momentum).add_(g)
                g = g.add(buf, alpha=momentum) if group["nesterov"] else buf
                if filters:
                    p.mul_(len(p) ** 0.5 / p.norm())  # keep each layer's filter norm fixed
                    g = orthogonalize(g.reshape(len(g), -1)).view_as(p)
                p.add_(g, alpha=-group["lr"])


@OPTIMIZERS.register("muon")
def muon(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    return Muon(groups, lr=cfg.lr, momentum=cfg.momentum, muon_momentum=cfg.muon_momentum,
                nesterov=cfg.nesterov)


def create_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    return OPTIMIZERS.get(cfg.name)(param_groups(model, cfg, muon=cfg.name == "muon"), cfg)
