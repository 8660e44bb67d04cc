"""What every data source hands over: uint8 images in NHWC layout plus integer labels."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from imgcls.config import DataConfig


class DataError(ValueError):
    """A problem with the user's data, naming the file or folder at fault."""


@dataclass
class ImageSet:
    images: np.ndarray  # uint8, (N, H, W, C) with C = 1 (grayscale) or 3 (RGB)
    labels: np.ndarray  # int64, (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index])


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
    root = cfg.cache_dir or os.environ.get("IMGCLS_CACHE") or Path.home() / ".cache" / "imgcls"
    return Path(root).expanduser()
