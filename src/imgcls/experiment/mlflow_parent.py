"""A parent MLflow run for a group of runs: a sweep (a child per variant and seed, the
parent holding the comparison table), a search (a child per trial) or a fit (its trials
and its final run). The parent's id is kept in the group's folder (mlflow.json, written
under a lock: a sweep's workers start at once) so that every worker, and a resumed group,
logs under the same parent; the children learn it from the environment, which worker
processes inherit."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from imgcls.experiment.results import Group
from imgcls.log import get_logger
from imgcls.tracking.io import atomic_write_json
from imgcls.tracking.mlflow_client import (
    ENV_EXPERIMENT,
    ENV_PARENT,
    MlflowError,
    MlflowRun,
    connect,
    experiment_id,
    tracking_uri,
)

log = get_logger(__name__)
RECORD = "mlflow.json"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocking: the section is a few requests long
        yield
    finally:
        os.close(fd)


def parent_run(folder: Path, setting: str | None, experiment: str, kind: str
               ) -> MlflowRun | None:
    """The group's parent MLflow run (created by the first process to get here), or None
    when the group's config logs to no MLflow."""
    uri = tracking_uri(setting)
    if uri is None:
        return None
    client = connect(uri)
    with _locked(folder / "mlflow.lock"):
        path = folder / RECORD
        record = json.loads(path.read_text()) if path.is_file() else {}
        if record.get("uri") == uri and record.get("run_id"):
            return MlflowRun(client, record["run_id"], uri)
        created = client.create_run(experiment_id(client, experiment),
                                    run_name=f"{kind} {folder.name}",
                                    tags={"imgcls.kind": kind,
                                          "imgcls.folder": str(folder.resolve())})
        atomic_write_json(path, {"uri": uri, "run_id": created.info.run_id,
                                 "experiment": experiment})
        return MlflowRun(client, created.info.run_id, uri)


@contextmanager
def children_of(parent: MlflowRun | None, experiment: str) -> Iterator[None]:
    """Runs trained inside (in this process or its workers) log under `parent`, into
    `experiment`."""
    if parent is None:
        yield
        return
    saved = {k: os.environ.get(k) for k in (ENV_PARENT, ENV_EXPERIMENT)}
    os.environ[ENV_PARENT], os.environ[ENV_EXPERIMENT] = parent.run_id, experiment
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def upload_table(folder: Path, groups: list[Group], metric: str, table: Path) -> None:
    """The group's comparison onto its parent run, where it has one: `table` (results.md)
    as an artifact and each variant's mean and standard deviation of `metric` as metrics
    (`<variant>.<metric>.mean`); the parent is then marked finished. A server that fails
    here costs a warning (the table is in the folder)."""
    path = folder / RECORD
    if not path.is_file():
        return
    try:
        parent = MlflowRun.of(json.loads(path.read_text()))
    except MlflowError as exc:
        log.warning(f"{folder}: the comparison was not uploaded ({exc})")
        return
    finished = sum(len(g.runs) for g in groups)
    figures = {}
    for g in groups:
        if g.spread is not None:
            figures[f"{g.name}.{metric}.mean"] = g.spread.mean
            figures[f"{g.name}.{metric}.runs"] = float(g.spread.n)
            if g.spread.std is not None:
                figures[f"{g.name}.{metric}.std"] = g.spread.std
    parent.metrics(figures, step=finished)
    parent.artifact(table)
    parent.finish("FINISHED")
