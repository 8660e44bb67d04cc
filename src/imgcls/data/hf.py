"""Hugging Face `datasets` (`data.source: hf`; `pip install -e '.[hf]'`): a folder written by
`save_to_disk`, parquet file(s), an image folder, or a hub dataset name (read through
`datasets`' own cache, so it works offline once downloaded)."""

from __future__ import annotations

import glob
import hashlib
import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from imgcls.data.base import DataError, ImageSet, SourceData, cache_root
from imgcls.data.folder import visible
from imgcls.data.images import (
    announced_size,
    as_hwc,
    decode_settings,
    fit_image,
    match_channels,
    skip_or_refuse,
    stack_images,
)
from imgcls.data.table import class_order
from imgcls.log import exception_line, get_logger

if TYPE_CHECKING:
    from imgcls.config import DataConfig

log = get_logger(__name__)

MISSING = ("data.source 'hf' needs the Hugging Face datasets library: pip install -e '.[hf]' "
           "(or pip install datasets)")
IMAGE_COLUMNS = ("image", "img")
LABEL_COLUMNS = ("label", "labels", "fine_label", "class")
BATCH = 1000  # rows read (and held undecoded) at a time
GLOB_CHARS = "*?["


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise DataError(MISSING) from None
    return datasets


def _locate(cfg: DataConfig) -> tuple[str, Any]:
    """(kind, target): ("disk", folder), ("parquet", files), ("parquet_dir", folder),
    ("imagefolder", folder) or ("hub", name)."""
    if not cfg.path:
        raise DataError("data.path: the hf source needs data.path (a hub dataset name, a "
                        "save_to_disk folder, parquet file(s) or an image folder)")
    path = Path(cfg.path).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            return "disk", path
        if any(path.rglob("*.parquet")):
            return "parquet_dir", path
        if any(p.is_dir() for p in visible(path)):
            return "imagefolder", path
        raise DataError(f"data.path = {cfg.path!r}: a folder, but not one written by "
                        "save_to_disk (no dataset_dict.json or state.json), nor of parquet "
                        "files, nor of class sub-folders")
    if path.is_file():
        if path.suffix.lower() == ".parquet":
            return "parquet", [str(path)]
        raise DataError(f"data.path = {cfg.path!r}: the hf source reads .parquet files, "
                        "save_to_disk folders, image folders or hub names (a .csv/.tsv "
                        "table of image paths: data.source csv)")
    if any(c in cfg.path for c in GLOB_CHARS):
        files = sorted(glob.glob(str(path), recursive=True))
        if not files:
            raise DataError(f"data.path = {cfg.path!r}: the pattern matches no files")
        if not all(f.lower().endswith(".parquet") for f in files):
            raise DataError(f"data.path = {cfg.path!r}: a pattern must match .parquet files "
                            f"only; it matches e.g. {files[0]}")
        return "parquet", files
    if cfg.path.startswith(("/", ".", "~")) or cfg.path.count("/") > 1:
        raise DataError(f"data.path = {cfg.path!r}: no such file or folder (and not a hub "
                        "dataset name like 'mnist' or 'owner/name')")
    return "hub", cfg.path


def _open(cfg: DataConfig) -> tuple[Any, Any | None, str]:
    """(train, test or None, origin) as datasets.Dataset objects."""
    datasets = _datasets()
    kind, target = _locate(cfg)
    local_cache = str(cache_root(cfg) / "hf")
    if kind == "hub":
        loaded = _load_hub(datasets, target, cfg.hf_config)
    else:
        try:
            if kind == "disk":
                loaded = datasets.load_from_disk(str(target))
            elif kind == "parquet":
                loaded = datasets.load_dataset("parquet", data_files=target,
                                               cache_dir=local_cache)
            else:  # parquet_dir, imagefolder: datasets finds the splits in the file names
                loaded = datasets.load_dataset("parquet" if kind == "parquet_dir" else kind,
                                               data_dir=str(target), cache_dir=local_cache)
        except Exception as exc:  # whatever datasets raises, the files are the problem
            raise DataError(f"data.path = {cfg.path!r}: datasets cannot read it as {kind}: "
                            f"{type(exc).__name__}: {exc}") from None
    origin = f"data.path = {cfg.path!r}"
    if isinstance(loaded, datasets.Dataset):
        return loaded, None, origin
    splits = list(loaded)
    if "train" in loaded:
        train = loaded["train"]
    elif len(splits) == 1:
        train = loaded[splits[0]]
    else:
        raise DataError(f"{origin}: no 'train' split; its splits: {', '.join(splits)}")
    test = next((loaded[s] for s in ("test", "validation") if s in loaded), None)
    return train, test, origin


def _load_hub(datasets: Any, name: str, config: str | None) -> Any:
    offline = bool(getattr(datasets.config, "HF_HUB_OFFLINE", False))
    try:
        return datasets.load_dataset(name, config)
    except Exception as exc:  # offline, unknown name, missing config, ...
        cache = getattr(datasets.config, "HF_DATASETS_CACHE", "~/.cache/huggingface/datasets")
        where = (f"the Hugging Face dataset {name!r}" + (f" (config {config!r})" if config
                                                          else ""))
        raise DataError(
            f"data.path = {name!r}: not a local file or folder, and {where} cannot be loaded"
            f"{' offline (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE is set)' if offline else ''}: "
            f"{exception_line(exc)}. "
            f"If this machine is offline the dataset is not in the local cache ({cache}): "
            "get it on a machine with internet, e.g. python -c \"import datasets; "
            f"datasets.load_dataset({name!r}{', ' + repr(config) if config else ''})"
            ".save_to_disk('DIR')\", copy DIR here and set data.path to it (or copy the "
            "Hugging Face cache, $HF_HOME)") from None


def _given_column(features: Any, key: str, column: str, origin: str) -> str:
    """The column a `data.*_column` setting names, which the dataset must have."""
    if column not in features:
        raise DataError(f"data.{key} = {column!r}: {origin} has no such column; its "
                        f"columns: {', '.join(features)}")
    return column


def _by_name(columns: list[str], names: tuple[str, ...]) -> list[str]:
    """The columns called one of `names` (any case), in the order of `names`."""
    lower = {c.lower(): c for c in reversed(columns)}
    return [lower[n] for n in names if n in lower]


def _pick_image(features: Any, datasets: Any, cfg: DataConfig, origin: str) -> str:
    if cfg.image_column is not None:
        return _given_column(features, "image_column", cfg.image_column, origin)
    columns = list(features)
    found = next(iter(_by_name(columns, IMAGE_COLUMNS)), None)
    found = found or next((c for c in columns if isinstance(features[c], datasets.Image)), None)
    if found is None:
        raise DataError(f"{origin}: no image column (looked for {', '.join(IMAGE_COLUMNS)} or "
                        f"an Image feature); its columns: {', '.join(columns)}; set "
                        "data.image_column")
    return found


def _pick_label(features: Any, datasets: Any, cfg: DataConfig, origin: str) -> str:
    if cfg.label_column is not None:
        return _given_column(features, "label_column", cfg.label_column, origin)
    columns = list(features)
    named = _by_name(columns, LABEL_COLUMNS)
    is_class = [c for c in columns if isinstance(features[c], datasets.ClassLabel)]
    found = next((c for c in named if c in is_class), None) or next(iter(named), None) \
        or next(iter(is_class), None)
    if found is None:
        raise DataError(f"{origin}: no label column (looked for {', '.join(LABEL_COLUMNS)} or "
                        f"a ClassLabel feature); its columns: {', '.join(columns)}; set "
                        "data.label_column")
    return found


class _Images:
    """Opens a split's image column batch by batch: as file headers (for sizes) or decoded
    and fitted (L or RGB, uint8 HWC)."""

    def __init__(self, ds: Any, column: str, datasets: Any):
        self.feature = ds.features[column]
        self.is_image = isinstance(self.feature, datasets.Image)
        ds = ds.select_columns([column])
        if self.is_image:  # raw {"bytes", "path"} values: decoded here, in threads
            ds = ds.cast_column(column, datasets.Image(decode=False))
            self.decoder = datasets.Image(mode=self.feature.mode)
        self.ds, self.column = ds, column

    def batches(self, rows: Sequence[int]) -> Any:
        for start in range(0, len(rows), BATCH):
            chunk = list(rows[start:start + BATCH])
            yield chunk, self.ds[chunk][self.column]  # a batch: a dict of lists

    def name(self, value: Any, split: str, row: int) -> str:
        path = value.get("path") if isinstance(value, dict) else None
        return f"{path} ({split} row {row})" if path else f"{split} row {row}"

    def header(self, value: Any) -> tuple[int, int] | None:
        try:
            if self.is_image and value.get("bytes") is not None:
                with Image.open(io.BytesIO(value["bytes"])) as image:
                    return image.size
            if self.is_image and value.get("path") and os.path.isfile(value["path"]):
                with Image.open(value["path"]) as image:
                    return image.size
            return self.pil(value).size
        except Exception:  # decoding reports it properly later
            return None

    def pil(self, value: Any) -> Image.Image:
        if self.is_image:
            return self.decoder.decode_example(value)
        if isinstance(value, Image.Image):
            return value
        if isinstance(value, str):
            return Image.open(value)
        array = np.asarray(value)
        if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
            array = array.transpose(1, 2, 0)  # CHW
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.dtype != np.uint8:
            array = np.clip(array, 0, 255).astype(np.uint8)
        return Image.fromarray(array)


def _map(pool: ThreadPoolExecutor, fn: Callable[[Any], Any], values: Sequence[Any]) -> list:
    return list(pool.map(fn, values, chunksize=32))


class HfSource:
    def fingerprint(self, cfg: DataConfig) -> str:
        _datasets()  # the same error with or without a cached copy
        kind, target = _locate(cfg)
        digest = hashlib.sha256(f"{kind}|{decode_settings(cfg)}|{cfg.image_column}|"
                                f"{cfg.label_column}|{cfg.hf_config}\n".encode())
        if kind == "hub":
            train, test, _ = _open(cfg)
            for ds in filter(None, (train, test)):
                digest.update(f"{getattr(ds, '_fingerprint', '')}|{len(ds)}\n".encode())
            digest.update(f"{target}\n".encode())
            return digest.hexdigest()
        if isinstance(target, Path):
            files = sorted(p for p in target.rglob("*") if p.is_file()
                           and not any(part.startswith(".") for part in p.parts[-2:]))
        else:
            files = [Path(f) for f in target]
        for file in files:
            st = file.stat()
            digest.update(f"{file}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def load(self, cfg: DataConfig) -> SourceData:
        datasets = _datasets()
        train, test, origin = _open(cfg)
        image_col = _pick_image(train.features, datasets, cfg, origin)
        label_col = _pick_label(train.features, datasets, cfg, origin)
        splits = {"train": train, **({"test": test} if test is not None else {})}
        for name, ds in splits.items():
            missing = [c for c in (image_col, label_col) if c not in ds.features]
            if missing:
                raise DataError(f"{origin}: the {name} split has no column(s) "
                                f"{', '.join(missing)}; its columns: {', '.join(ds.features)}")
        skipped: list[str] = []
        feature = train.features[label_col]
        raw = {name: ds.select_columns([label_col])[:][label_col]  # a list (fast)
               for name, ds in splits.items()}
        if isinstance(feature, datasets.ClassLabel):
            classes = [str(n) for n in feature.names]
            labels = {n: [v if isinstance(v, int) and 0 <= v < len(classes) else None
                          for v in values] for n, values in raw.items()}
        else:
            text = {n: [None if v is None else str(v).strip() for v in values]
                    for n, values in raw.items()}
            classes = class_order([v for v in text["train"] if v])
            index = {c: i for i, c in enumerate(classes)}
            for n, values in text.items():
                unknown = sorted({v for v in values if v and v not in index})
                if unknown:
                    raise DataError(f"{origin}: {n} labels {unknown[:10]} are not among the "
                                    f"training labels {classes[:50]}")
            labels = {n: [index[v] if v else None for v in values] for n, values in text.items()}
        if "test" in labels and all(v is None for v in labels["test"]):
            log.info(f"{origin}: the test split has no labels; using a share of train instead")
            splits.pop("test")
        rows = {}
        for n, values in labels.items():
            if n not in splits:
                continue
            rows[n] = [i for i, v in enumerate(values) if v is not None]
            skipped.extend(f"{n} row {i}: no label" for i, v in enumerate(values) if v is None)
        images = {n: _Images(ds, image_col, datasets) for n, ds in splits.items()}
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            size, chosen = self._size(cfg, images, rows, pool)
            problems: list[str] = []
            sets = {n: self._decode(images[n], n, rows[n], labels[n], cfg, size, pool, problems)
                    for n in splits}
        skip_or_refuse(problems, cfg, skipped, "unreadable images")
        data = SourceData(sets["train"], sets.get("test"), classes, skipped, chosen)
        return match_channels(data, cfg.channels)

    def _size(self, cfg: DataConfig, images: dict[str, _Images], rows: dict[str, list[int]],
              pool: ThreadPoolExecutor) -> tuple[int, int | None]:
        """(the side images are stored at, the side chosen for mixed sizes or None)."""
        if cfg.image_size is not None:
            return cfg.image_size, None
        sizes: list[tuple[int, int] | None] = []
        for n, reader in images.items():
            for _, values in reader.batches(rows[n]):
                sizes.extend(_map(pool, reader.header, values))
        chosen = announced_size(sizes, cfg)
        if chosen is not None:
            return chosen, chosen
        known = [s for s in sizes if s is not None]
        return (known[0][0] if known else 32), None

    def _decode(self, reader: _Images, split: str, rows: list[int], labels: list[int | None],
                cfg: DataConfig, size: int, pool: ThreadPoolExecutor,
                problems: list[str]) -> ImageSet:
        arrays: list[np.ndarray] = []
        kept: list[int] = []
        names: list[str] = []

        def one(value: Any) -> np.ndarray | Exception:
            try:
                return as_hwc(fit_image(reader.pil(value), size, cfg.resize, cfg.channels))
            except Exception as exc:  # whatever Pillow raises, the image is bad
                return exc

        for chunk, values in reader.batches(rows):
            for row, value, result in zip(chunk, values, _map(pool, one, values), strict=True):
                if isinstance(result, Exception):
                    problems.append(f"{reader.name(value, split, row)}: "
                                    f"{type(result).__name__}: {result}")
                else:
                    arrays.append(result)
                    kept.append(labels[row])
                    names.append(f"{split}/{row}")
        return ImageSet(stack_images(arrays, cfg.channels, size), np.array(kept, dtype=np.int64),
                        np.array(names, dtype=str))


hf = HfSource()
