"""One small registry class shared by every kind of pluggable thing (data sources, models,
optimizers, schedules, augmentations), so that a typo always fails the same helpful way."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def closest(name: str, choices: list[str], n: int = 1, cutoff: float = 0.5) -> str:
    """A ' (did you mean X?)' hint naming up to `n` choices, or '' when nothing is close."""
    same_but_case = [c for c in choices if c.lower() == name.lower()]
    matches = same_but_case or difflib.get_close_matches(name, choices, n=n, cutoff=cutoff)
    return f" (did you mean {', '.join(map(repr, matches))}?)" if matches else ""


class Registry(Generic[T]):
    """Maps names users type in configs to factories."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise KeyError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: str) -> str:
        return (
            f"unknown {self.kind} {name!r}{closest(name, self.names())}; "
            f"valid: {', '.join(self.names())}"
        )

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
