"""Data sources (a registry chosen by `data.source`), the decode-once cache and the splits."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from imgcls.data.base import DataError, ImageSet, Source, SourceData, cache_root
from imgcls.data.cache import load_cached, save_cached
from imgcls.data.cifar import cifar10, cifar100
from imgcls.data.edits import Edits, apply_edits
from imgcls.data.folder import folder
from imgcls.data.hf import hf
from imgcls.data.images import to_channels
from imgcls.data.overlap import SplitOverlap, split_overlap
from imgcls.data.split import stratified_split, stratified_subset
from imgcls.data.table import csv_source
from imgcls.data.torchvision_source import torchvision_sources
from imgcls.registry import Registry, closest

if TYPE_CHECKING:
    from imgcls.config import DataConfig

SOURCES: Registry[Source] = Registry("data source")
SOURCES.register("cifar10")(cifar10)
SOURCES.register("cifar100")(cifar100)
SOURCES.register("folder")(folder)
SOURCES.register("csv")(csv_source)
SOURCES.register("hf")(hf)
SOURCES.register("torchvision")(torchvision_sources)

__all__ = ["SOURCES", "DataError", "DataSplits", "ImageSet", "check_source", "get_source",
           "image_root", "load_data"]

TORCHVISION_PREFIX = "torchvision:"


def get_source(name: str) -> Source:
    """The source called `name`; `torchvision:<Name>` is the torchvision source for that
    dataset."""
    if name.startswith(TORCHVISION_PREFIX):
        return SOURCES.get("torchvision").named(name[len(TORCHVISION_PREFIX):])
    return SOURCES.get(name)


def check_source(name: str) -> None:
    """Raise a ValueError naming the valid sources when `name` is none of them."""
    if name.startswith(TORCHVISION_PREFIX):
        get_source(name)
    elif name not in SOURCES or name == "torchvision":
        valid = [n for n in SOURCES.names() if n != "torchvision"]
        raise ValueError(f"unknown data source {name!r}{closest(name, valid)}; valid: "
                         f"{', '.join(valid)}, or {TORCHVISION_PREFIX}<Name> (e.g. "
                         f"{TORCHVISION_PREFIX}FashionMNIST)")


@dataclass
class DataSplits:
    train: ImageSet
    val: ImageSet | None
    test: ImageSet
    classes: list[str]
    skipped: list[str] = field(default_factory=list)
    chosen_size: int | None = None  # picked for images of mixed sizes (data.image_size None)
    cache_hit: bool = False
    seconds: float = 0.0
    overlap: SplitOverlap | None = None  # pixel-identical images across the splits
    edits: Edits = field(default_factory=Edits)  # what data.exclude / data.relabel changed

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[-1])

    def with_channels(self, channels: int) -> DataSplits:
        """The same splits with `channels` channels: what a run trained on, when the data
        now resolves `data.channels: auto` differently (e.g. runs made before it existed)."""
        if channels == self.channels:
            return self

        def convert(s: ImageSet | None) -> ImageSet | None:
            return None if s is None else replace(s, images=to_channels(s.images, channels))

        return replace(self, train=convert(self.train), val=convert(self.val),
                       test=convert(self.test))

    def leak_warning(self) -> str | None:
        """What a run and `imgcls data info` say of pixel-identical images across the
        splits (None: there are none, or the splits were not counted)."""
        return self.overlap.warning() if self.overlap is not None else None

    def counts(self) -> dict[str, list[int]]:
        """Images per class for each split, in class order."""
        splits = {"train": self.train, "val": self.val, "test": self.test}
        return {name: np.bincount(s.labels, minlength=len(self.classes)).tolist()
                for name, s in splits.items() if s is not None}


def image_root(cfg: DataConfig) -> Path | None:
    """The folder that image names are relative to: the folder source's data set folder (an
    archive's extracted copy), the CSV file's folder; None for array sources."""
    if cfg.source == "folder":
        return folder.root(cfg)
    if cfg.source == "csv" and cfg.path:
        return Path(cfg.path).expanduser().parent
    return None


def load_source(cfg: DataConfig) -> tuple[SourceData, bool]:
    """The source's decoded arrays, from the cache when its fingerprint matches."""
    source = get_source(cfg.source)
    key = source.fingerprint(cfg)
    folder = cache_root(cfg) / "arrays" / f"{cfg.source.replace(':', '-')}-{key[:20]}"
    cached = load_cached(folder)
    if cached is not None:
        return cached, True
    data = source.load(cfg)
    if len(data.train) == 0:
        raise DataError(f"data.path = {cfg.path!r}: no readable training images")
    if data.test is not None and len(data.test) == 0:
        raise DataError(f"data.path = {cfg.path!r}: its test split has no readable images "
                        "(see the skipped files with imgcls data info); fix or remove it")
    present = np.unique(data.train.labels)
    if len(present) < 2:
        raise DataError(f"data.path = {cfg.path!r}: the training images have "
                        f"{len(present)} class(es) ({', '.join(data.classes[i] for i in present)}"
                        "); a classifier needs at least two")
    save_cached(folder, data)
    return load_cached(folder), False


def load_data(cfg: DataConfig) -> DataSplits:
    """Train/val/test splits. The test split is the source's own, or a stratified
    `test_fraction` of its training data; val is a stratified `val_fraction` of what is
    left for training. Both are fixed by `data.split_seed`, not by the run's seed, so
    repeated runs are compared on the same images. `data.exclude` and `data.relabel` are
    applied first; the splits' pixel-identical images are counted last (`overlap`)."""
    start = time.perf_counter()
    data, hit = load_source(cfg)
    data, edits = apply_edits(data, cfg)
    train, test = data.train, data.test
    if test is None:
        keep, held = stratified_split(train.labels, cfg.test_fraction, cfg.split_seed, 1)
        train, test = train.subset(keep), train.subset(held)
    val = None
    if cfg.val_fraction > 0:
        keep, held = stratified_split(train.labels, cfg.val_fraction, cfg.split_seed, 2)
        train, val = train.subset(keep), train.subset(held)
    if cfg.train_subset:
        train = train.subset(stratified_subset(train.labels, cfg.train_subset, cfg.split_seed))
    return DataSplits(train, val, test, data.classes, data.skipped, data.chosen_size, hit,
                      time.perf_counter() - start, split_overlap(train, val, test), edits)
