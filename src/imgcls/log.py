"""One path for every message imgcls gives: modules log through `get_logger(__name__)`
(children of the `imgcls` logger), and the command line decides once how much is shown
(`configure_logging`). Library users get Python's usual logging and can route it anywhere."""

from __future__ import annotations

import logging
import sys

ROOT = "imgcls"


def get_logger(name: str) -> logging.Logger:
    """The logger of module `name` (e.g. `imgcls.train.trainer`), under `imgcls`."""
    return logging.getLogger(name if name.startswith(ROOT) else f"{ROOT}.{name}")


class _StderrHandler(logging.StreamHandler):
    """Plain lines on whatever `sys.stderr` is when a message comes: test runners (pytest,
    typer's CliRunner) swap it per test, and a stream captured once would outlive them.
    Messages go to stderr so that stdout holds only a command's result (a table, CSV, JSON)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # emit runs under the handler's lock
        super().emit(record)


def configure_logging(level: int = logging.INFO) -> logging.Logger:
    """Show imgcls' messages from `level` up on stderr, as plain lines. Safe to call again
    (every command of one process, as in tests, calls it): the level changes, and the
    handler is added only once."""
    logger = logging.getLogger(ROOT)
    logger.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    return logger


def exception_line(exc: BaseException, *, with_type: bool = True) -> str:
    """`exc` in one line for an error message that wraps it: its type and the first line of
    its text (library errors often carry pages of detail or a traceback-like dump)."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if not with_type:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
