"""Fetch an archive once and prove it is the expected file before anyone opens it."""

from __future__ import annotations

import hashlib
import shutil
import urllib.request
from pathlib import Path

from imgcls.data.base import DataError
from imgcls.tracking.io import atomic_write


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path: str | Path, expected: str) -> str:
    """Raise unless the file matches `expected` (an md5 or sha256 hex digest, told apart by
    length); return the file's sha256 for use as a cache key."""
    algorithm = "md5" if len(expected) == 32 else "sha256"
    actual = file_digest(path, algorithm)
    if actual.lower() != expected.lower():
        raise DataError(
            f"{path}: {algorithm} checksum mismatch: expected {expected}, got {actual}. "
            "The file is corrupt, truncated or not the archive this source expects; "
            "delete it to download again, or set data.sha256 to the checksum of your own archive."
        )
    return actual if algorithm == "sha256" else file_digest(path)


def download(url: str, dest: Path) -> Path:
    """Download `url` (http(s) or file://) to `dest` atomically; never leaves a partial file."""
    print(f"downloading {url} -> {dest}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            atomic_write(dest, lambda f: shutil.copyfileobj(response, f, 1 << 20))
    except OSError as exc:
        raise DataError(
            f"could not download {url}: {exc}. Offline? Download it elsewhere and set "
            f"data.path to the archive (or the extracted folder)."
        ) from None
    return dest
