"""Image folders: one sub-folder per class (the flower_photos layout), optionally under
`train/` and `test/` (or `val/`). `data.path` may also be a .tar.gz/.zip of such a folder,
which is extracted once into the cache."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from imgcls.data.base import DataError, ImageSet, SourceData, cache_root
from imgcls.data.cache import move_into_place
from imgcls.data.download import file_digest, verify_checksum
from imgcls.data.images import decode_images, decode_settings, match_channels, storage_size

if TYPE_CHECKING:
    from imgcls.config import DataConfig

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
TEST_DIRS = ("test", "val")


def _extract(archive: Path, cfg: DataConfig) -> Path:
    """Extract once into the cache, keyed by the archive's sha256 (verified if given)."""
    digest = verify_checksum(archive, cfg.sha256) if cfg.sha256 else file_digest(archive)
    target = cache_root(cfg) / "extracted" / digest[:16]
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".extract-"))
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)  # zipfile strips absolute paths and '..'
        else:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")  # refuses links and paths leaving tmp
        move_into_place(tmp, target)
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{archive}: cannot extract: {exc}") from None
    return target


def visible(path: Path) -> list[Path]:
    """A folder's entries, sorted, without hidden ones (.DS_Store, .ipynb_checkpoints)."""
    return sorted(p for p in path.iterdir() if not p.name.startswith("."))


def _dataset_root(path: Path) -> Path:
    """Step into single wrapper folders (`flowers5/` inside the archive, say): a lone
    sub-folder that itself holds folders."""
    while True:
        entries = visible(path)
        if len(entries) == 1 and entries[0].is_dir() and any(
                p.is_dir() for p in visible(entries[0])):
            path = entries[0]
        else:
            return path


class FolderSource:
    def root(self, cfg: DataConfig) -> Path:
        if not cfg.path:
            raise DataError("data.path: the folder source needs data.path (a folder or archive)")
        path = Path(cfg.path).expanduser()
        if path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES):
            path = _extract(path, cfg)
        elif not path.is_dir():
            raise DataError(
                f"data.path = {cfg.path!r}: not a folder or an archive "
                f"({', '.join(ARCHIVE_SUFFIXES)})")
        return _dataset_root(path)

    def splits(self, root: Path) -> tuple[Path, Path | None]:
        test = next((root / d for d in TEST_DIRS if (root / d).is_dir()), None)
        if (root / "train").is_dir():
            return root / "train", test
        return root, None

    def class_files(self, split_dir: Path) -> dict[str, list[Path]]:
        classes = [p for p in visible(split_dir) if p.is_dir()]
        if len(classes) < 2:
            raise DataError(f"{split_dir}: expected one sub-folder per class, found "
                            f"{len(classes)} folder(s)")
        files = {c.name: sorted(p for p in c.rglob("*") if p.is_file()
                                and not p.name.startswith(".")) for c in classes}
        for name, paths in files.items():
            if not paths:
                raise DataError(f"{split_dir / name}: class folder is empty; add images or "
                                "remove the folder")
        return files

    def fingerprint(self, cfg: DataConfig) -> str:
        root = self.root(cfg)
        digest = hashlib.sha256(decode_settings(cfg).encode())
        for split_dir in filter(None, self.splits(root)):
            for paths in self.class_files(split_dir).values():
                for p in paths:
                    st = p.stat()
                    digest.update(f"{p.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n"
                                  .encode())
        return digest.hexdigest()

    def _read(self, root: Path, split_dir: Path, files: dict[str, list[Path]],
              classes: list[str], cfg: DataConfig, size: int | None, skipped: list[str]
              ) -> ImageSet:
        unknown = sorted(set(files) - set(classes))
        if unknown:
            raise DataError(f"{split_dir}: class folders {unknown} are not in the training "
                            f"classes {classes}")
        paths = [p for c in classes for p in files.get(c, [])]
        labels = np.array([i for i, c in enumerate(classes) for _ in files.get(c, [])])
        return decode_images(paths, labels, cfg, size, skipped, root)

    def load(self, cfg: DataConfig) -> SourceData:
        root = self.root(cfg)
        train_dir, test_dir = self.splits(root)
        train_files = self.class_files(train_dir)
        classes = sorted(train_files)
        test_files = self.class_files(test_dir) if test_dir else {}
        every = [p for files in (train_files, test_files) for ps in files.values() for p in ps]
        size = storage_size(cfg, every)
        skipped: list[str] = []
        train = self._read(root, train_dir, train_files, classes, cfg, size, skipped)
        test = (self._read(root, test_dir, test_files, classes, cfg, size, skipped)
                if test_dir else None)
        chosen = size if cfg.image_size is None else None
        return match_channels(SourceData(train, test, classes, skipped, chosen), cfg.channels)


folder = FolderSource()
