"""Stratified, seeded splits: every class keeps its share in every split."""

from __future__ import annotations

import numpy as np


def stratified_split(labels: np.ndarray, fraction: float, seed: int, purpose: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held_out) index arrays; `fraction` of each class is held out (at least one
    image per class with two or more images, when fraction > 0)."""
    rng = np.random.default_rng([seed, purpose])
    kept, held = [], []
    for cls in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == cls))
        n = int(round(fraction * len(index)))
        if fraction > 0 and len(index) >= 2:
            n = min(max(n, 1), len(index) - 1)
        held.append(index[:n])
        kept.append(index[n:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    if size >= len(labels):
        return np.arange(len(labels))
    _, chosen = stratified_split(labels, size / len(labels), seed, purpose=3)
    return chosen
