"""Atomic file writes: a run, checkpoint or cache is either complete on disk or absent,
never half-written, even when the process is killed mid-write."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Hold Ctrl-C until the block is done, then deliver it. A KeyboardInterrupt inside
    torch.save comes out as an unrelated RuntimeError from its zip writer's cleanup, which
    would turn an interrupted run into a failed one; a write this short is worth finishing."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives signals
        return
    pending: list[tuple[int, Any]] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending and callable(previous):
            previous(*pending[0])
        elif pending and previous == signal.SIG_DFL:
            signal.raise_signal(signal.SIGINT)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call `write` on a temporary file next to `path`, fsync it, then rename over `path`;
    Ctrl-C waits for the write to finish."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with ctrl_c_held():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))
