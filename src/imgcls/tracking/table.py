"""Rows for `imgcls runs`: one per run folder (experiment runs included), filtered and
sorted by any summary figure or config key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imgcls.config import ConfigError, parse_override
from imgcls.tracking.records import RunRecord, find_runs
from imgcls.tracking.run import Run

COLUMNS = ("run", "model", "epochs", "best val", "test", "img/s", "wall s", "status")


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def parse_where(filters: list[str]) -> list[tuple[str, Any]]:
    """`model.name=vgg6` -> ('model.name', 'vgg6'); values parsed as YAML (64 is a number)."""
    parsed = [parse_override(text, "--where", "model.name=vgg6") for text in filters]
    return [(".".join(path), value) for path, value in parsed]


def select(records: list[RunRecord], where: list[tuple[str, Any]]) -> list[RunRecord]:
    return [r for r in records if all(r.value(k) == v for k, v in where)]


def sort_runs(records: list[RunRecord], key: str | None) -> list[RunRecord]:
    """By `key` (summary figure or config key; '-' first for descending), else newest first."""
    if key is None:
        return sorted(records, key=lambda r: Run(r.path).created(), reverse=True)
    name = key.lstrip("-")
    known = [r for r in records if r.value(name) is not None]
    if records and not known:
        raise ConfigError(f"--sort {key!r}: no run has {name!r}; use a summary figure "
                          "(test_accuracy, wall_seconds, ...) or a config key (optim.lr)")
    ordered = sorted(known, key=lambda r: r.value(name), reverse=key.startswith("-"))
    return ordered + [r for r in records if r.value(name) is None]


def run_rows(root: Path, where: list[str] = (), sort: str | None = None) -> list[tuple[str, ...]]:
    records = sort_runs(select(find_runs([root]), parse_where(list(where))), sort)
    rows = []
    for r in records:
        name = str(r.path.relative_to(root)) if r.path != root else r.path.name
        if r.summary:
            s = r.summary
            rows.append((name, s["model"], str(s["epochs"]), _fmt(s["best_val_accuracy"]),
                         _fmt(s["test_accuracy"]), _fmt(s["train_images_per_second"], 0),
                         _fmt(s["wall_seconds"], 0), s["stop_reason"]))
            continue
        last = (r.metrics() or [{}])[-1]
        status = f"failed: {r.failed}" if r.failed else "unfinished (resume with --resume)"
        rows.append((name, str(r.config.get("model.name", "?")), str(last.get("epoch", 0)),
                     _fmt(last.get("val_accuracy")), "-",
                     _fmt(last.get("images_per_second"), 0), "-", status))
    return rows
