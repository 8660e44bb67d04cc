"""Class imbalance: the loss's per-class weights (`train.class_weights`). The balanced batch
order (`data.sampler: balanced`) is `imgcls.data.loader.Batches`'s."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from imgcls.config import ConfigError


def resolve_class_weights(setting: Literal["auto"] | Sequence[float] | None,
                          labels: np.ndarray, classes: Sequence[str]) -> list[float] | None:
    """One loss weight per class, or None (all 1). `auto`: the inverse of each class's
    frequency in `labels` (the training split), scaled to mean 1; a class without training
    images gets 1 (it is never a hard target; mean 1 holds over the classes present and
    over all of them). A list is taken as it is, one weight per class in class order."""
    if setting is None:
        return None
    k = len(classes)
    if setting == "auto":
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=k)[:k]
        present = counts > 0
        weights = np.ones(k)
        inverse = 1.0 / counts[present]
        weights[present] = inverse / inverse.mean()
        return weights.tolist()
    weights = [float(w) for w in setting]
    if len(weights) != k:
        raise ConfigError(
            f"train.class_weights has {len(weights)} weight(s), but the data has {k} "
            f"classes ({', '.join(map(str, classes))}); give one weight per class, in this "
            "order, or use `auto`")
    return weights
