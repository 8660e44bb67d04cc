"""MixUp and CutMix: blend each image with a partner from the same batch, and its label.

Labels become probability vectors (lam on the image's class, 1 - lam on the partner's),
which `nn.CrossEntropyLoss` takes as they are, label smoothing included. Training accuracy
stays meaningful: an image counts lam when the prediction is its own class and 1 - lam when
it is the partner's, the expected accuracy under the mixed target (`target_hits`).
Every image draws its own lam, its own MixUp-or-CutMix choice and its own CutMix box.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from imgcls.augment.functional import box_mask, to_device

if TYPE_CHECKING:
    from imgcls.config import MixConfig


class Mixer:
    def __init__(self, cfg: MixConfig, num_classes: int):
        self.cfg, self.num_classes = cfg, num_classes

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, n = self.cfg, len(x)
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
        partner = to_device(torch.from_numpy(rng.permutation(n)), x.device)
        mixed = rng.random(n) < cfg.prob
        use_cutmix = (rng.random(n) < cfg.switch_prob if cfg.mixup_alpha and cfg.cutmix_alpha
                      else np.full(n, cfg.cutmix_alpha > 0))
        alpha = np.where(use_cutmix, cfg.cutmix_alpha, cfg.mixup_alpha)
        lam = np.where(mixed, rng.beta(np.maximum(alpha, 1e-8), np.maximum(alpha, 1e-8)), 1.0)

        h, w = x.shape[-2:]
        cut = torch.from_numpy(use_cutmix & mixed)
        # CutMix: a box of area (1 - lam) centered anywhere, clipped; lam becomes what is left
        ch = np.round(h * np.sqrt(1 - lam)).astype(np.int64)
        cw = np.round(w * np.sqrt(1 - lam)).astype(np.int64)
        cy, cx = rng.integers(0, h, n), rng.integers(0, w, n)
        top, left = np.clip(cy - ch // 2, 0, h), np.clip(cx - cw // 2, 0, w)
        bottom, right = np.clip(cy + (ch - ch // 2), 0, h), np.clip(cx + (cw - cw // 2), 0, w)
        box_area = (bottom - top) * (right - left) / (h * w)
        lam = np.where(use_cutmix & mixed, 1 - box_area, lam)
        inside = box_mask(x.shape, *(torch.from_numpy(v) for v in (
            top, left, bottom - top, right - left)), x.device)
        inside &= to_device(cut, x.device).view(-1, 1, 1, 1)

        weight = to_device(torch.from_numpy(lam).float(), x.device)
        blend = weight.view(-1, 1, 1, 1)
        is_mixup = to_device(~cut, x.device).view(-1, 1, 1, 1)
        other = x[partner]
        x = torch.where(is_mixup, blend * x + (1 - blend) * other,
                        torch.where(inside, other, x))
        one_hot = F.one_hot(y, self.num_classes).float()
        target = weight[:, None] * one_hot + (1 - weight[:, None]) * one_hot[partner]
        return x, target


def target_hits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Correct predictions summed over the batch; with mixed (probability) targets, the
    target's weight on the predicted class."""
    predicted = logits.argmax(1)
    if target.dim() == 1:
        return (predicted == target).sum()
    return target.gather(1, predicted[:, None]).sum()
