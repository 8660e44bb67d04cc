"""Decoding and resizing single image files with Pillow, in parallel threads (Pillow releases
the GIL while decoding, so threads scale on the cores)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

RESAMPLE = Image.Resampling.BILINEAR  # what Keras' image_dataset_from_directory uses


def fit_image(image: Image.Image, size: int, mode: str) -> Image.Image:
    """Make a square `size` x `size` RGB image.

    center_crop: scale the short side to `size`, cut the centre (keeps aspect, drops borders);
    squash: scale both sides to `size` (keeps everything, distorts aspect);
    pad: scale the long side to `size`, pad with black (keeps aspect and everything).
    """
    image = image.convert("RGB")
    if image.size == (size, size):
        return image
    if mode == "squash":
        return image.resize((size, size), RESAMPLE)
    if mode == "center_crop":
        return ImageOps.fit(image, (size, size), RESAMPLE)
    return ImageOps.pad(image, (size, size), RESAMPLE, color=(0, 0, 0))


def decode(path: Path, size: int | None, mode: str) -> np.ndarray:
    """One file as uint8 HWC RGB; raises OSError/ValueError for unreadable files."""
    with Image.open(path) as image:
        image.load()
        if size is None:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
        return np.asarray(fit_image(image, size, mode), dtype=np.uint8)


def decode_many(
    paths: list[Path], size: int | None, mode: str
) -> tuple[list[np.ndarray | None], list[str]]:
    """Decode in parallel; unreadable files give None plus a 'path: reason' entry."""

    def one(path: Path) -> np.ndarray | str:
        try:
            return decode(path, size, mode)
        except Exception as exc:  # whatever Pillow raises, the file is bad
            return f"{path}: {type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(one, paths, chunksize=64))
    problems = [r for r in results if isinstance(r, str)]
    return [None if isinstance(r, str) else r for r in results], problems


def resize_array(images: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Resize a uint8 NHWC batch (e.g. CIFAR at 72 px) with the same rules as files; a
    batch already at `size` is returned as it is."""
    if images.shape[1:3] == (size, size):
        return images
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = np.asarray(fit_image(Image.fromarray(image), size, mode))
    return out
