"""One path for every message imgcls gives: modules log through `get_logger(__name__)`
(children of the `imgcls` logger), and the command line decides once how much is shown
(`configure_logging`). Library users get Python's usual logging and can route it anywhere."""

from __future__ import annotations

import logging

ROOT = "imgcls"


def get_logger(name: str) -> logging.Logger:
    """The logger of module `name` (e.g. `imgcls.train.trainer`), under `imgcls`."""
    return logging.getLogger(name if name.startswith(ROOT) else f"{ROOT}.{name}")
