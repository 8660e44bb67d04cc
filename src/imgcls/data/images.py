"""Decoding and resizing single image files with Pillow, in parallel threads (Pillow releases
the GIL while decoding, so threads scale on the cores), and the two choices every source
makes the same way: how many channels the images keep, and which size mixed images get."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from imgcls.data.base import DataError, ImageSet, SourceData
from imgcls.log import get_logger

if TYPE_CHECKING:
    from imgcls.config import DataConfig

log = get_logger(__name__)

RESAMPLE = Image.Resampling.BILINEAR  # what Keras' image_dataset_from_directory uses
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
# Pillow's "L" conversion (ITU-R 601-2 luma), used to store colour images as one channel
LUMA = np.array([0.299, 0.587, 0.114])


def to_8bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale (I;16*) scaled to 8 bits (/257, full range to full range); 32-bit
    integer and float images (I, F) clipped to 0-255 as Pillow does; others unchanged. One
    rule per mode, never per image, so training and prediction agree."""
    if image.mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64) / 257.0
    elif image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
    else:
        return image
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")


def as_pil_mode(image: Image.Image, channels: str | int) -> Image.Image:
    """`image` as "L" or "RGB": channels 1 -> L, 3 -> RGB, auto -> L if it is grayscale."""
    gray = image.mode in GRAY_MODES
    image = to_8bit(image)
    if channels == 1 or (channels == "auto" and gray):
        return image.convert("L")
    return image.convert("RGB")


def fit_image(image: Image.Image, size: int, mode: str, channels: str | int = 3
              ) -> Image.Image:
    """A square `size` x `size` image in mode L or RGB (see `as_pil_mode`).

    center_crop: scale the short side to `size`, cut the centre (keeps aspect, drops borders);
    squash: scale both sides to `size` (keeps everything, distorts aspect);
    pad: scale the long side to `size`, pad with black (keeps aspect and everything).
    """
    image = as_pil_mode(image, channels)
    if image.size == (size, size):
        return image
    if mode == "squash":
        return image.resize((size, size), RESAMPLE)
    if mode == "center_crop":
        return ImageOps.fit(image, (size, size), RESAMPLE)
    return ImageOps.pad(image, (size, size), RESAMPLE, color=0)


def as_hwc(image: Image.Image) -> np.ndarray:
    """uint8 H x W x C (C = 1 for L images, 3 for RGB)."""
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def decode(path: Path, size: int | None, mode: str, channels: str | int = 3) -> np.ndarray:
    """One file as uint8 HWC (C 1 or 3); raises OSError/ValueError for unreadable files."""
    with Image.open(path) as image:
        image.load()
        if size is None:
            return as_hwc(as_pil_mode(image, channels))
        return as_hwc(fit_image(image, size, mode, channels))


def decode_many(paths: Sequence[Path], size: int | None, mode: str,
                channels: str | int = 3) -> tuple[list[np.ndarray | None], list[str]]:
    """Decode in parallel; unreadable files give None plus a 'path: reason' entry."""

    def one(path: Path) -> np.ndarray | str:
        try:
            return decode(path, size, mode, channels)
        except Exception as exc:  # whatever Pillow raises, the file is bad
            return f"{path}: {type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(one, paths, chunksize=64))
    problems = [r for r in results if isinstance(r, str)]
    return [None if isinstance(r, str) else r for r in results], problems


def image_sizes(paths: Sequence[Path]) -> list[tuple[int, int] | None]:
    """(width, height) of each file from its header (no decoding); None if unreadable."""

    def one(path: Path) -> tuple[int, int] | None:
        try:
            with Image.open(path) as image:
                return image.size
        except Exception:  # decoding reports it properly later
            return None

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(one, paths, chunksize=64))


def choose_size(sizes: Sequence[tuple[int, int] | None], largest: int = 256) -> int | None:
    """The side images of mixed sizes are stored at: the median short side, rounded to a
    multiple of 8 (at least 8, at most `largest`); None when all are one square size (keep
    it) or none could be read."""
    known = [s for s in sizes if s is not None]
    if not known:
        return None
    if len(set(known)) == 1 and known[0][0] == known[0][1]:
        return None
    return multiple_of_8(float(np.median([min(s) for s in known])), largest)


def multiple_of_8(side: float, largest: int = 256) -> int:
    """`side` rounded to a multiple of 8, at least 8 and at most `largest`."""
    return int(min(max(8, 8 * round(side / 8)), largest))


def is_gray(image: np.ndarray) -> bool:
    """Whether an HWC image has one channel, or three identical ones."""
    return image.shape[-1] == 1 or bool((image[..., :1] == image[..., 1:]).all())


def stack_images(arrays: Sequence[np.ndarray], channels: str | int, size: int) -> np.ndarray:
    """One uint8 (N, H, W, C) array: C = 1 when `channels` is 1, or auto and every image is
    grayscale; else 3 (grayscale images repeated, colour ones converted by `to_channels`)."""
    if not arrays:
        return np.zeros((0, size, size, 1 if channels == 1 else 3), dtype=np.uint8)
    stacked = np.stack([a if a.shape[-1] == 3 else np.repeat(a, 3, -1) for a in arrays]) \
        if any(a.shape[-1] == 3 for a in arrays) else np.stack(arrays)
    return to_channels(stacked, channels)


def to_channels(images: np.ndarray, channels: str | int) -> np.ndarray:
    """uint8 NHWC images with the channel count `channels` asks for: 1 (colour converted
    with Pillow's luma weights), 3 (grayscale repeated), auto (1 exactly when every image
    is grayscale)."""
    c = images.shape[-1]
    if channels == "auto":
        channels = 1 if c == 1 or all(is_gray(i) for i in images) else 3
    if channels == c:
        return images
    if channels == 3:
        return np.repeat(images, 3, axis=-1)
    out = np.empty(images.shape[:-1] + (1,), dtype=np.uint8)
    for start in range(0, len(images), 4096):  # in chunks: float copies stay small
        chunk = images[start:start + 4096].astype(np.float32) @ LUMA.astype(np.float32)
        out[start:start + 4096, ..., 0] = np.clip(np.rint(chunk), 0, 255).astype(np.uint8)
    return out


def resize_array(images: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Resize a uint8 NHWC batch (e.g. CIFAR at 72 px) with the same rules as files, keeping
    its channel count; a batch already at `size` is returned as it is."""
    if images.shape[1:3] == (size, size):
        return images
    c = images.shape[-1]
    out = np.empty((len(images), size, size, c), dtype=np.uint8)
    for i, image in enumerate(images):
        pil = Image.fromarray(image[..., 0] if c == 1 else image)
        out[i] = as_hwc(fit_image(pil, size, mode, 1 if c == 1 else 3))
    return out


# -- what file-based sources (folder, csv, ...) share ---------------------------------------
def decode_settings(cfg: DataConfig) -> str:
    """The settings that change decoded files: part of every file source's fingerprint."""
    return f"{cfg.image_size}|{cfg.resize}|{cfg.on_corrupt}|{cfg.channels}"


def storage_size(cfg: DataConfig, paths: Sequence[Path]) -> int | None:
    """`data.image_size`, or for files of mixed sizes a size chosen from them (logged);
    None: every file is one square size, kept as it is."""
    if cfg.image_size is not None:
        return cfg.image_size
    return announced_size(image_sizes(paths), cfg)


def announced_size(sizes: Sequence[tuple[int, int] | None], cfg: DataConfig) -> int | None:
    """`choose_size(sizes)`, stated in the log when it picks one."""
    size = choose_size(sizes)
    if size is not None:
        log.info(f"images of mixed sizes: storing them at {size} x {size} px (the median "
                 f"short side, data.resize = {cfg.resize}); set data.image_size to choose")
    return size


def skip_or_refuse(problems: Sequence[str], cfg: DataConfig, skipped: list[str],
                   what: str = "unreadable image files") -> None:
    """Bad files ('path: reason' each) join `skipped`, or, with data.on_corrupt: error, are
    refused in one DataError listing them all."""
    if problems and cfg.on_corrupt == "error":
        raise DataError(f"{what} (set data.on_corrupt=skip to skip them):\n  "
                        + "\n  ".join(problems))
    skipped.extend(problems)


def decode_images(paths: Sequence[Path], labels: np.ndarray, cfg: DataConfig,
                  size: int | None, skipped: list[str], root: Path) -> ImageSet:
    """Decode `paths` at `size` (None: their shared native size) with `cfg.channels`, each
    named by its path relative to `root` (the data set's folder); unreadable files are
    skipped and listed in `skipped`, or refused (on_corrupt=error)."""
    arrays, problems = decode_many(paths, size, cfg.resize, cfg.channels)
    skip_or_refuse(problems, cfg, skipped)
    keep = [i for i, a in enumerate(arrays) if a is not None]
    shapes = {arrays[i].shape[:2] for i in keep}
    if len(shapes) > 1:  # only when size is None: storage_size saw one size, yet they differ
        raise DataError(f"{paths[keep[0]]} and others: images of several sizes; set "
                        "data.image_size")
    side = size or (next(iter(shapes))[0] if shapes else 32)
    images = stack_images([arrays[i] for i in keep], cfg.channels, side)
    return ImageSet(images, np.asarray(labels)[keep].astype(np.int64),
                    np.array([file_name(paths[i], root) for i in keep], dtype=str))


def file_name(path: Path, root: Path) -> str:
    """`path` relative to `root` in forward slashes (the same on every system), or as it
    is where it lies outside `root` (a CSV row's absolute path)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def match_channels(data: SourceData, channels: str | int) -> SourceData:
    """Both splits with one channel count: with `auto`, a colour test split makes the
    grayscale training images colour too (and the reverse)."""
    if (data.test is None or not len(data.test)
            or data.test.images.shape[-1] == data.train.images.shape[-1]):
        return data
    c = 3 if channels == "auto" else int(channels)
    train, test = (replace(s, images=to_channels(s.images, c)) for s in (data.train, data.test))
    return replace(data, train=train, test=test)
