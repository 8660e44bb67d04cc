"""What every data source hands over: uint8 images in NHWC layout plus integer labels, and
each image's name (its path where it came from a file) and pixel digest."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from imgcls.hardware import default_cache_dir

if TYPE_CHECKING:
    from imgcls.config import DataConfig


class DataError(ValueError):
    """A problem with the user's data, naming the file or folder at fault."""


@dataclass
class ImageSet:
    images: np.ndarray  # uint8, (N, H, W, C) with C = 1 (grayscale) or 3 (RGB)
    labels: np.ndarray  # int64, (N,)
    # str, (N,): the file's path relative to the data set's folder (or the CSV's), else
    # "<split>/<index>"; what findings name and `data.exclude` / `data.relabel` refer to
    names: np.ndarray | None = None
    digests: np.ndarray | None = None  # bytes (N,): the decoded pixels' digest (PIXEL_DIGEST)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index],
                        None if self.names is None else self.names[index],
                        None if self.digests is None else self.digests[index])

    def identified(self, split: str) -> ImageSet:
        """This set with names (`<split>/<index>` where the source gave none) and the
        digests of its pixels: computed once, when the decoded arrays are cached."""
        names = self.names
        if names is None:
            names = np.array([f"{split}/{i}" for i in range(len(self))], dtype=str)
        return ImageSet(self.images, self.labels, names, pixel_digests(self.images))


PIXEL_DIGEST = 16  # bytes of BLAKE2b per image: collisions are out of reach


def pixel_digests(images: np.ndarray) -> np.ndarray:
    """Each image's BLAKE2b digest of its decoded pixels (and shape): equal digests are
    pixel-identical images, however their files were named or encoded."""
    out = np.empty(len(images), dtype=f"S{PIXEL_DIGEST}")
    for i, image in enumerate(images):
        h = hashlib.blake2b(digest_size=PIXEL_DIGEST)
        h.update(str(image.shape).encode())
        h.update(np.ascontiguousarray(image).data)
        out[i] = h.digest()
    return out


@dataclass
class SourceData:
    """A source's own splits; `test` is None when the source has no test split."""

    train: ImageSet
    test: ImageSet | None
    classes: list[str]
    skipped: list[str] = field(default_factory=list)  # "path: reason" per unreadable file
    chosen_size: int | None = None  # the size picked for images of mixed sizes, if any


class Source(Protocol):
    def fingerprint(self, cfg: DataConfig) -> str:
        """A cheap key that changes whenever the decoded arrays would change."""

    def load(self, cfg: DataConfig) -> SourceData:
        """Read and decode everything (slow; the result is cached by fingerprint)."""


def cache_root(cfg: DataConfig) -> Path:
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
