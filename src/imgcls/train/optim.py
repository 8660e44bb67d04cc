"""Optimizer registry, parameter groups, and the regularizers that act on them (L2 penalty,
sharpness-aware minimization).

Parameters fall into three kinds: `weights` (matrices and filters, decayed with
`optim.weight_decay`), `norm` (norm-layer parameters and biases: their own decay, L2 and lr
scale, no decay by default) and, for Muon, `filters` (conv kernels). A model may ask for
some parameters to run their lr schedule over fewer epochs (`lr_horizons`); each such
parameter gets a group of its own carrying `horizon_epochs`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from imgcls.registry import Registry

if TYPE_CHECKING:
    from imgcls.config import OptimConfig

OPTIMIZERS: Registry[Callable[[list[dict[str, Any]], OptimConfig], torch.optim.Optimizer]] = (
    Registry("optimizer"))


def param_groups(model: nn.Module, cfg: OptimConfig, muon: bool = False,
                 lr_scales: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Trainable parameters by kind, lr horizon and `lr_scales` (a per-parameter lr factor:
    discriminative learning rates in transfer learning)."""
    horizons = model.lr_horizons() if hasattr(model, "lr_horizons") else {}
    groups: dict[tuple[str, float | None, float], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        kind = "filters" if muon and p.ndim == 4 else "norm" if p.ndim <= 1 else "weights"
        key = (kind, horizons.get(name), (lr_scales or {}).get(name, 1.0))
        if key not in groups:
            lr = {"filters": cfg.muon_lr, "norm": cfg.lr * cfg.norm_lr_scale}.get(kind, cfg.lr)
            lr *= key[2]
            decay = {"filters": 0.0, "norm": cfg.norm_weight_decay}.get(kind, cfg.weight_decay)
            l2 = cfg.norm_l2 if kind == "norm" else cfg.l2
            groups[key] = {"params": [], "kind": kind, "lr": lr, "weight_decay": decay,
                           "l2": l2, "horizon_epochs": key[1], "lr_scale": key[2]}
        groups[key]["params"].append(p)
    return list(groups.values())


@OPTIMIZERS.register("sgd")
def sgd(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov and cfg.momentum > 0)


def adam_family(cls: type[torch.optim.Optimizer]) -> Callable[..., torch.optim.Optimizer]:
    """Adam (decay added to the gradient) and AdamW (decoupled decay) take the same keys."""

    def make(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
        return cls(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)

    return make


OPTIMIZERS.register("adam")(adam_family(torch.optim.Adam))
OPTIMIZERS.register("adamw")(adam_family(torch.optim.AdamW))


@OPTIMIZERS.register("adadelta")
def adadelta(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    """Keras's 'adadelta' (note 001) is lr 1.0, rho 0.95, eps 1e-7."""
    return torch.optim.Adadelta(groups, lr=cfg.lr, rho=cfg.rho, eps=cfg.eps)


@OPTIMIZERS.register("rmsprop")
def rmsprop(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    """Plain RMSprop, as Keras's default (no momentum); `rho` is Keras's rho, torch's alpha."""
    return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.rho, eps=cfg.eps)


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"): the sign of
    an interpolated momentum, so every weight moves by exactly lr; decoupled decay. Its lr
    is usually 3-10x smaller than AdamW's and its decay 3-10x larger."""

    def __init__(self, groups: list[dict[str, Any]], lr: float, betas: tuple[float, float]):
        super().__init__(groups, dict(lr=lr, betas=betas, weight_decay=0.0))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:
        assert closure is None, "Lion does not take a closure"
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                momentum = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                p.mul_(1.0 - group["lr"] * group["weight_decay"])
                p.add_(momentum.lerp(p.grad, 1.0 - beta1).sign_(), alpha=-group["lr"])
                momentum.lerp_(p.grad, 1.0 - beta2)


@OPTIMIZERS.register("lion")
def lion(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    return Lion(groups, lr=cfg.lr, betas=cfg.betas)


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
    as a matrix, with the filter norm reset every `renormalize_every` steps), Nesterov SGD
    for every other group. One optimizer object, so one scheduler and one state dict cover
    both."""

    def __init__(self, groups: list[dict[str, Any]], lr: float, momentum: float,
                 muon_momentum: float, nesterov: bool = True, renormalize_every: int = 1):
        super().__init__(groups, dict(lr=lr, momentum=momentum, weight_decay=0.0,
                                      nesterov=nesterov, muon_momentum=muon_momentum,
                                      renormalize_every=renormalize_every))

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
                state = self.state[p]
                buf = state.setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(momentum).add_(g)
                g = g.add(buf, alpha=momentum) if group["nesterov"] else buf
                if filters:
                    state["muon_step"] = state.get("muon_step", 0) + 1
                    if (state["muon_step"] - 1) % group["renormalize_every"] == 0:
                        p.mul_(len(p) ** 0.5 / p.norm())  # the layer's filter norm reset
                    g = orthogonalize(g.reshape(len(g), -1)).view_as(p)
                p.add_(g, alpha=-group["lr"])


@OPTIMIZERS.register("muon")
def muon(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    return Muon(groups, lr=cfg.lr, momentum=cfg.momentum, muon_momentum=cfg.muon_momentum,
                nesterov=cfg.nesterov, renormalize_every=cfg.muon_renormalize_every)


def create_optimizer(model: nn.Module, cfg: OptimConfig,
                     lr_scales: dict[str, float] | None = None) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg, muon=cfg.name == "muon", lr_scales=lr_scales)
    if not groups:
        raise ValueError("no parameter trains: every parameter of the model is frozen")
    return OPTIMIZERS.get(cfg.name)(groups, cfg)


def l2_penalty(optimizer: torch.optim.Optimizer) -> torch.Tensor | None:
    """sum over groups of l2/2 * sum(w^2) (Keras's l2 regularizer, tf.nn.l2_loss), or None
    when no group has a penalty. Its gradient is l2 * w, added by autograd."""
    terms = [group["l2"] / 2 * sum(p.square().sum() for p in group["params"])
             for group in optimizer.param_groups if group.get("l2")]
    return sum(terms) if terms else None


class SAM:
    """Sharpness-aware minimization (Foret et al. 2021) around any optimizer; `adaptive` is
    ASAM (Kwon et al. 2021), whose neighbourhood scales with each weight's magnitude.

    The trainer computes the gradient, calls `ascend` (each weight moves to the worst point
    within rho), computes the gradient again there, calls `descend` (back to the weights)
    and then steps the base optimizer with that second gradient. The base optimizer keeps
    its state, lr schedule and state dict; SAM itself holds nothing between steps."""

    def __init__(self, optimizer: torch.optim.Optimizer, rho: float, adaptive: bool = False):
        self.optimizer, self.rho, self.adaptive = optimizer, rho, adaptive
        self.offsets: list[tuple[torch.Tensor, torch.Tensor]] = []

    @torch.no_grad()
    def ascend(self) -> None:
        params = [p for group in self.optimizer.param_groups for p in group["params"]
                  if p.grad is not None]
        scaled = [p.abs() * p.grad if self.adaptive else p.grad for p in params]
        norm = torch.linalg.vector_norm(torch.stack([s.norm() for s in scaled]))
        scale = self.rho / (norm + 1e-12)
        for p, s in zip(params, scaled, strict=True):
            offset = (s * p.abs() if self.adaptive else s) * scale
            p.add_(offset)
            self.offsets.append((p, offset))

    @torch.no_grad()
    def descend(self) -> None:
        for p, offset in self.offsets:
            p.sub_(offset)
        self.offsets.clear()


@contextmanager
def frozen_norm_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers normalize with the batch's statistics but leave their running
    statistics (and batch count) alone: SAM's second pass must not count a batch twice."""
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True
