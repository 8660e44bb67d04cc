"""Fetch an archive once and prove it is the expected file before anyone opens it."""

from __future__ import annotations

import hashlib
import shutil
import urllib.request
from pathlib import Path

from imgcls.data.base import DataError
from imgcls.log import get_logger
from imgcls.tracking.io import atomic_write

log = get_logger(__name__)


def file_digests(path: str | Path, *algorithms: str) -> list[str]:
    """Hex digests of one file for several algorithms, in a single read."""
    digests = [hashlib.new(a) for a in algorithms]
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            for digest in digests:
                digest.update(chunk)
    return [d.hexdigest() for d in digests]


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    return file_digests(path, algorithm)[0]


def verify_checksum(path: str | Path, expected: str) -> str:
    """Raise unless the file matches `expected` (an md5 or sha256 hex digest, told apart by
    length); return the file's sha256 for use as a cache key."""
    algorithm = "md5" if len(expected) == 32 else "sha256"
    actual, sha256 = file_digests(path, algorithm, "sha256")
    if actual.lower() != expected.lower():
        raise DataError(
            f"{path}: {algorithm} checksum mismatch: expected {expected}, got {actual}. "
            "The file is corrupt, truncated or not the archive this source expects; "
            "delete it to download again, or set data.sha256 to the checksum of your own archive."
        )
    return sha256


def download(url: str, dest: Path) -> Path:
    """Download `url` (http(s) or file://) to `dest` atomically; never leaves a partial file."""
    log.info(f"downloading {url} -> {dest}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            atomic_write(dest, lambda f: shutil.copyfileobj(response, f, 1 << 20))
    except OSError as exc:
        raise DataError(
            f"could not download {url}: {exc}. Offline? Download it elsewhere and set "
            f"data.path to the archive (or the extracted folder)."
        ) from None
    return dest
