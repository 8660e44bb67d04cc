"""Rows for `imgcls runs`: one per run folder, newest first."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def run_rows(root: Path) -> list[tuple[str, ...]]:
    rows = []
    for path in sorted(root.glob("*/config.yaml"), reverse=True):
        folder = path.parent
        summary_path = folder / "summary.json"
        if summary_path.is_file():
            s = json.loads(summary_path.read_text())
            rows.append((folder.name, s["model"], str(s["epochs"]),
                         _fmt(s["best_val_accuracy"]), _fmt(s["test_accuracy"]),
                         _fmt(s["train_images_per_second"], 0), _fmt(s["wall_seconds"], 0),
                         s["stop_reason"]))
            continue
        metrics_path = folder / "metrics.jsonl"
        lines = metrics_path.read_text().splitlines() if metrics_path.is_file() else []
        last = json.loads(lines[-1]) if lines else {}
        model = (yaml.safe_load(path.read_text()) or {}).get("model", {}).get("name", "?")
        rows.append((folder.name, model, str(last.get("epoch", 0)),
                     _fmt(last.get("val_accuracy")), "-", _fmt(last.get("images_per_second"), 0),
                     "-", "unfinished (resume with --resume)"))
    return rows
