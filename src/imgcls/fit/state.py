"""fit.json: a fit's settings, measurements, trials and final run, and the seconds it has
spent, rewritten after every step so that a killed fit continues where it stopped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from imgcls.config import ConfigError
from imgcls.fit.budget import Clock
from imgcls.log import get_logger
from imgcls.tracking.io import atomic_write_json

STATE = "fit.json"
log = get_logger(__name__)


class FitState:
    """fit.json: the settings, the measurements, every trial and the final run, and the
    seconds spent, rewritten atomically after each step (and each epoch of a run)."""

    def __init__(self, out: Path, settings: dict[str, Any], budget: float,
                 started: float | None = None):
        self.path = out / STATE
        saved = json.loads(self.path.read_text()) if self.path.is_file() else None
        if saved is not None and saved["settings"] != settings:
            changed = sorted(k for k in settings if saved["settings"].get(k) != settings[k])
            raise ConfigError(f"{out}: holds a fit with other settings ({', '.join(changed)}: "
                              f"{', '.join(repr(saved['settings'].get(k)) for k in changed)})"
                              "; rerun it with those, or pick another --out")
        self.data: dict[str, Any] = saved or {"settings": settings, "spent_seconds": 0.0,
                                              "candidates": {}, "trials": [], "log": []}
        self.clock = Clock(budget, self.data["spent_seconds"], started)

    def save(self) -> None:
        self.data["spent_seconds"] = self.clock.spent()
        atomic_write_json(self.path, self.data)

    def note(self, line: str) -> None:
        """A line for the log and the report's story of the fit."""
        log.info(f"fit: {line}")
        self.data["log"].append(line)
        self.save()
