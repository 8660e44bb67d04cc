"""Time budgets: `90s`, `10m`, `1h30m` as seconds, and the clock that counts a budget across
interruptions (what was spent before is saved, the current process adds its own time)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

UNITS = {"s": 1, "m": 60, "h": 3600}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smh])")


def parse_duration(text: str) -> float:
    """Seconds in `text`: a number with a unit (s, m, h), several of them (`1h30m`), or a
    bare number of seconds; a ValueError naming the text otherwise."""
    raw = str(text).strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(?:\.\d+)?", raw):
        seconds = float(raw)
    elif raw and re.fullmatch(f"(?:{_PART.pattern})+", raw):
        seconds = sum(float(n) * UNITS[u] for n, u in _PART.findall(raw))
    else:
        raise ValueError(f"budget {text!r}: expected a duration such as 90s, 10m, 1h or "
                         "1h30m (a bare number is seconds)")
    if seconds <= 0:
        raise ValueError(f"budget {text!r}: must be more than 0 seconds")
    return seconds


def format_duration(seconds: float) -> str:
    """120 -> '2m', 95 -> '1m35s', 3600 -> '1h': how budgets are written back to the user."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text + (f"{secs}s" if secs or not text else "")


class Clock:
    """Seconds spent on a budget: `before` (saved by earlier processes) plus this one's,
    read from `now` (a monotonic clock in seconds; tests pass a fake one)."""

    def __init__(self, budget: float, before: float = 0.0, started: float | None = None,
                 now: Callable[[], float] = time.perf_counter):
        self.budget, self.before, self.now = budget, before, now
        self.started = now() if started is None else started

    def spent(self) -> float:
        return self.before + self.now() - self.started

    def left(self) -> float:
        return self.budget - self.spent()
