"""Odd images: near-constant, very dark or bright, blurry (from the decoded pixels); tiny,
of an extreme aspect ratio or another channel count than the rest (from the files, where
the images came from files); and the few least like any other image (from the features)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

CONSTANT_STD = 4.0  # gray levels: a blank frame, a solid fill
DARK, BRIGHT = 20.0, 235.0  # mean gray level
BLUR_DECADES = 1.5  # Laplacian variance this many powers of ten under the data's median
TINY_SHARE = 0.25  # a file's short side under this share of the data's median short side
ASPECT = 3.0  # long side / short side
ISOLATED_SHARE = 0.005  # the least similar to their nearest other image: this share, ...
ISOLATED_MAX = 50  # ... at most this many


@dataclass(frozen=True)
class Odd:
    index: int
    kind: str
    value: float
    evidence: str


def _gray(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(images)).float()
    if x.shape[-1] == 3:
        return x @ torch.tensor([0.299, 0.587, 0.114])
    return x[..., 0]


LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def pixel_statistics(images: np.ndarray, chunk: int = 1024) -> dict[str, np.ndarray]:
    """Per image: mean and std of the gray levels, variance of the Laplacian (sharpness)."""
    mean, std, sharp = [], [], []
    for start in range(0, len(images), chunk):
        gray = _gray(images[start:start + chunk])
        mean.append(gray.mean((1, 2)))
        std.append(gray.std((1, 2)))
        edges = F.conv2d(gray[:, None], LAPLACIAN[None, None])
        sharp.append(edges.var((1, 2, 3)))
    return {k: torch.cat(v).numpy() for k, v in
            (("mean", mean), ("std", std), ("sharpness", sharp))}


def pixel_oddities(images: np.ndarray) -> list[Odd]:
    stats = pixel_statistics(images)
    found = []
    for i, s in enumerate(stats["std"]):
        if s < CONSTANT_STD:
            found.append(Odd(i, "constant", float(s), f"gray levels vary by {s:.1f} (std)"))
    for i, m in enumerate(stats["mean"]):
        if m < DARK:
            found.append(Odd(i, "dark", float(m), f"mean gray level {m:.0f} of 255"))
        elif m > BRIGHT:
            found.append(Odd(i, "bright", float(m), f"mean gray level {m:.0f} of 255"))
    constant = {o.index for o in found if o.kind == "constant"}
    log_sharp = np.log10(stats["sharpness"] + 1e-6)
    typical = float(np.median(log_sharp))
    for i, v in enumerate(log_sharp):
        if i not in constant and v < typical - BLUR_DECADES:
            found.append(Odd(i, "blurry", float(v), f"Laplacian variance {10 ** v:.1f}, the "
                             f"data's median {10 ** typical:.0f}"))
    return found


def _header(path: Path) -> tuple[int, int, str] | None:
    try:
        with Image.open(path) as image:
            return image.size[0], image.size[1], image.mode
    except (OSError, ValueError):
        return None


def file_oddities(paths: list[Path]) -> list[Odd]:
    """Tiny files, extreme aspect ratios, and channel counts unlike the majority's."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        headers = list(pool.map(_header, paths))
    known = [(i, h) for i, h in enumerate(headers) if h is not None]
    if not known:
        return []
    short = np.median([min(w, h) for _, (w, h, _) in known])
    bands = [1 if mode in ("L", "I", "I;16", "LA", "1") else 3 for _, (_, _, mode) in known]
    usual = max(set(bands), key=bands.count)
    found = []
    for (i, (w, h, mode)), band in zip(known, bands, strict=True):
        if min(w, h) < TINY_SHARE * short:
            found.append(Odd(i, "tiny", float(min(w, h)), f"{w} x {h} px, the data's median "
                             f"short side {short:.0f} px"))
        if max(w, h) / max(min(w, h), 1) > ASPECT:
            found.append(Odd(i, "aspect", max(w, h) / max(min(w, h), 1),
                             f"{w} x {h} px"))
        if band != usual:
            found.append(Odd(i, "channels", float(band), f"{mode} image among "
                             f"{'grayscale' if usual == 1 else 'colour'} ones"))
    return found


def isolated(nearest: torch.Tensor) -> list[Odd]:
    """The images least similar to their nearest other image: odd ones out (a screenshot
    among photos, a different subject), ranked, not judged."""
    count = min(ISOLATED_MAX, max(1, int(ISOLATED_SHARE * len(nearest))))
    order = torch.argsort(nearest)[:count]
    median = float(nearest.median())
    return [Odd(int(i), "isolated", float(nearest[i]), f"similarity to its nearest other "
                f"image {float(nearest[i]):.2f}, the data's median {median:.2f}")
            for i in order]
