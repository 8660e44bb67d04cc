"""Training without a config file: `imgcls train PATH` with PATH a folder of class
sub-folders, an archive of one, or a CSV/TSV file. `recipe_for_data` peeks at the data
(file counts per class and a sample of image headers: sizes and modes, nothing decoded) and
picks one of the shipped recipes, scaled to the data:

- small images (median short side <= 40 px): the fast CIFAR recipe, `configs/cifar10-fast.yaml`;
- larger images (photos): fastnet94 from scratch at 32 px input on images stored at 64 px,
  the best measured CPU recipe for photos (`experiments/transfer-flowers.yaml`'s scratch
  variant of `configs/flowers-transfer.yaml`: 74.9% on five flower classes in about 4
  minutes on 2 cores, against 71.5% in 9-10 minutes for `configs/flowers-small.yaml` at
  96 px; docs/results.md).

Both get a validation split, `data.channels: auto`, and epochs scaled to the data: 8 x
(50,000 / training images)^(1/3), between 4 and 50, which gives the measured 8 epochs on
CIFAR-10's 49,000 images and 20 on the 3,100 flower photos; small datasets also get smaller
batches (about 10 steps per epoch at least). `--set` overrides apply on top.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from statistics import median

from imgcls.config import Config, DataConfig, apply_overrides, read_yaml, set_key
from imgcls.configure import validate
from imgcls.data.base import DataError
from imgcls.data.images import GRAY_MODES, multiple_of_8

__all__ = ["DataPeek", "is_config_file", "peek_data", "recipe_for_data"]

# the shipped recipes: package data, so a wheel installed anywhere has them (the repository's
# top-level configs/ links here)
CONFIGS = Path(str(resources.files("imgcls") / "configs"))
ARCHIVES = (".tar.gz", ".tgz", ".tar", ".zip")
TABLES = (".csv", ".tsv")
SMALL = 40  # px: images at most this small train with the fast CIFAR recipe
SAMPLE = 200  # image headers read to judge sizes and modes


def is_config_file(path: str | Path) -> bool:
    """Whether `imgcls train PATH` reads PATH as a YAML config (else: as data)."""
    return Path(path).suffix.lower() in (".yaml", ".yml")


# -- a look at the data ----------------------------------------------------------------------
@dataclass
class DataPeek:
    """What a quick look at a dataset found: files per class (of the training split), the
    files of its own test split, and a sample of image headers."""

    source: str  # folder or csv
    path: Path
    counts: dict[str, int]
    test_files: int = 0
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height) sampled
    modes: list[str] = field(default_factory=list)  # Pillow modes of the same sample
    unreadable: int = 0  # sampled files whose header could not be read

    @property
    def images(self) -> int:
        return sum(self.counts.values())

    @property
    def short_side(self) -> int | None:
        """The median short side of the sampled images, in pixels."""
        return int(median(min(s) for s in self.sizes)) if self.sizes else None

    @property
    def one_square_size(self) -> bool:
        return len(set(self.sizes)) == 1 and self.sizes[0][0] == self.sizes[0][1]

    @property
    def colour(self) -> str:
        gray = sum(m in GRAY_MODES for m in self.modes)
        return ("grayscale" if self.modes and gray == len(self.modes) else
                "colour" if not gray else f"mixed ({gray} of {len(self.modes)} sampled grayscale)")

    def describe(self) -> str:
        per_class = sorted(self.counts.values())
        sizes = "no readable image headers"
        if self.sizes:
            shorts = [min(s) for s in self.sizes]
            common = Counter(self.sizes).most_common(1)[0][0]
            sizes = (f"{common[0]} x {common[1]} px" if self.one_square_size else
                     f"short side {min(shorts)}-{max(shorts)} px (median {self.short_side}), "
                     f"most often {common[0]} x {common[1]}")
        test = f", plus {self.test_files:,} in its test split" if self.test_files else ""
        unread = f"; {self.unreadable} sampled file(s) unreadable" if self.unreadable else ""
        return (f"data: {self.path}: {self.images:,} images in {len(self.counts)} classes "
                f"({per_class[0]:,}-{per_class[-1]:,} per class){test}; {sizes} "
                f"(sample of {len(self.sizes) + self.unreadable}); {self.colour}{unread}")


def _headers(paths: list[Path]) -> tuple[list[tuple[int, int]], list[str], int]:
    from PIL import Image

    sizes, modes, bad = [], [], 0
    for path in paths:
        try:
            with Image.open(path) as image:  # reads the header only
                sizes.append(image.size)
                modes.append(image.mode)
        except Exception:  # decoding reports it properly later
            bad += 1
    return sizes, modes, bad


def _spread(items: list[Path], count: int) -> list[Path]:
    """`count` items evenly spread over `items` (every class is represented)."""
    if len(items) <= count:
        return items
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def _folder_files(cfg: DataConfig) -> tuple[dict[str, list[Path]], int]:
    from imgcls.data.folder import folder

    train_dir, test_dir = folder.splits(folder.root(cfg))  # an archive is extracted once
    test = sum(len(p) for p in folder.class_files(test_dir).values()) if test_dir else 0
    return folder.class_files(train_dir), test


def _table_files(path: Path, cfg: DataConfig) -> tuple[dict[str, list[Path]], int]:
    """Image paths per label of a CSV/TSV file's training rows (read as the csv source
    reads it), and the number of its test rows."""
    from imgcls.data.table import csv_source

    table = csv_source.read_table(path, cfg)
    files: dict[str, list[Path]] = {}
    for file, label, split in zip(table.paths, table.labels, table.splits, strict=True):
        if split == "train":
            files.setdefault(label, []).append(file)
    if len(files) < 2:
        raise DataError(f"{path}: expected training rows of at least two labels, found "
                        f"{len(files)}")
    return files, sum(s != "train" for s in table.splits)


def peek_data(path: str | Path, data: DataConfig | None = None) -> DataPeek:
    """Count a dataset's files per class and read a sample of image headers. `path`: a
    folder of class sub-folders (optionally under train/ and test/), an archive of one, or
    a CSV/TSV file of image paths and labels."""
    path = Path(path).expanduser()
    name = path.name.lower()
    if not path.exists():
        raise DataError(f"{path}: no such folder or file; imgcls train takes a YAML config, "
                        "or data: a folder of class sub-folders, an archive of one "
                        f"({', '.join(ARCHIVES)}) or a CSV/TSV file")
    if path.is_dir() or (path.is_file() and name.endswith(ARCHIVES)):
        source = "folder"
    elif path.is_file() and name.endswith(TABLES):
        source = "csv"
    else:
        raise DataError(f"{path}: not a YAML config (.yaml, .yml), a folder, an archive "
                        f"({', '.join(ARCHIVES)}) or a CSV/TSV file")
    cfg = (data or DataConfig()).model_copy(update={"source": source, "path": str(path)})
    files, test = _folder_files(cfg) if source == "folder" else _table_files(path, cfg)
    every = [p for name in sorted(files) for p in files[name]]
    sizes, modes, bad = _headers(_spread(every, SAMPLE))
    return DataPeek(source, path, {c: len(p) for c, p in sorted(files.items())}, test,
                    sizes, modes, bad)


# -- the recipe ------------------------------------------------------------------------------
def _name(path: Path) -> str:
    stem = path.name
    for suffix in (*ARCHIVES, *TABLES):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "data"


def scaled_epochs(train_images: int) -> int:
    """8 x (50,000 / images)^(1/3) in [4, 50]: 8 on CIFAR-10's 49,000, 20 on 3,100."""
    return int(min(50, max(4, round(8 * (50_000 / max(train_images, 1)) ** (1 / 3)))))


def scaled_batch(train_images: int, recipe_batch: int) -> int:
    """The recipe's batch, or a smaller one that gives about 10 steps per epoch (16 at
    least)."""
    for batch in (2000, 1000, 500, 250, 128, 64, 32):
        if batch <= recipe_batch and batch <= train_images // 10:
            return batch
    return min(16, recipe_batch)


def _data_overrides(overrides: list[str]) -> DataConfig:
    """The data section the user's `--set data.*` make (cache folder, columns...), for the
    peek; the whole config is checked later."""
    raw = apply_overrides({}, [o for o in overrides if o.strip().startswith("data.")])
    try:
        return DataConfig.model_validate(raw.get("data") or {})
    except ValueError:
        return DataConfig()  # the full check names the problem


def _choose(peek: DataPeek) -> tuple[Path, int | None, dict, list[str]]:
    """The base recipe, the storage size, the keys the choice sets, and why."""
    short = peek.short_side or 0
    if short and short <= SMALL:
        size = None if peek.one_square_size else multiple_of_8(short)
        return CONFIGS / "cifar10-fast.yaml", size, {"model.input_size": None}, [
            "recipe: the fast CIFAR recipe (cifar10-fast.yaml: fastnet94, Muon, flips and "
            f"2-px shifts) at {size or short} px",
            f"because: the images are small (median short side {short} px <= {SMALL}), like "
            "CIFAR's 32 px, where this recipe reaches 90.4% on CIFAR-10 in 8 epochs"]
    size = multiple_of_8(short, largest=64) if short else 64
    chosen = {"model.pretrained": False, "model.input_size": 32, "stages": []}
    return CONFIGS / "flowers-transfer.yaml", size, chosen, [
        "recipe: photos (flowers-transfer.yaml trained from scratch: fastnet94, Muon, flips "
        f"and 6-px shifts), stored at {size} px and scaled to 32 px input",
        f"because: the images are larger (median short side {short or '?'} px > {SMALL}); "
        "this is the best measured CPU recipe for photos (74.9% on five flower classes in "
        "~4 min on 2 cores, against 71.5% in ~9.5 min for flowers-small.yaml at 96 px; "
        "docs/results.md); for finer detail --set model.input_size=64 (about 4x slower)"]


def recipe_for_data(path: str | Path, overrides: list[str] = ()
                    ) -> tuple[Config, list[str]]:
    """A checked config that trains on the data at `path` (see the module's docstring for
    the choice), with `overrides` (`key=value`, as `--set`) on top; and the lines that say
    what was chosen and why (the CLI logs them)."""
    overrides = list(overrides)
    user_data = _data_overrides(overrides)
    peek = peek_data(path, user_data)
    base, size, chosen, lines = _choose(peek)
    if not base.is_file():
        raise FileNotFoundError(f"{base}: the shipped recipe is missing; reinstall imgcls "
                                "(its package data holds the recipes)")
    raw = read_yaml(base)
    test_fraction = (user_data.test_fraction if "test_fraction" in user_data.model_fields_set
                     else raw.get("data", {}).get("test_fraction", 0.2))
    trainval = peek.images if peek.test_files else round(peek.images * (1 - test_fraction))
    val_fraction = round(min(0.1, max(0.02, 1000 / max(trainval, 1))), 3)
    train_images = round(trainval * (1 - val_fraction))
    epochs = scaled_epochs(train_images)
    recipe_batch = raw.get("train", {}).get("batch_size", 128)
    batch = scaled_batch(train_images, recipe_batch)
    chosen.update({
        "name": _name(peek.path), "data.source": peek.source, "data.path": str(peek.path),
        "data.image_size": size, "data.channels": "auto", "data.val_fraction": val_fraction,
        "train.epochs": epochs, "train.batch_size": batch,
        "train.micro_batch_size": 500 if batch > 500 else None})
    for key, value in chosen.items():
        set_key(raw, key, value, f"recipe for {peek.path}")
    smaller = (f" (the recipe's {recipe_batch} is too large for {train_images:,} images)"
               if batch < recipe_batch else "")
    channels = ("1 channel" if peek.colour == "grayscale"
                else "1 channel if every image turns out grayscale, else RGB")
    lines = [peek.describe(), *lines,
             f"epochs {epochs}: 8 x (50,000 / {train_images:,} training images)^(1/3), in "
             f"[4, 50]: tiny datasets get more passes, big ones fewer; batch {batch}{smaller}; "
             f"validation {val_fraction:.1%} of the training data; data.channels auto "
             f"({channels})"]
    origin = f"recipe for {peek.path} ({base.name})"
    if overrides:
        lines.append("--set on top: " + " ".join(overrides))
        origin += " with --set " + " ".join(overrides)
    return validate(apply_overrides(raw, overrides), origin), lines
