"""Pixel alignment of two images, the check that tells a copy from a second photo of the same
subject. A network's features put both close together; only a copy lines up with its
original pixel for pixel once the crop, the resize and the mirror are undone. The check:
the central part of one gray image, zoomed as a crop of a few percent per side would zoom
it (each axis on its own) and mirrored or not, slid over the other image; the best
normalized cross-correlation over all of those, either image taken as the crop.

Written with torch's grouped convolution rather than OpenCV's matchTemplate: it is a few
lines, runs batched on the pairs, and adds no dependency."""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F

SIZE = 64  # px: the gray images are aligned at this size (smaller stored images at theirs)
WINDOW = 0.75  # the template: this share of the image, from its centre
ZOOMS = (1.0, 1.07, 1.14)  # per axis: a crop of 0-6.5% per side, stretched back
PAIRS_PER_BATCH = 64


def gray(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC images as gray (N, S, S) float32, S = min(SIZE, stored size)."""
    x = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float().mean(1, keepdim=True)
    size = min(SIZE, x.shape[-1], x.shape[-2])
    return F.interpolate(x, size=(size, size), mode="area")[:, 0]


def _templates(x: torch.Tensor, window: int) -> torch.Tensor:
    """(N, Z, window, window): each image's centre zoomed by every ZOOMS x ZOOMS pair,
    and mirrored; zero mean and unit norm, for a correlation."""
    size = x.shape[-1]
    out = []
    for zy, zx in itertools.product(ZOOMS, ZOOMS):
        h, w = round(window / zy), round(window / zx)
        top, left = (size - h) // 2, (size - w) // 2
        part = F.interpolate(x[:, None, top:top + h, left:left + w], size=(window, window),
                             mode="bilinear", align_corners=False)[:, 0]
        out += [part, part.flip(-1)]
    t = torch.stack(out, 1)
    t = t - t.mean((-2, -1), keepdim=True)
    return t / t.flatten(2).norm(dim=-1).clamp_min(1e-6)[..., None, None]


def _best_correlation(templates: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """(P,): the best normalized cross-correlation of any of each pair's templates (P, Z,
    w, w) at any place in its image (P, S, S)."""
    p, z, w, _ = templates.shape
    source = images[:, None].expand(p, z, *images.shape[-2:]).reshape(1, p * z,
                                                                      *images.shape[-2:])
    weight = templates.reshape(p * z, 1, w, w)
    products = F.conv2d(source, weight, groups=p * z)
    ones = torch.ones(p * z, 1, w, w)
    sums = F.conv2d(source, ones, groups=p * z)
    squares = F.conv2d(source * source, ones, groups=p * z)
    spread = (squares - sums * sums / (w * w)).clamp_min(1e-6).sqrt()
    return (products / spread).reshape(p, -1).max(1).values


def aligned_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(P,): for gray images a[k] and b[k] (P, S, S), how well they line up at best, in
    [-1, 1]: near 1 for a copy resized, recompressed, cropped a few percent or mirrored."""
    window = round(WINDOW * a.shape[-1])
    out = []
    for start in range(0, len(a), PAIRS_PER_BATCH):
        x, y = a[start:start + PAIRS_PER_BATCH], b[start:start + PAIRS_PER_BATCH]
        out.append(torch.maximum(_best_correlation(_templates(x, window), y),
                                 _best_correlation(_templates(y, window), x)))
    return torch.cat(out) if out else torch.empty(0)
