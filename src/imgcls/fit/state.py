"""fit.json on disk: the fit's typed record (`imgcls.fit.records`) and the clock that
counts its budget, rewritten atomically after every step (and every epoch of a run), so that
a killed fit continues where it stopped with the time already spent counted."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from imgcls.config import ConfigError
from imgcls.fit.budget import Clock
from imgcls.fit.records import FitRecord, Settings
from imgcls.log import get_logger
from imgcls.tracking.io import atomic_write_text

STATE = "fit.json"
log = get_logger(__name__)


class FitState:
    """The record of the fit in `out` (a new one, or the one saved there) and its clock. A
    saved record with other settings is refused, naming what differs."""

    def __init__(self, out: Path, settings: Settings, budget: float,
                 started: float | None = None):
        self.path = out / STATE
        saved = self._load() if self.path.is_file() else None
        if saved is not None and saved.settings != settings:
            old, new = saved.settings.model_dump(), settings.model_dump()
            changed = sorted(k for k in new if old[k] != new[k])
            raise ConfigError(f"{out}: holds a fit with other settings ({', '.join(changed)}: "
                              f"{', '.join(repr(old[k]) for k in changed)}); rerun it with "
                              "those, or pick another --out")
        self.record = saved or FitRecord(settings=settings)
        self.clock = Clock(budget, self.record.spent_seconds, started)

    def _load(self) -> FitRecord:
        try:
            return FitRecord.model_validate_json(self.path.read_text())
        except ValidationError as e:
            raise ConfigError(f"{self.path}: not a fit record this imgcls can continue "
                              f"({e.error_count()} problems, first: {e.errors()[0]['loc']}: "
                              f"{e.errors()[0]['msg']}); pick another --out") from None

    def save(self) -> None:
        self.record.spent_seconds = self.clock.spent()
        atomic_write_text(self.path, self.record.model_dump_json(indent=1))

    def note(self, line: str) -> None:
        """A line for the log and the report's story of the fit."""
        log.info(f"fit: {line}")
        self.record.log.append(line)
        self.save()
