"""Run folders as records: flattened config, summary, status. Shared by `imgcls runs`,
`compare`, sweeps and reports."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgcls.tracking.run import Run


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@dataclass
class RunRecord:
    path: Path
    config: dict[str, Any]  # flattened: {'optim.lr': 0.1, ...}
    summary: dict[str, Any] | None
    failed: str | None = None

    @property
    def status(self) -> str:
        return "failed" if self.failed else "finished" if self.summary else "unfinished"

    def metrics(self) -> list[dict[str, Any]]:
        return Run(self.path).metrics()

    def value(self, key: str) -> Any:
        """A summary figure or a config key, for filters, sorting and grouping."""
        if self.summary and key in self.summary:
            return self.summary[key]
        return self.config.get(key)


def load_record(path: Path) -> RunRecord:
    run = Run(path)
    return RunRecord(path, flatten(run.raw_config()), run.summary(), run.failure())


def find_runs(roots: Iterable[Path]) -> list[RunRecord]:
    """Every run folder under the given folders (a folder may itself be a run)."""
    found: dict[Path, RunRecord] = {}
    for root in roots:
        for folder in Run.find(root):
            if "report" not in folder.parts and folder not in found:
                found[folder] = load_record(folder)
    return list(found.values())
