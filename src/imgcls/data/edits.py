"""A user's corrections to their data, kept outside it: `data.exclude` (images to leave out)
and `data.relabel` (images whose class is wrong), applied to every source's images by name
before the splits are drawn, so the data set's own files never change."""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from imgcls.data.base import DataError, ImageSet, SourceData
from imgcls.registry import closest

if TYPE_CHECKING:
    from imgcls.config import DataConfig

HEADERS = {"path", "file", "filename", "image", "name"}  # a first row naming the columns


@dataclass(frozen=True)
class Edits:
    """What `data.exclude` and `data.relabel` changed, for the run's summary: the counts
    and each file's SHA-256 (the lists can change between runs under the same name)."""

    excluded: int = 0
    relabeled: int = 0
    files: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        return {"excluded": self.excluded, "relabeled": self.relabeled, "files": self.files}


def _normal(name: str) -> str:
    name = name.strip().replace("\\", "/")
    return name[2:] if name.startswith("./") else name


def _rows(path: Path, key: str) -> list[tuple[int, list[str]]]:
    """The file's non-empty, non-comment rows with their line numbers, a header row left
    out: CSV cells for `relabel`, whole lines for `exclude` (a name may hold a comma)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"data.{key} = {str(path)!r}: cannot read it as a UTF-8 text file: "
                        f"{exc}") from None
    lines = (csv.reader(io.StringIO(text)) if key == "relabel"
             else ([line] for line in text.splitlines()))
    rows = []
    for line, row in enumerate(lines, start=1):
        cells = [c.strip() for c in row]
        if not cells or not cells[0] or cells[0].startswith("#"):
            continue
        if not rows and cells[0].lower() in HEADERS:
            continue
        rows.append((line, cells))
    return rows


class _Index:
    """Where each name lies: (split, position) in the source's data."""

    def __init__(self, data: SourceData, cfg: DataConfig):
        self.cfg = cfg
        self.where: dict[str, tuple[str, int]] = {}
        for split, images in (("train", data.train), ("test", data.test)):
            if images is not None:
                self.where.update((str(n), (split, i)) for i, n in enumerate(images.names))

    def find(self, path: Path, key: str, line: int, name: str) -> tuple[str, int]:
        found = self.where.get(_normal(name))
        if found is None:
            example = next(iter(self.where), "")
            raise DataError(
                f"{path}, line {line}: {name!r} is not an image of data.path = "
                f"{self.cfg.path!r}{closest(_normal(name), list(self.where))}; data.{key} names "
                "images by their path relative to the data set's folder, as `imgcls audit` "
                f"and `imgcls data info` list them (e.g. {example!r})")
        return found


def _excluded(path: Path, index: _Index) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {"train": set(), "test": set()}
    for line, cells in _rows(path, "exclude"):
        split, i = index.find(path, "exclude", line, cells[0])
        out[split].add(i)
    return out


def _relabeled(path: Path, index: _Index, classes: list[str]) -> dict[str, dict[int, int]]:
    out: dict[str, dict[int, int]] = {"train": {}, "test": {}}
    for line, cells in _rows(path, "relabel"):
        if len(cells) < 2 or not cells[1]:
            raise DataError(f"{path}, line {line}: expected `path,class`, got "
                            f"{','.join(cells)!r}")
        split, i = index.find(path, "relabel", line, cells[0])
        if cells[1] not in classes:
            raise DataError(f"{path}, line {line}: class {cells[1]!r} is not one of the "
                            f"data's classes{closest(cells[1], classes)}: {', '.join(classes)}")
        out[split][i] = classes.index(cells[1])
    return out


def _edited(images: ImageSet, drop: set[int], labels: dict[int, int]) -> ImageSet:
    if labels:
        new = images.labels.copy()
        new[list(labels)] = list(labels.values())
        images = replace(images, labels=new)
    if drop:
        images = images.subset(np.setdiff1d(np.arange(len(images)), sorted(drop)))
    return images


def apply_edits(data: SourceData, cfg: DataConfig) -> tuple[SourceData, Edits]:
    """`data` without the images `data.exclude` lists and with the classes `data.relabel`
    gives; every listed name must be one of the data's images (a typo would otherwise
    leave an image in silently)."""
    if cfg.exclude is None and cfg.relabel is None:
        return data, Edits()
    index = _Index(data, cfg)
    files: dict[str, str] = {}
    drop: dict[str, set[int]] = {"train": set(), "test": set()}
    labels: dict[str, dict[int, int]] = {"train": {}, "test": {}}
    if cfg.exclude is not None:
        path = Path(cfg.exclude).expanduser()
        drop = _excluded(path, index)
        files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    if cfg.relabel is not None:
        path = Path(cfg.relabel).expanduser()
        labels = _relabeled(path, index, data.classes)
        files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    train = _edited(data.train, drop["train"], labels["train"])
    test = None if data.test is None else _edited(data.test, drop["test"], labels["test"])
    for split, images in (("training", train), ("test", test)):
        if images is not None and not len(images):
            raise DataError(f"data.exclude = {cfg.exclude!r}: leaves no {split} images")
    edits = Edits(sum(map(len, drop.values())),
                  sum(len(labels[s].keys() - drop[s]) for s in ("train", "test")), files)
    return replace(data, train=train, test=test), edits
