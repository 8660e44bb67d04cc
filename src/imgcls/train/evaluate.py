"""Evaluation, with optional test-time augmentation (average the logits of shifted and
mirrored copies of each image)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imgcls.data.loader import BatchLoader


def tta_logits(model: nn.Module, x: torch.Tensor, tta: str,
               plain: torch.Tensor | None = None) -> torch.Tensor:
    """The mean logits over views. none: the image; mirror: the image and its mirror;
    mirror_translate: the mirrored pair (weight 1/2) and the mirrored pair shifted one pixel
    up-left and down-right (reflected borders; 1/4 each), as airbench's TTA. `plain` reuses
    already computed logits of `x`."""
    plain = model(x) if plain is None else plain
    if tta == "none":
        return plain
    pair = 0.5 * (plain + model(x.flip(-1)))
    if tta == "mirror":
        return pair
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = [padded[..., :h, :w], padded[..., 2:, 2:]]
    return 0.5 * pair + sum(0.125 * (model(s) + model(s.flip(-1))) for s in shifted)


@torch.no_grad()
def predict(model: nn.Module, loader: BatchLoader, tta: str = "none",
            amp_dtype: torch.dtype | None = None
            ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(plain logits, TTA logits or None, labels) over the loader, in loader order."""
    model.eval()
    plain, augmented, targets = [], [], []
    for x, y in loader.epoch(0):
        with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
            if tta != "none":
                augmented.append(tta_logits(model, x, tta, logits).float())
        plain.append(logits.float())
        targets.append(y)
    return torch.cat(plain), torch.cat(augmented) if augmented else None, torch.cat(targets)


def _scores(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    return (F.cross_entropy(logits, labels).item(),
            (logits.argmax(1) == labels).float().mean().item())


def evaluate(model: nn.Module, loader: BatchLoader, tta: str = "none",
             amp_dtype: torch.dtype | None = None) -> dict[str, float]:
    """loss and accuracy, plus tta_loss and tta_accuracy when `tta` is not none."""
    plain, augmented, labels = predict(model, loader, tta, amp_dtype)
    loss, accuracy = _scores(plain, labels)
    result = {"loss": loss, "accuracy": accuracy}
    if augmented is not None:
        result["tta_loss"], result["tta_accuracy"] = _scores(augmented, labels)
    return result
