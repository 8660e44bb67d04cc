"""torchvision's classification datasets (`data.source: torchvision:<Name>`, e.g.
`torchvision:FashionMNIST`), read by torchvision itself from `data.path` (default:
`<cache>/torchvision`), which downloads and checksum-verifies them when `data.download`
allows."""

from __future__ import annotations

import difflib
import hashlib
import inspect
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from imgcls.data.base import DataError, ImageSet, SourceData, cache_root
from imgcls.data.images import (
    announced_size,
    as_hwc,
    choose_size,
    decode_settings,
    fit_image,
    match_channels,
    resize_array,
    skip_or_refuse,
    stack_images,
    to_channels,
)

if TYPE_CHECKING:
    from imgcls.config import DataConfig


EXAMPLES = "FashionMNIST, MNIST, CIFAR10, SVHN, STL10, Flowers102"
NOT_DATASETS = {"VisionDataset", "DatasetFolder"}
TRAIN_SPLITS = ("train", "trainval", "train-standard")
TEST_SPLITS = ("test", "val", "valid")
SIZE_SAMPLE = 256  # images looked at to choose a size for datasets of mixed sizes


def _datasets_module() -> Any:
    try:
        import torchvision.datasets
    except ImportError:
        raise ValueError("the torchvision data sources need torchvision: pip install "
                         "torchvision") from None
    return torchvision.datasets


def dataset_names() -> list[str]:
    """Every dataset class torchvision.datasets exports."""
    module = _datasets_module()
    from torchvision.datasets import VisionDataset

    return sorted(n for n in module.__all__ if n not in NOT_DATASETS
                  and isinstance(getattr(module, n, None), type)
                  and issubclass(getattr(module, n), VisionDataset))


def root_help(cls: type) -> str:
    """What the class's docstring says belongs in `root`."""
    doc = inspect.getdoc(cls) or ""
    match = re.search(r"^(\s*)root\b[^:]*:(.*?)(?=^\1\w+\b[^\n:]*:|^\s*$|\Z)", doc,
                      re.MULTILINE | re.DOTALL)
    text = " ".join(match.group(2).split()) if match else ""
    return text.replace("``", "").strip().rstrip(".") or "the files torchvision downloads for it"


def _label(target: Any) -> int:
    if hasattr(target, "item") and getattr(target, "ndim", 1) == 0:
        target = target.item()
    if isinstance(target, bool) or not isinstance(target, int | np.integer):
        raise TypeError(type(target).__name__)
    return int(target)


def _arrays(ds: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(uint8 NHWC images, labels) straight from `.data` and `.targets`/`.labels` (the
    MNIST family, CIFAR, SVHN, STL10, USPS...), or None when the dataset has no such arrays."""
    data = getattr(ds, "data", None)
    labels = getattr(ds, "targets", None)
    labels = getattr(ds, "labels", None) if labels is None else labels
    if data is None or labels is None:
        return None
    data = data.numpy() if hasattr(data, "numpy") else data
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        return None
    labels = np.asarray(labels.numpy() if hasattr(labels, "numpy") else labels)
    if labels.ndim != 1 or len(labels) != len(data) or labels.dtype.kind not in "iu":
        return None
    if data.ndim == 3:
        images = data[..., None]
    elif data.ndim == 4 and data.shape[-1] in (1, 3):
        images = data
    elif data.ndim == 4 and data.shape[1] in (1, 3):
        images = data.transpose(0, 2, 3, 1)
    else:
        return None
    return np.ascontiguousarray(images), labels.astype(np.int64)


class TorchvisionDataset:
    """The source for one torchvision.datasets class."""

    def __init__(self, name: str, cls: type):
        self.name, self.cls = name, cls
        self.params = inspect.signature(cls.__init__).parameters

    def _root(self, cfg: DataConfig) -> Path:
        return Path(cfg.path).expanduser() if cfg.path else cache_root(cfg) / "torchvision"

    def _split_choices(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """(split, keyword choices to try in order) for train and, if there is one, test."""
        if "train" in self.params:
            return [("train", [{"train": True}]), ("test", [{"train": False}])]
        if "split" in self.params:
            return [("train", [{"split": s} for s in TRAIN_SPLITS]),
                    ("test", [{"split": s} for s in TEST_SPLITS])]
        return [("train", [{}])]

    def _construct(self, root: Path, cfg: DataConfig, kwargs: dict[str, Any]) -> Any:
        if "root" in self.params:
            kwargs = {"root": str(root), **kwargs}
        if "download" in self.params:
            kwargs["download"] = cfg.download
        return self.cls(**kwargs)

    def _missing(self, root: Path, cfg: DataConfig, exc: Exception) -> DataError:
        why = ("data.download is false" if not cfg.download
               else f"downloading it failed ({type(exc).__name__}: {exc})")
        return DataError(
            f"{root}: torchvision.datasets.{self.name} cannot be read from this folder "
            f"({type(exc).__name__}: {exc}) and {why}. torchvision expects there: "
            f"{root_help(self.cls)}. Put the files there (or set data.path to the folder "
            "that holds them), or set data.download: true on a machine with internet "
            "(torchvision downloads and checksum-verifies them)")

    def _open(self, cfg: DataConfig) -> dict[str, Any]:
        """{"train": dataset, "test": dataset (when there is a test split)}."""
        required = [p for p, v in self.params.items() if v.default is inspect.Parameter.empty
                    and p not in ("self", "root") and v.kind not in (v.VAR_POSITIONAL,
                                                                       v.VAR_KEYWORD)]
        if required:
            raise DataError(f"data.source torchvision:{self.name}: needs the argument(s) "
                            f"{', '.join(required)}, which imgcls cannot choose; use "
                            "data.source folder or hf for it")
        root = self._root(cfg)
        if "root" in self.params and not cfg.download and not root.is_dir():
            raise self._missing(root, cfg, FileNotFoundError("no such folder"))
        found: dict[str, Any] = {}
        for split, choices in self._split_choices():
            for kwargs in choices:
                try:
                    found[split] = self._construct(root, cfg, dict(kwargs))
                    break
                except ValueError as exc:  # verify_str_arg: the class has no such split
                    if "split" in kwargs and "split" in str(exc).lower():
                        if split == "train":
                            raise DataError(f"torchvision.datasets.{self.name}(split="
                                            f"'train'): {exc}") from None
                        continue  # the next name a test split may have
                    raise self._missing(root, cfg, exc) from None
                except Exception as exc:  # not found, download failed offline, corrupt
                    raise self._missing(root, cfg, exc) from None
        return found

    def fingerprint(self, cfg: DataConfig) -> str:
        self._open(cfg)  # downloads first, if it may: the listing below then includes it
        root = self._root(cfg)
        digest = hashlib.sha256(f"{self.name}|{decode_settings(cfg)}|"
                                f"{self._split_choices()}\n".encode())
        if root.is_dir():
            for folder, dirs, files in os.walk(root):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    if f.startswith("."):
                        continue
                    p = Path(folder) / f
                    st = p.stat()
                    digest.update(f"{p.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n"
                                  .encode())
        return digest.hexdigest()

    def load(self, cfg: DataConfig) -> SourceData:
        found = self._open(cfg)
        fast = {n: _arrays(ds) for n, ds in found.items()}
        skipped: list[str] = []
        chosen = None
        if all(a is not None for a in fast.values()):
            sets = {n: self._from_arrays(*a, cfg) for n, a in fast.items()}
        else:
            size, chosen = self._size(cfg, found)
            sets = {n: self._decode(ds, n, cfg, size, skipped) for n, ds in found.items()}
        classes = self._classes(found["train"], sets)
        data = SourceData(sets["train"], sets.get("test"), classes, skipped, chosen)
        return match_channels(data, cfg.channels)

    def _classes(self, ds: Any, sets: dict[str, ImageSet]) -> list[str]:
        labels = np.concatenate([s.labels for s in sets.values()])
        if len(labels) and labels.min() < 0:
            raise DataError(f"torchvision.datasets.{self.name}: has unlabelled images "
                            f"(label {labels.min()}); not a classification split")
        top = int(labels.max()) + 1 if len(labels) else 0
        names = getattr(ds, "classes", None)
        if isinstance(names, list | tuple) and len(names) >= top and all(
                isinstance(n, str) for n in names):
            return list(names)
        return [str(i) for i in range(top)]

    def _from_arrays(self, images: np.ndarray, labels: np.ndarray, cfg: DataConfig
                     ) -> ImageSet:
        if cfg.channels == 1:
            images = to_channels(images, 1)
        size = cfg.image_size
        if size is None and images.shape[1] != images.shape[2]:
            size = choose_size([(images.shape[2], images.shape[1])])
        if size is not None:
            images = resize_array(images, size, cfg.resize)
        return ImageSet(to_channels(images, cfg.channels), labels)

    def _item(self, ds: Any, i: int) -> tuple[Image.Image, int]:
        image, target = ds[i]
        if not isinstance(image, Image.Image):
            raise DataError(f"torchvision.datasets.{self.name}[{i}]: gives a "
                            f"{type(image).__name__}, not a PIL image")
        try:
            return image, _label(target)
        except TypeError as exc:
            raise DataError(f"torchvision.datasets.{self.name}: not a classification dataset "
                            f"(its targets are {exc}, not class numbers)") from None

    def _size(self, cfg: DataConfig, found: dict[str, Any]) -> tuple[int, int | None]:
        if cfg.image_size is not None:
            return cfg.image_size, None
        sizes = []
        for ds in found.values():
            for i in np.unique(np.linspace(0, len(ds) - 1, min(len(ds), SIZE_SAMPLE)).astype(int)):
                try:
                    sizes.append(self._item(ds, int(i))[0].size)
                except DataError:
                    raise
                except Exception:  # reported when decoding
                    continue
        chosen = announced_size(sizes, cfg)
        if chosen is not None:
            return chosen, chosen
        return (sizes[0][0] if sizes else 32), None

    def _decode(self, ds: Any, split: str, cfg: DataConfig, size: int, skipped: list[str]
                ) -> ImageSet:
        def one(i: int) -> tuple[np.ndarray, int, str] | str:
            try:
                image, label = self._item(ds, i)
                return (as_hwc(fit_image(image, size, cfg.resize, cfg.channels)), label,
                        f"{split}/{i}")
            except DataError:
                raise
            except Exception as exc:  # whatever the dataset or Pillow raise, it is bad
                return f"torchvision.datasets.{self.name} {split}[{i}]: " \
                       f"{type(exc).__name__}: {exc}"

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            results = list(pool.map(one, range(len(ds)), chunksize=64))
        skip_or_refuse([r for r in results if isinstance(r, str)], cfg, skipped,
                       "unreadable images")
        good = [r for r in results if not isinstance(r, str)]
        return ImageSet(stack_images([a for a, _, _ in good], cfg.channels, size),
                        np.array([label for _, label, _ in good], dtype=np.int64),
                        np.array([name for _, _, name in good], dtype=str))


class TorchvisionSources:
    """`named(Name)`: the source for torchvision.datasets.Name."""

    def named(self, name: str) -> TorchvisionDataset:
        valid = dataset_names()
        if name not in valid:
            lower = {v.lower(): v for v in valid}
            near = [lower[m] for m in ([name.lower()] if name.lower() in lower else
                                       difflib.get_close_matches(name.lower(), list(lower),
                                                                 n=3, cutoff=0.6))]
            hint = f" (did you mean {', '.join(map(repr, near))}?)" if near else ""
            raise ValueError(f"unknown torchvision dataset {name!r}{hint}; valid: any "
                             f"torchvision classification dataset, e.g. {EXAMPLES}")
        return TorchvisionDataset(name, getattr(_datasets_module(), name))

    def fingerprint(self, cfg: DataConfig) -> str:
        raise DataError(f"data.source = {cfg.source!r}: name the dataset, e.g. "
                        "torchvision:FashionMNIST")

    load = fingerprint


torchvision_sources = TorchvisionSources()
