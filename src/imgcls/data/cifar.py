"""CIFAR-10 and CIFAR-100 in the official "python version" format.

Downloaded from the official URL when online, or read from a local .tar.gz or extracted
folder. Archives are checksum-verified before anything in them is unpickled, and the
unpickler only accepts numpy arrays and plain containers, so even an extracted folder
from elsewhere cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgcls.data.base import DataError, ImageSet, SourceData, cache_root
from imgcls.data.download import download, file_digest, verify_checksum
from imgcls.data.images import resize_array, to_channels

if TYPE_CHECKING:
    from imgcls.config import DataConfig


@dataclass(frozen=True)
class CifarFormat:
    url: str
    md5: str  # the checksum published with the official archive
    folder: str  # the archive's top-level folder
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str

    @property
    def archive_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


CIFAR10 = CifarFormat(
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
)
CIFAR100 = CifarFormat(
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
    folder="cifar-100-python",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
)

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Accepts numpy arrays, lists, dicts and strings; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR file")


def _unpickle(data: bytes, origin: str) -> dict[str, Any]:
    try:
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:  # any malformed pickle is a data error for the user
        raise DataError(f"{origin}: not a CIFAR python batch file: {exc}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{origin}: expected a dict in a CIFAR batch file")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


class CifarSource:
    def __init__(self, fmt: CifarFormat, label_keys: dict[str, tuple[str, str]]):
        self.fmt = fmt
        self.label_keys = label_keys  # labels setting -> (batch key, meta key)

    # -- locating the data ---------------------------------------------------------------
    def _locate(self, cfg: DataConfig) -> tuple[str, Path]:
        """('archive', file) or ('folder', dir), downloading when allowed and needed."""
        path = Path(cfg.path).expanduser() if cfg.path else cache_root(cfg) / "downloads"
        if path.is_file():
            return "archive", path
        if path.is_dir():
            if (path / self.fmt.folder / self.fmt.meta_file).is_file():
                return "folder", path / self.fmt.folder
            if (path / self.fmt.meta_file).is_file():
                return "folder", path
            path = path / self.fmt.archive_name
            if path.is_file():
                return "archive", path
        elif not path.name.endswith((".tar.gz", ".tgz")):
            path = path / self.fmt.archive_name
        if not cfg.download:
            raise DataError(
                f"{cfg.path or path}: no {self.fmt.archive_name} or {self.fmt.folder}/ here "
                f"and data.download is false; download {self.fmt.url} and set data.path to it"
            )
        download(cfg.url or self.fmt.url, path)
        return "archive", path

    def _expected_checksum(self, cfg: DataConfig) -> str:
        return cfg.sha256 or self.fmt.md5

    def fingerprint(self, cfg: DataConfig) -> str:
        kind, path = self._locate(cfg)
        if kind == "archive":
            content = verify_checksum(path, self._expected_checksum(cfg))
        else:
            content = ";".join(file_digest(path / name) for name in self._files())
        return hashlib.sha256(
            f"{content}|{cfg.labels}|{cfg.image_size}|{cfg.resize}|{cfg.channels}".encode()).hexdigest()

    def _files(self) -> tuple[str, ...]:
        return (*self.fmt.train_files, *self.fmt.test_files, self.fmt.meta_file)

    # -- reading ---------------------------------------------------------------------------
    def _read_members(self, kind: str, path: Path, cfg: DataConfig) -> dict[str, bytes]:
        wanted = self._files()
        if kind == "folder":
            missing = [n for n in wanted if not (path / n).is_file()]
            if missing:
                raise DataError(f"{path}: missing CIFAR files {', '.join(missing)}")
            return {n: (path / n).read_bytes() for n in wanted}
        verify_checksum(path, self._expected_checksum(cfg))  # before any unpickling
        found: dict[str, bytes] = {}
        try:
            with tarfile.open(path) as tar:
                for member in tar.getmembers():
                    name = member.name.rsplit("/", 1)[-1]
                    if member.isfile() and name in wanted:
                        found[name] = tar.extractfile(member).read()
        except tarfile.TarError as exc:
            raise DataError(f"{path}: not a readable tar archive: {exc}") from None
        missing = [n for n in wanted if n not in found]
        if missing:
            raise DataError(f"{path}: archive lacks CIFAR files {', '.join(missing)}")
        return found

    def _batches(self, members: dict[str, bytes], names: tuple[str, ...], key: str,
                 origin: Path) -> ImageSet:
        images, labels = [], []
        for name in names:
            batch = _unpickle(members[name], f"{origin}:{name}")
            if "data" not in batch or key not in batch:
                raise DataError(f"{origin}:{name}: lacks 'data' or {key!r}")
            data = np.asarray(batch["data"], dtype=np.uint8)
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(np.asarray(batch[key], dtype=np.int64))
        return ImageSet(np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels))

    def load(self, cfg: DataConfig) -> SourceData:
        if cfg.labels not in self.label_keys:
            raise DataError(f"data.labels = {cfg.labels!r}: valid: {', '.join(self.label_keys)}")
        kind, path = self._locate(cfg)
        members = self._read_members(kind, path, cfg)
        batch_key, meta_key = self.label_keys[cfg.labels]
        meta = _unpickle(members[self.fmt.meta_file], f"{path}:{self.fmt.meta_file}")
        classes = [str(c) for c in meta[meta_key]]
        train = self._batches(members, self.fmt.train_files, batch_key, path)
        test = self._batches(members, self.fmt.test_files, batch_key, path)
        if cfg.image_size and cfg.image_size != 32:
            train.images = resize_array(train.images, cfg.image_size, cfg.resize)
            test.images = resize_array(test.images, cfg.image_size, cfg.resize)
        if cfg.channels == 1:  # auto keeps CIFAR's colour: its images are never all gray
            train.images, test.images = (to_channels(s.images, 1) for s in (train, test))
        return SourceData(train, test, classes)


cifar10 = CifarSource(CIFAR10, {"fine": ("labels", "label_names")})
cifar100 = CifarSource(
    CIFAR100,
    {"fine": ("fine_labels", "fine_label_names"),
     "coarse": ("coarse_labels", "coarse_label_names")},
)
