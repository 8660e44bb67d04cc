"""A CSV or TSV file of image paths and labels (`data.source: csv`), optionally with a split
column. Paths are relative to the file's folder (absolute paths work too)."""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from imgcls.data.base import DataError, ImageSet, SourceData
from imgcls.data.images import (
    decode_images,
    decode_settings,
    match_channels,
    skip_or_refuse,
    storage_size,
)

if TYPE_CHECKING:
    from imgcls.config import DataConfig

PATH_COLUMNS = ("path", "filename", "file", "image", "img")
LABEL_COLUMNS = ("label", "labels", "class", "category", "target", "fine_label")
SPLIT_VALUES = {"train": "train", "test": "test", "val": "test", "validation": "test"}


def class_order(labels: set[str] | list[str]) -> list[str]:
    """Sorted label strings; numerically when every one is an integer ("2" before "10")."""
    unique = set(labels)
    try:
        return sorted(unique, key=lambda s: (int(s), s))
    except ValueError:
        return sorted(unique)


def find_column(columns: list[str], chosen: str | None, defaults: tuple[str, ...],
                key: str, what: str, origin: str, required: bool = True) -> str | None:
    """The column `chosen` names (exactly, else ignoring case), or the first of `defaults`
    present (ignoring case); a DataError listing the file's columns when there is none."""
    by_lower = {c.lower(): c for c in reversed(columns)}  # the first of equal names wins
    if chosen is not None:
        found = chosen if chosen in columns else by_lower.get(chosen.lower())
        if found is None:
            raise DataError(f"data.{key} = {chosen!r}: {origin} has no such column; its "
                            f"columns: {', '.join(columns)}")
        return found
    found = next((by_lower[d] for d in defaults if d in by_lower), None)
    if found is None and required:
        raise DataError(f"{origin}: no {what} column (looked for {', '.join(defaults)}); its "
                        f"columns: {', '.join(columns)}; set data.{key}")
    return found


@dataclass
class Table:
    paths: list[Path]
    labels: list[str]
    splits: list[str]  # "train" / "test" per row
    rows: list[int]  # line numbers in the file, for messages


class CsvSource:
    def _file(self, cfg: DataConfig) -> Path:
        if not cfg.path:
            raise DataError("data.path: the csv source needs data.path (a .csv or .tsv file)")
        path = Path(cfg.path).expanduser()
        if not path.is_file():
            raise DataError(f"data.path = {cfg.path!r}: no such file (a .csv or .tsv file of "
                            "image paths and labels)")
        return path

    def read_table(self, path: Path, cfg: DataConfig) -> Table:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read it as a UTF-8 text file: {exc}") from None
        if path.suffix.lower() == ".tsv":
            delimiter = "\t"
        else:
            try:
                delimiter = csv.Sniffer().sniff(text[:8192], delimiters=",\t;|").delimiter
            except csv.Error:
                delimiter = ","
        reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
        columns = [c for c in (reader.fieldnames or []) if c is not None]
        if not columns:
            raise DataError(f"{path}: empty file; expected a header row naming the image path "
                            f"and label columns, e.g. {PATH_COLUMNS[0]},{LABEL_COLUMNS[0]}")
        path_col = find_column(columns, cfg.image_column, PATH_COLUMNS, "image_column",
                               "image path", str(path))
        label_col = find_column(columns, cfg.label_column, LABEL_COLUMNS, "label_column",
                                "label", str(path))
        split_col = find_column(columns, cfg.split_column, ("split",), "split_column",
                                "split", str(path), required=False)
        table = Table([], [], [], [])
        for row in reader:
            line = reader.line_num
            file = (row.get(path_col) or "").strip()
            label = (row.get(label_col) or "").strip()
            if not file:
                raise DataError(f"{path}, line {line}: empty {path_col!r} (image path)")
            if not label:
                raise DataError(f"{path}, line {line}: empty {label_col!r} (label) for {file}")
            split = "train"
            if split_col is not None:
                value = (row.get(split_col) or "").strip()
                if value.lower() not in SPLIT_VALUES:
                    raise DataError(f"{path}, line {line}: {split_col} = {value!r}; valid: "
                                    "train, test (val and validation count as test)")
                split = SPLIT_VALUES[value.lower()]
            image = Path(file).expanduser()
            table.paths.append(image if image.is_absolute() else path.parent / image)
            table.labels.append(label)
            table.splits.append(split)
            table.rows.append(line)
        if not table.paths:
            raise DataError(f"{path}: no rows after the header")
        return table

    def fingerprint(self, cfg: DataConfig) -> str:
        path = self._file(cfg)
        digest = hashlib.sha256(path.read_bytes())
        digest.update(f"|{decode_settings(cfg)}|{cfg.image_column}|{cfg.label_column}|"
                      f"{cfg.split_column}\n".encode())
        for file in self.read_table(path, cfg).paths:
            try:
                st = file.stat()
                digest.update(f"{file}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{file}|missing\n".encode())
        return digest.hexdigest()

    def load(self, cfg: DataConfig) -> SourceData:
        path = self._file(cfg)
        table = self.read_table(path, cfg)
        train_rows = [i for i, s in enumerate(table.splits) if s == "train"]
        test_rows = [i for i, s in enumerate(table.splits) if s == "test"]
        if not train_rows:
            raise DataError(f"{path}: no training rows (every row's split is test)")
        classes = class_order([table.labels[i] for i in train_rows])
        index = {c: i for i, c in enumerate(classes)}
        for i in test_rows:
            if table.labels[i] not in index:
                raise DataError(f"{path}, line {table.rows[i]}: test label "
                                f"{table.labels[i]!r} is not among the training labels "
                                f"{classes}")
        missing = [f"{table.paths[i]}: file not found (line {table.rows[i]} of {path.name})"
                   for i in range(len(table.paths)) if not table.paths[i].is_file()]
        skipped: list[str] = []
        skip_or_refuse(missing, cfg, skipped, "image files listed in the table are missing")
        present = {i for i in range(len(table.paths)) if table.paths[i].is_file()}
        size = storage_size(cfg, [table.paths[i] for i in sorted(present)])

        def read(rows: list[int]) -> ImageSet:
            rows = [i for i in rows if i in present]
            labels = np.array([index[table.labels[i]] for i in rows], dtype=np.int64)
            return decode_images([table.paths[i] for i in rows], labels, cfg, size, skipped,
                                 path.parent)

        train = read(train_rows)
        test = read(test_rows) if test_rows else None
        chosen = size if cfg.image_size is None else None
        return match_channels(SourceData(train, test, classes, skipped, chosen), cfg.channels)


csv_source = CsvSource()
