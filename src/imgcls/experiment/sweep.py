"""Run every variant x seed of an experiment as ordinary run folders, resumably.

    runs/<experiment>/
        experiment.json                 the resolved plan (variants, overrides, seeds)
        <variant>/seed-<seed>/          a run folder, as `imgcls train` makes
        <variant>/seed-<seed>.lock      held (flock) by the process training that run

A run is claimed with an exclusive `flock` on its lock file before anything is read or
written, and the claim is re-checked under the lock: finished runs (summary.json) are
skipped, interrupted ones resume from their last checkpoint, and a run held by another
process is left to it. The kernel drops the lock when its holder dies (kill -9 included),
so a restarted sweep picks the run up. Any number of processes, on one machine or on
several sharing the folder over a filesystem with working locks (local disks, NFSv4,
CephFS, Lustre; not sshfs or some SMB mounts), can therefore work on one sweep at once.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from imgcls.config import Config, ConfigError
from imgcls.experiment.mlflow_parent import children_of, parent_run, upload_table
from imgcls.experiment.results import Group, experiment_groups, markdown_table, table_rows
from imgcls.experiment.spec import ExperimentPlan
from imgcls.log import get_logger
from imgcls.tracking.io import atomic_write_json, atomic_write_text
from imgcls.tracking.records import flatten
from imgcls.tracking.run import Run

log = get_logger(__name__)


@dataclass(frozen=True)
class Slot:
    """One run of the plan."""

    variant: str
    seed: int
    path: Path

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @property
    def label(self) -> str:
        return f"{self.variant}/seed-{self.seed}"


def slots(plan: ExperimentPlan, exp_dir: Path) -> list[Slot]:
    """Seed-major order: every variant's first seed comes first, so an early look at a
    half-finished sweep already compares all variants."""
    return [Slot(name, seed, exp_dir / name / f"seed-{seed}")
            for seed in plan.seeds for name, _ in plan.variants]


def write_plan(plan: ExperimentPlan, exp_dir: Path) -> None:
    exp_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(exp_dir / "experiment.json", {
        "name": plan.name, "file": plan.origin, "fingerprint": plan.fingerprint(),
        "baseline": plan.baseline, "metric": plan.spec.metric, "seeds": plan.seeds,
        "variants": [{"name": name, "set": overrides} for name, overrides in plan.variants]})


@contextmanager
def claim(lock_path: Path) -> Iterator[bool]:
    """True while this process holds the run's lock; False if another process does."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        yield True
    finally:
        os.close(fd)  # releases the lock; the file stays (deleting it would race)


def check_same_config(run_dir: Path, planned: Config) -> None:
    """A run folder left by an earlier sweep must have been trained with the planned
    config; otherwise the experiment file changed and mixing the two would be wrong."""
    existing = flatten(Run(run_dir).config().model_dump(mode="json"))
    wanted = flatten(planned.model_dump(mode="json"))
    changed = [f"{k}: {existing.get(k)!r} -> {wanted.get(k)!r}"
               for k in sorted(set(existing) | set(wanted)) if existing.get(k) != wanted.get(k)]
    if changed:
        raise ConfigError(
            f"{run_dir}: trained with a different config than the experiment file now asks "
            f"for ({'; '.join(changed[:5])}). Sweep into a new folder (--out) or delete it.")


def run_slot(plan: ExperimentPlan, slot: Slot) -> str:
    """Train one run if nobody else is; returns what happened (for the log and the tests)."""
    from imgcls.train import train
    from imgcls.train.trainer import TrainingDiverged

    with claim(slot.lock_path) as mine:
        if not mine:
            return "busy"
        run = Run(slot.path)
        if run.finished():
            return "done"
        if run.failure() is not None:
            return "failed"
        cfg = plan.config(slot.variant, slot.seed)
        resuming = run.is_run()
        if resuming:
            check_same_config(slot.path, cfg)
        log.info(f"{'resume' if resuming else 'start'} {slot.label}")
        try:
            _, summary = (train(resume=slot.path) if resuming else train(cfg, slot.path))
        except TrainingDiverged as exc:  # deterministic: retrying would diverge again
            run.write_failure(str(exc))
            log.warning(f"failed {slot.label}: {exc}")
            return "failed"
        log.info(f"finished {slot.label}: {plan.spec.metric} "
                 f"{summary[plan.spec.metric]:.4f}, {summary['wall_seconds']:.0f} s")
        return "trained"


def run_sweep(plan: ExperimentPlan, exp_dir: Path) -> dict[str, list[str]]:
    """One pass over the plan, then results.md; returns the slot labels by outcome."""
    for slot in slots(plan, exp_dir):  # refuse a changed plan before training anything
        if Run(slot.path).is_run():
            check_same_config(slot.path, plan.config(slot.variant, slot.seed))
    write_plan(plan, exp_dir)
    base = plan.config(plan.variants[0][0], plan.seeds[0])
    experiment = base.tracking.experiment or plan.name
    parent = parent_run(exp_dir, base.tracking.mlflow, experiment, "sweep")
    outcomes: dict[str, list[str]] = {}
    with children_of(parent, experiment):
        for slot in slots(plan, exp_dir):
            outcome = run_slot(plan, slot)
            outcomes.setdefault(outcome, []).append(slot.label)
    busy = outcomes.get("busy", [])
    if busy:
        log.info(f"{len(busy)} run(s) are being trained by other processes: {', '.join(busy)}")
    write_results(exp_dir)
    return outcomes


def write_results(exp_dir: Path) -> list[Group]:
    """results.md: the comparison table and verdicts of the runs finished so far, written
    atomically (readers never see half a file) by every sweep pass, and again by
    `imgcls sweep --workers` once all its workers are done; returns the groups."""
    plan, groups = experiment_groups(exp_dir)
    table = atomic_write_text(exp_dir / "results.md",
                              markdown_table(table_rows(groups, plan["metric"]))
                              + "".join(f"- {g.verdict}\n" for g in groups if g.verdict))
    upload_table(exp_dir, groups, plan["metric"], table)
    return groups
