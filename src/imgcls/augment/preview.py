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


def _tile(rows: np.ndarray, gap: int) -> np.ndarray:
    """One image of a block: rows of tiles with white gaps, half a tile after the original."""
    n, k, h, w, _ = rows.shape
    canvas = np.full((n * (h + gap) - gap, k * (w + gap) - gap + w // 2, 3), 255, np.uint8)
    for r in range(n):
        for c in range(k):
            x = c * (w + gap) + (w // 2 if c else 0)
            canvas[r * (h + gap):r * (h + gap) + h, x:x + w] = rows[r, c]
    return canvas


def preview_figure(blocks: dict[str, np.ndarray], title: str):
    """A figure with one labelled block per op; `blocks` from `augmented_rows`."""
    from imgcls.report.plots import plt

    tiles = {name: _tile(rows, gap=max(1, rows.shape[2] // 16)) for name, rows in blocks.items()}
    width = max(t.shape[1] for t in tiles.values())
    heights = [t.shape[0] for t in tiles.values()]
    scale = 9.0 / width  # inches per pixel: 9 inches wide
    fig, axes = plt.subplots(len(tiles), 1, squeeze=False, gridspec_kw={"height_ratios": heights},
                             figsize=(10, sum(heights) * scale + 0.45 * len(tiles) + 0.6))
    for ax, (name, tile) in zip(axes[:, 0], tiles.items(), strict=True):
        ax.imshow(tile, interpolation="nearest")
        ax.set_title(name, loc="left", fontsize=10, family="monospace")
        ax.axis("off")
    fig.suptitle(title + "\n(left: the original; right: augmented versions)", fontsize=11,
                 y=1.0 + 0.5 / fig.get_figheight())
    fig.tight_layout()
    return fig
