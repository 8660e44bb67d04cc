"""Evaluation, with optional test-time augmentation (average the logits of shifted and
mirrored copies of each image), for every image or, gated by confidence, only for those
the plain image leaves unsure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from imgcls.data.loader import BatchLoader
from imgcls.train.metrics import per_class_table, scores


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


def gated_tta_logits(model: nn.Module, x: torch.Tensor, tta: str, plain: torch.Tensor,
                     margin: float | None) -> tuple[torch.Tensor, int]:
    """TTA logits for the images whose plain top-1 probability leads the runner-up's by
    less than `margin`, the plain logits for the rest, and how many got the views: the
    views cost several forward passes, and an image the network is sure of rarely changes
    its answer under them. `margin` None: every image."""
    if margin is None:
        return tta_logits(model, x, tta, plain), len(x)
    top = plain.float().softmax(1).topk(min(2, plain.shape[1]), dim=1).values
    unsure = torch.nonzero(top[:, 0] - top[:, -1] < margin).flatten()
    out = plain.clone()
    if len(unsure):
        out[unsure] = tta_logits(model, x[unsure], tta, plain[unsure]).to(out.dtype)
    return out, len(unsure)


class Predicted(NamedTuple):
    """Logits over a loader, in its order: plain, with TTA (None without), the labels, and
    how many images the TTA views were computed for (all but the confident ones, gated)."""

    plain: torch.Tensor
    augmented: torch.Tensor | None
    labels: torch.Tensor
    tta_images: int


@torch.no_grad()
def predict(model: nn.Module, loader: BatchLoader, tta: str = "none",
            amp_dtype: torch.dtype | None = None, tta_margin: float | None = None
            ) -> Predicted:
    """The plain and TTA logits over the loader; `tta_margin` gates the TTA by confidence
    (`gated_tta_logits`)."""
    model.eval()
    plain, augmented, targets, viewed = [], [], [], 0
    for x, y in loader.epoch(0):
        with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
            if tta != "none":
                views, count = gated_tta_logits(model, x, tta, logits, tta_margin)
                augmented.append(views.float())
                viewed += count
        plain.append(logits.float())
        targets.append(y)
    return Predicted(torch.cat(plain), torch.cat(augmented) if augmented else None,
                     torch.cat(targets), viewed)


def _scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    labels = labels.to(logits.device)
    return {"loss": F.cross_entropy(logits, labels).item(),
            "accuracy": (logits.argmax(1) == labels).float().mean().item(),
            **scores(logits, labels)}


def evaluate(model: nn.Module, loader: BatchLoader, tta: str = "none",
             amp_dtype: torch.dtype | None = None, *, per_class: bool = False,
             classes: Sequence[str] | None = None,
             tta_margin: float | None = None) -> dict[str, Any]:
    """loss, accuracy, macro_f1, balanced_accuracy and (more than 5 classes) top5_accuracy,
    plus the same with a tta_ prefix when `tta` is not none, and `tta_share`, the share of
    the images given the views (below 1 when `tta_margin` gates them). `per_class`: also
    the per-class table (`imgcls.train.metrics.per_class_table`, named by `classes`) as
    "per_class", from the TTA logits when there are some."""
    plain, augmented, labels, viewed = predict(model, loader, tta, amp_dtype, tta_margin)
    result: dict[str, Any] = _scores(plain, labels)
    if augmented is not None:
        result.update({f"tta_{k}": v for k, v in _scores(augmented, labels).items()})
        result["tta_share"] = viewed / max(len(labels), 1)
    if per_class:
        result["per_class"] = per_class_table(augmented if augmented is not None else plain,
                                              labels, classes)
    return result
