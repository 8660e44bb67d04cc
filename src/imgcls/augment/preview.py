"""`imgcls augment preview`: what each op or policy does to real training images, so users
look before they trust. One block per op (or per experiment variant): each row is one
image, the original first, then independently augmented versions of it, produced exactly
as training produces them (uint8 batch at data.image_size, the op's own per-image draws).
"""

from __future__ import annotations

import numpy as np
import torch

from imgcls.augment.base import AugmentContext, AugmentOp


def pick_images(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` indices of images from as many different classes as possible."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    picked: list[int] = []
    seen: set[int] = set()
    for i in order:  # one per class first, then any
        if labels[i] not in seen:
            picked.append(int(i))
            seen.add(int(labels[i]))
        if len(picked) == count:
            return np.array(picked)
    rest = [int(i) for i in order if int(i) not in picked]
    return np.array(picked + rest[:count - len(picked)])


def augmented_rows(ops: list[AugmentOp], images: np.ndarray, versions: int,
                   seed: int) -> np.ndarray:
    """(images, 1 + versions, H, W, 3) uint8: each image, then `versions` augmentations."""
    n = len(images)
    batch = torch.from_numpy(images).repeat_interleave(versions, 0).permute(0, 3, 1, 2)
    ctx = AugmentContext(torch.arange(len(batch)), len(batch), 0,
                         torch.Generator().manual_seed(seed), seed)
    for op in ops:
        batch = op(batch, ctx)
    out = batch.permute(0, 2, 3, 1).reshape(n, versions, *images.shape[1:]).numpy()
    return np.concatenate([images[:, None], out], 1)
