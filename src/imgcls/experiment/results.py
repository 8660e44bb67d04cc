"""Runs found on disk, grouped into variants, summarized with statistics.

Used by `imgcls sweep` (its closing table), `imgcls compare` and `imgcls report`: one
table, however the runs were made.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgcls.experiment.spec import SUMMARY_METRICS
from imgcls.experiment.stats import Difference, Spread, describe, sentence, welch
from imgcls.tracking.records import RunRecord, find_runs, load_record
from imgcls.tracking.run import Run
from imgcls.tracking.table import parse_where, select


@dataclass
class Group:
    name: str
    runs: list[RunRecord]
    values: list[float] = field(default_factory=list)
    spread: Spread | None = None
    vs_baseline: Difference | None = None
    verdict: str = ""
    is_baseline: bool = False

    def mean_of(self, key: str) -> float | None:
        spread = _spread(self, key)
        return None if spread is None else spread.mean


def compare(records: list[RunRecord], group_of: Callable[[RunRecord], str],
            metric: str = "test_accuracy", baseline: str | None = None,
            order: list[str] | None = None) -> list[Group]:
    """Groups of runs (variants) with mean/std/CI of `metric` and each group's difference
    from the baseline group (the first, unless named)."""
    groups: dict[str, Group] = {name: Group(name, []) for name in order or []}
    for record in records:
        groups.setdefault(group_of(record), Group(group_of(record), [])).runs.append(record)
    result = [g for g in groups.values() if g.runs]
    label, scale, higher = SUMMARY_METRICS.get(metric, (metric, 1.0, True))
    for group in result:
        group.values = _values(group, metric)
        group.spread = describe(group.values) if group.values else None
    base = next((g for g in result if g.name == baseline), result[0] if result else None)
    if base is not None:
        base.is_baseline = True
    for group in result:
        if group is base or not group.values or not base or not base.values:
            continue
        group.vs_baseline = welch(group.values, base.values)
        unit = "points" if scale == 100 else ""
        group.verdict = sentence(group.name, base.name, group.vs_baseline,
                                 (len(group.values), len(base.values)), scale, unit, higher)
    return result


def compare_runs(paths: Iterable[Path], by: str | None = None, where: Iterable[str] = (),
                 metric: str = "test_accuracy", baseline: str | None = None,
                 best_first: bool = True) -> list[Group]:
    """`imgcls compare`: the runs under `paths` (filtered by `where`, e.g. 'model.name=vgg6'),
    grouped by the config key `by` (default: the run's name, i.e. its experiment variant),
    each group against `baseline` (default: the one experiment folder's own baseline, else
    the first by name)."""
    if metric not in SUMMARY_METRICS:
        raise ValueError(f"--metric {metric!r}: valid: {', '.join(SUMMARY_METRICS)}")
    paths = list(paths)
    if baseline is None and by is None:
        baseline = _planned_baseline(paths)
    records = select(find_runs(paths), parse_where(list(where)))
    if by is not None and records and all(r.value(by) is None for r in records):
        raise ValueError(f"--by {by!r}: no run has this key")

    def group_of(r: RunRecord) -> str:
        return f"{by}={r.value(by)}" if by else str(r.config.get("name", r.path.name))

    groups = compare(records, group_of, metric, baseline, sorted({group_of(r) for r in records}))
    return _best_first(groups, metric) if best_first else groups


def _planned_baseline(paths: list[Path]) -> str | None:
    """The baseline variant that `imgcls sweep` saved for the experiment, as its runs name
    it, when `paths` is one experiment folder (its plan, not the alphabet, says which)."""
    if len(paths) != 1 or not (paths[0] / "experiment.json").is_file():
        return None
    plan = json.loads((paths[0] / "experiment.json").read_text())
    return f"{plan['name']}/{plan['baseline']}"


def _best_first(groups: list[Group], metric: str) -> list[Group]:
    """The baseline, then the other groups best first; groups with no finished run last."""
    higher = SUMMARY_METRICS[metric][2]

    def score(g: Group) -> float:
        if g.spread is None:
            return -math.inf
        return g.spread.mean if higher else -g.spread.mean

    rest = sorted((g for g in groups if not g.is_baseline), key=score, reverse=True)
    return [g for g in groups if g.is_baseline] + rest


def _pm(spread: Spread | None, scale: float, digits: int) -> str:
    if spread is None:
        return "-"
    text = f"{spread.mean * scale:.{digits}f}"
    return text if spread.std is None else f"{text} +- {spread.std * scale:.{digits}f}"


def _values(group: Group, key: str) -> list[float]:
    """`key` of every finished run of the group that has it."""
    return [r.summary[key] for r in group.runs if r.summary and r.summary.get(key) is not None]


def _spread(group: Group, key: str) -> Spread | None:
    values = _values(group, key)
    return describe(values) if values else None


def table_rows(groups: list[Group], metric: str) -> list[dict[str, str]]:
    """Rows of strings, one per group, for the terminal, markdown, HTML and CSV."""
    label, scale, _ = SUMMARY_METRICS.get(metric, (metric, 1.0, True))
    digits = 2 if scale == 100 else 4
    unit = " (%)" if scale == 100 else ""
    rows = []
    for g in groups:
        s, d = g.spread, g.vs_baseline
        statuses = [r.status for r in g.runs]
        done = statuses.count("finished")
        runs = f"{done}" + (f"/{len(statuses)}" if done != len(statuses) else "")
        if "failed" in statuses:
            runs += f" ({statuses.count('failed')} failed)"
        wall, speed = g.mean_of("wall_seconds"), g.mean_of("train_images_per_second")
        params, gflops = g.mean_of("num_parameters"), g.mean_of("forward_gflops")
        rows.append({
            "variant": g.name, "runs": runs,
            f"{label}{unit}": _pm(s, scale, digits),
            "95% CI": "-" if s is None or s.ci_low is None else
            f"[{s.ci_low * scale:.{digits}f}, {s.ci_high * scale:.{digits}f}]",
            "vs baseline": "baseline" if g.is_baseline else "-" if d is None else
            f"{d.diff * scale:+.{digits}f}"
            + ("" if d.half_width is None else f" +- {d.half_width * scale:.{digits}f}"),
            "p": "-" if d is None or d.p is None else f"{d.p:.3g}",
            **({} if metric == "best_val_accuracy" else {
                "best val (%)": _pm(_spread(g, "best_val_accuracy"), 100.0, digits)}),
            "params": "-" if params is None else f"{params:,.0f}",
            "GFLOPs": "-" if gflops is None else f"{gflops:.3g}",
            "wall s": "-" if wall is None else f"{wall:.0f}",
            "img/s": "-" if speed is None else f"{speed:.0f}",
        })
    return rows


def experiment_groups(exp_dir: Path, metric: str | None = None) -> tuple[dict[str, Any],
                                                                        list[Group]]:
    """The plan saved by `imgcls sweep` and its variants, in plan order."""
    plan_path = exp_dir / "experiment.json"
    if not plan_path.is_file():
        raise FileNotFoundError(f"{exp_dir}: not an experiment folder (no experiment.json); "
                                "make one with `imgcls sweep EXPERIMENT.yaml`")
    plan = json.loads(plan_path.read_text())
    names = [v["name"] for v in plan["variants"]]
    records = [load_record(exp_dir / name / f"seed-{seed}") for seed in plan["seeds"]
               for name in names if Run(exp_dir / name / f"seed-{seed}").is_run()]
    groups = compare(records, lambda r: r.path.parent.name, metric or plan["metric"],
                     plan["baseline"], names)
    return plan, groups


def markdown_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(no runs yet)\n"
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row[k] for k in head) + " |" for row in rows]
    return "\n".join(lines) + "\n"
