"""Batch augmentation: ops that take a whole uint8 NHWC batch on the training device and
give every image its own random parameters.

An op is `op(batch, ctx) -> batch`. The registry maps config names to op factories; the
loader applies the pipeline right after gathering a batch, before float conversion, so the
ops stay cheap integer index arithmetic. The full op library plugs in here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from imgcls.config import AugmentConfig
from imgcls.registry import Registry


@dataclass
class AugmentContext:
    ids: torch.Tensor  # dataset index of every image in the batch (for per-image state)
    dataset_size: int
    epoch: int
    generator: torch.Generator  # CPU generator seeded from (seed, epoch)
    seed: int


Op = Callable[[torch.Tensor, AugmentContext], torch.Tensor]
AUGMENTS: Registry[Callable[..., Op]] = Registry("augmentation")


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror out-of-range pixel indices back inside [0, size): reflect padding as indexing."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def _flip_mask(ctx: AugmentContext, n: int, mode: str) -> torch.Tensor:
    if mode == "random":
        return torch.rand(n, generator=ctx.generator) < 0.5
    # alternate: a fixed random choice per image, inverted on every odd epoch, so each image
    # is seen both ways in any two consecutive epochs (airbench's trick)
    return _base_flips(ctx.seed, ctx.dataset_size)[ctx.ids.cpu()] ^ bool(ctx.epoch % 2)


@functools.lru_cache(maxsize=8)
def _base_flips(seed: int, dataset_size: int) -> torch.Tensor:
    """The per-image flip choice of even epochs, drawn once per (seed, dataset)."""
    generator = torch.Generator().manual_seed(seed * 7919 + 17)
    return torch.rand(dataset_size, generator=generator) < 0.5


@AUGMENTS.register("flip_translate")
def flip_translate(flip: str = "random", translate: int = 0) -> Op:
    """Horizontal flip (`none`, `random` per image, or `alternate`) and a random shift of up
    to `translate` pixels each way with reflected borders (random crop of a reflect-padded
    image), fused into a single gather."""

    def op(batch: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        n, h, w, _ = batch.shape
        device = batch.device
        dy = torch.randint(-translate, translate + 1, (n, 1), generator=ctx.generator)
        dx = torch.randint(-translate, translate + 1, (n, 1), generator=ctx.generator)
        cols = torch.arange(w).expand(n, w)
        if flip != "none":
            cols = torch.where(_flip_mask(ctx, n, flip)[:, None], w - 1 - cols, cols)
        rows = _reflect(torch.arange(h) + dy, h).to(device)
        cols = _reflect(cols + dx, w).to(device)
        sample = torch.arange(n, device=device)[:, None, None]
        return batch[sample, rows[:, :, None], cols[:, None, :]]

    return op


def create_augment(cfg: AugmentConfig) -> list[Op]:
    if cfg.flip == "none" and cfg.translate == 0:
        return []
    return [AUGMENTS.get("flip_translate")(flip=cfg.flip, translate=cfg.translate)]
