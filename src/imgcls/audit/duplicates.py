"""Exact and near duplicates, within and across the splits. Exact: equal pixel digests.
Near: a pair close in the images' features (the candidates) whose pixels also line up once
a crop, resize or mirror is undone (audit/align.py), both at or above thresholds that the
data itself sets: sample images are edited the ways near duplicates arise (resized,
recompressed, cropped by a few percent, mirrored), and each threshold is what 99% of those
copies reach to their originals."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import numpy as np
import torch
from PIL import Image

from imgcls.audit.align import aligned_similarity, gray
from imgcls.audit.features import Features
from imgcls.audit.records import Threshold

BLOCK = 1024  # rows of the similarity matrix computed at once
MAX_PER_IMAGE = 10  # near duplicates kept per image (a burst of 50 shots is one finding)
SAMPLE = 200  # images edited to set the threshold


def exact_groups(digests: np.ndarray) -> list[np.ndarray]:
    """Indices of images whose pixels are equal, one array per group of two or more."""
    order = np.argsort(digests, kind="stable")
    ordered = digests[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(ordered)]
    return [order[a:b] for a, b in zip(starts, ends, strict=True) if b - a > 1]


def _blocks(vectors: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    for start in range(0, len(vectors), BLOCK):
        yield start, vectors[start:start + BLOCK] @ vectors.T


def nearest_other(vectors: torch.Tensor, same: np.ndarray | None = None) -> torch.Tensor:
    """Each image's similarity to its most similar other image; `same` (group ids, -1 for
    none) marks pixel-identical images, which are not each other's nearest other."""
    best = torch.empty(len(vectors))
    group = None if same is None else torch.from_numpy(same)
    for start, sims in _blocks(vectors):
        rows = torch.arange(start, start + len(sims))
        sims[torch.arange(len(sims)), rows] = -2.0
        if group is not None:
            mine = group[rows][:, None]
            sims[(mine >= 0) & (mine == group[None, :])] = -2.0
        best[start:start + len(sims)] = sims.max(1).values
    return best


def candidate_pairs(vectors: torch.Tensor, threshold: float) -> list[tuple[int, int, float]]:
    """(i, j, similarity) for i < j at or above `threshold` in the features, each image's
    MAX_PER_IMAGE most similar at most."""
    pairs = []
    k = min(MAX_PER_IMAGE + 1, len(vectors))
    for start, sims in _blocks(vectors):
        values, index = sims.topk(k, dim=1)
        rows = torch.arange(start, start + len(sims))[:, None].expand_as(index)
        keep = (values >= threshold) & (index > rows)
        pairs += zip(rows[keep].tolist(), index[keep].tolist(), values[keep].tolist(),
                     strict=True)
    return pairs


def aligned(images: np.ndarray, pairs: list[tuple[int, int, float]]) -> torch.Tensor:
    """How well each pair's images line up (align.aligned_similarity), in pair order."""
    if not pairs:
        return torch.empty(0)
    first, second = (np.array(side) for side in zip(*((i, j) for i, j, _ in pairs),
                                                     strict=True))
    return aligned_similarity(gray(images[first]), gray(images[second]))


# -- the threshold -------------------------------------------------------------------------
def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert(image.mode)


def _resized(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    scale = rng.uniform(0.5, 0.8)
    w, h = image.size
    small = image.resize((max(8, round(w * scale)), max(8, round(h * scale))),
                         Image.Resampling.BICUBIC)
    return small.resize((w, h), Image.Resampling.BICUBIC)


def _cropped(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    left, top, right, bottom = (rng.uniform(0.0, 0.06, 4) * [w, h, w, h]).round().astype(int)
    return image.crop((left, top, w - right, h - bottom)).resize((w, h),
                                                                   Image.Resampling.BICUBIC)


EDITS: dict[str, Callable[[Image.Image, np.random.Generator], Image.Image]] = {
    "resized": _resized,
    "recompressed": lambda im, rng: _jpeg(im, int(rng.integers(40, 91))),
    "cropped": _cropped,
    "mirrored": lambda im, rng: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
}
TWIN_QUANTILE = 0.01  # the threshold: the similarity 99% of the edited copies reach


def edited_copies(images: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Every image edited each way in EDITS (same size, uint8 NHWC), and for each copy the
    index of its original."""
    rng = np.random.default_rng(seed)
    copies, origin = [], []
    for i, array in enumerate(images):
        gray = array.shape[-1] == 1
        image = Image.fromarray(array[..., 0] if gray else array)
        for edit in EDITS.values():
            out = np.asarray(edit(image, rng))
            copies.append(out[..., None] if gray else out)
            origin.append(i)
    return np.stack(copies), np.array(origin)


def _quantiles(values: torch.Tensor, qs: tuple[float, ...]) -> dict[str, float]:
    return {f"{q:.1%}".replace(".0%", "%"): float(torch.quantile(values, q)) for q in qs}


def twin_similarity(features: Features, picked: np.ndarray, copies: np.ndarray,
                    origin: np.ndarray) -> torch.Tensor:
    """Each edited copy's similarity to its original in the features."""
    return (features.place(copies) * features.vectors[picked][origin]).sum(1)


def choose_threshold(features: Features, images: np.ndarray, nearest: torch.Tensor,
                     seed: int = 0, sample: int = SAMPLE) -> Threshold:
    """The similarities a near duplicate must reach: what 99% of `sample` images' edited
    copies (EDITS) reach to their originals, in the features and in their alignment. Two
    different photos of one subject are alike in a network's features but do not line up
    pixel for pixel; a copy does both. `nearest` (each image's most similar other image)
    says how many images are that close to another in the features."""
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(images), size=min(sample, len(images)), replace=False))
    originals = np.asarray(images[picked])
    copies, origin = edited_copies(originals, seed)
    twins = twin_similarity(features, picked, copies, origin)
    value = float(torch.quantile(twins, TWIN_QUANTILE))
    lined_up = aligned_similarity(gray(copies), gray(originals)[origin])
    return Threshold(value=value, aligned=float(torch.quantile(lined_up, TWIN_QUANTILE)),
                     sample=len(picked),
                     twins_below=float((twins < value).float().mean()),
                     strangers_above=float((nearest >= value).float().mean()),
                     twin_quantiles=_quantiles(twins, (0.01, 0.05, 0.5)),
                     aligned_quantiles=_quantiles(lined_up, (0.01, 0.05, 0.5)),
                     stranger_quantiles=_quantiles(nearest, (0.5, 0.99, 0.999)))
