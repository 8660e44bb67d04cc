"""Decode once: a source's decoded arrays are stored as .npy files keyed by its fingerprint
and memory-mapped by every later run."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from imgcls.data.base import ImageSet, SourceData

FORMAT_VERSION = 2  # 2: each image's name and pixel digest beside it
FIELDS = ("labels", "names", "digests")


def _save_set(folder: Path, split: str, data: ImageSet) -> None:
    data = data.identified(split) if data.digests is None else data
    np.save(folder / f"{split}_images.npy", data.images)
    for name in FIELDS:
        np.save(folder / f"{split}_{name}.npy", getattr(data, name))


def _load_set(folder: Path, split: str) -> ImageSet:
    """The split's arrays; names and digests are plain (unicode, bytes) arrays, so loading
    never unpickles."""
    return ImageSet(np.load(folder / f"{split}_images.npy", mmap_mode="r"),
                    *(np.load(folder / f"{split}_{name}.npy") for name in FIELDS))


def load_cached(folder: Path) -> SourceData | None:
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT_VERSION:
        return None
    test = _load_set(folder, "test") if meta["has_test"] else None
    return SourceData(_load_set(folder, "train"), test, meta["classes"], meta["skipped"],
                      meta.get("chosen_size"))


def move_into_place(tmp: Path, target: Path) -> None:
    """Rename a finished temporary folder to `target`. Folders only ever appear there
    complete, so when a concurrent run renamed its identical copy first, keep theirs."""
    try:
        os.replace(tmp, target)
    except OSError:
        if not target.is_dir():
            raise
        shutil.rmtree(tmp)


def save_cached(folder: Path, data: SourceData) -> None:
    """Write into a temporary folder and rename it into place: all or nothing."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        _save_set(tmp, "train", data.train)
        if data.test is not None:
            _save_set(tmp, "test", data.test)
        meta = {"format": FORMAT_VERSION, "classes": data.classes,
                "has_test": data.test is not None, "skipped": data.skipped,
                "chosen_size": data.chosen_size}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if folder.is_dir() and load_cached(folder) is None:  # an older format's: replaced
            shutil.rmtree(folder, ignore_errors=True)
        move_into_place(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
