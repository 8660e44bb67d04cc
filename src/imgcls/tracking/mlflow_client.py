"""MLflow, where teams keep their experiments: a run's parameters, metrics, summary and
artifacts logged to a tracking server beside its run folder, which stays the record. A
server that cannot be reached when a run starts is one clear error; one that goes away
during a run never stops the training: the logger warns once and stops, the run folder
stays complete, and `sync_run` (`imgcls mlflow-sync RUN`) uploads it later, without
doubling what had arrived (metrics are sent only for steps the server lacks).

mlflow is an optional extra (`pip install -e '.[mlflow]'`), imported only here."""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from imgcls.log import exception_line, get_logger
from imgcls.tracking.records import flatten
from imgcls.tracking.run import SUMMARY, Run

log = get_logger(__name__)

ENV_URI = "MLFLOW_TRACKING_URI"
ENV_PARENT = "IMGCLS_MLFLOW_PARENT"  # a sweep's, search's or fit's parent run, for children
ENV_EXPERIMENT = "IMGCLS_MLFLOW_EXPERIMENT"  # and the experiment the children go into
OFF = "off"
KIND_TAG = "mlflow.experimentKind"
PARAMS_PER_CALL, METRICS_PER_CALL = 100, 1000  # MLflow's limits for one log_batch
PARAM_LENGTH = 6000  # MLflow's longest parameter value
# a server gone away must cost seconds, not the minutes of MLflow's default retries
QUICK = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
         "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


class MlflowError(ValueError):
    """MLflow is asked for and cannot be used: not installed, or the server unreachable."""


def tracking_uri(setting: str | None) -> str | None:
    """`tracking.mlflow` made concrete: the URI given, else `MLFLOW_TRACKING_URI`, else
    None (no MLflow); `off` is None whatever the environment says."""
    if setting == OFF:
        return None
    return setting or os.environ.get(ENV_URI) or None


def connect(uri: str) -> Any:
    """An MlflowClient for `uri` that has answered once."""
    for key, value in QUICK.items():
        os.environ.setdefault(key, value)
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise MlflowError(f"tracking.mlflow = {uri!r}: mlflow is not installed; "
                          "pip install -e '.[mlflow]' (or set tracking.mlflow: off)") from None
    client = MlflowClient(tracking_uri=uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - every way a server fails lands here
        raise MlflowError(f"MLflow at {uri}: cannot be reached ({exception_line(exc)}); start "
                          "the server, fix tracking.mlflow / MLFLOW_TRACKING_URI, or set "
                          "tracking.mlflow: off") from None
    return client


def experiment_id(client: Any, name: str) -> str:
    """The experiment called `name`, created if new (by whichever process gets there
    first: workers of a sweep start at once)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:  # the kind makes MLflow's UI open on the runs table, not its GenAI overview
        return client.create_experiment(name, tags={KIND_TAG: "custom_model_development"})
    except Exception:  # noqa: BLE001 - another process created it meanwhile
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def numbers(record: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a flat record (booleans and text left out), as metrics."""
    return {k: float(v) for k, v in flatten(record).items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}


def epoch_figures(record: dict[str, Any]) -> dict[str, float]:
    """One metrics.jsonl line as metrics: its numbers but the epoch, which is their step."""
    return {k: v for k, v in numbers(record).items() if k != "epoch"}


def params_of(config: dict[str, Any]) -> dict[str, str]:
    """A config as MLflow parameters: flattened (`optim.lr`), lists as their YAML-ish
    text, each value cut to MLflow's longest."""
    return {k: (json.dumps(v) if isinstance(v, list | dict) else str(v))[:PARAM_LENGTH]
            for k, v in flatten(config).items()}


def metric_key(name: str) -> str:
    """`name` in the characters MLflow takes in a key (letters, digits, `_-. /:`): a
    variant `optim.lr=0.01` becomes `optim.lr_0.01`."""
    return re.sub(r"[^\w.\- /:]", "_", name)


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class MlflowRun:
    """One MLflow run, logged to so that a failure never reaches the caller: the first
    failure is a warning, and from then on nothing is sent (`broken`)."""

    def __init__(self, client: Any, run_id: str, uri: str):
        self.client, self.run_id, self.uri = client, run_id, uri
        self.broken: str | None = None

    @classmethod
    def of(cls, record: dict[str, Any]) -> MlflowRun:
        """The run a record (an mlflow.json) names; KeyError or MlflowError if it cannot."""
        return cls(connect(record["uri"]), record["run_id"], record["uri"])

    def _try(self, what: str, call: Callable[[], Any]) -> bool:
        if self.broken:
            return False
        try:
            call()
            return True
        except Exception as exc:  # noqa: BLE001 - the training must go on
            self.broken = f"{what}: {exception_line(exc)}"
            log.warning(f"MLflow at {self.uri} failed ({self.broken}); the run goes on and "
                        "its folder stays complete: `imgcls mlflow-sync RUN` uploads it later")
            return False

    def params(self, values: dict[str, str]) -> bool:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in values.items()]
        return all(self._try("log parameters", lambda c=c: self.client.log_batch(
            self.run_id, params=c)) for c in _chunks(items, PARAMS_PER_CALL))

    def tags(self, values: dict[str, str]) -> bool:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in values.items()]
        return self._try("set tags", lambda: self.client.log_batch(self.run_id, tags=items))

    def metrics(self, values: dict[str, float], step: int, skip: set[str] = frozenset()
                ) -> bool:
        """`values` at `step`; keys in `skip` (already on the server at that step) left out."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = [Metric(metric_key(k), v, stamp, step) for k, v in values.items()
                 if k not in skip]
        return all(self._try("log metrics", lambda c=c: self.client.log_batch(
            self.run_id, metrics=c)) for c in _chunks(items, METRICS_PER_CALL))

    def artifact(self, path: Path, folder: str | None = None) -> bool:
        if path.is_dir():
            return self._try(f"upload {path.name}", lambda: self.client.log_artifacts(
                self.run_id, str(path), folder or path.name))
        return self._try(f"upload {path.name}", lambda: self.client.log_artifact(
            self.run_id, str(path), folder))

    def json(self, data: dict[str, Any], name: str) -> bool:
        return self._try(f"upload {name}", lambda: self.client.log_dict(self.run_id, data,
                                                                        name))

    def finish(self, status: str) -> bool:
        return self._try("end the run", lambda: self.client.set_terminated(self.run_id,
                                                                           status))

    def logged_steps(self, key: str) -> set[int]:
        """The steps the server holds for metric `key` (empty when it cannot say)."""
        try:
            return {m.step for m in self.client.get_metric_history(self.run_id,
                                                                   metric_key(key))}
        except Exception:  # noqa: BLE001 - then everything is sent
            return set()

    def logged_epochs(self, history: list[dict[str, Any]]) -> dict[str, set[int]]:
        """For each metric of `history` (metrics.jsonl), the steps the server holds: one
        request per metric."""
        keys = {k for m in history for k in epoch_figures(m)}
        return {k: self.logged_steps(k) for k in keys}

    def epoch(self, record: dict[str, Any], logged: dict[str, set[int]]) -> bool:
        """One epoch's metrics at its step, less those `logged` says arrived already."""
        step = int(record["epoch"])
        return self.metrics(epoch_figures(record), step,
                            skip={k for k, steps in logged.items() if step in steps})

    def start(self, run: Run) -> bool:
        """The run's parameters (its resolved config) and tags (what it ran on)."""
        ok = self.params(params_of(run.raw_config()))
        return self.tags(machine_tags(run)) and ok


def open_run(run: Run, uri: str, experiment: str, parent: str | None = None
             ) -> MlflowRun:
    """The MLflow run of `run`: the one its folder names (a resumed or synced run
    continues it), else a new one in `experiment`, under `parent` if given; its id is
    written into the run folder at once."""
    client = connect(uri)
    record = run.mlflow() or {}
    if record.get("uri") == uri and record.get("run_id"):
        try:
            client.update_run(record["run_id"], status="RUNNING")
            return MlflowRun(client, record["run_id"], uri)
        except Exception as exc:  # noqa: BLE001 - deleted on the server: start anew
            log.warning(f"MLflow run {record['run_id']} of {run.path} is gone "
                        f"({exception_line(exc)}); logging to a new one")
    cfg = run.config()
    tags = {"imgcls.run_dir": str(run.path.resolve()), "imgcls.name": cfg.name}
    if parent:
        tags["mlflow.parentRunId"] = parent
    created = client.create_run(experiment_id(client, experiment), tags=tags,
                                run_name=f"{cfg.name} seed {cfg.seed}")
    run.write_mlflow({"uri": uri, "run_id": created.info.run_id, "experiment": experiment,
                      "parent": parent, "pending": True})
    return MlflowRun(client, created.info.run_id, uri)


def machine_tags(run: Run) -> dict[str, str]:
    """What the run ran on and with (its environment.json), as tags."""
    env = run.environment()
    versions = env.get("versions") or {}
    tags = {"imgcls.version": versions.get("imgcls"), "imgcls.torch": versions.get("torch"),
            "imgcls.cpu": env.get("cpu"), "imgcls.gpu": env.get("gpu"),
            "imgcls.device": env.get("device"),
            "imgcls.precision": (env.get("precision") or {}).get("amp")}
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return {k: str(v) for k, v in tags.items() if v is not None}


def _git_commit() -> str | None:
    import subprocess

    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def upload_results(mlrun: MlflowRun, run: Run, summary: dict[str, Any],
                   model: Callable[[MlflowRun, Run], bool] | None) -> bool:
    """The end of a run: the summary's figures (as metrics), the per-class table, the
    records and the model; True when everything arrived."""
    figures = numbers({k: v for k, v in summary.items() if k not in ("per_class", "stages")})
    ok = mlrun.metrics(figures, step=int(summary.get("epochs") or 0))
    for row in summary.get("per_class") or []:
        name = str(row.get("class"))
        ok &= mlrun.metrics({f"class.{name}.{k}": float(v) for k, v in row.items()
                             if k != "class" and isinstance(v, int | float)}, step=0)
    ok &= mlrun.json(summary, SUMMARY)
    for path in run.artifacts():
        ok &= mlrun.artifact(path)
    if model is not None and run.has_checkpoint("best"):
        ok &= model(mlrun, run)
    return ok


MODEL_CODE = Path(__file__).resolve().parents[1] / "deploy" / "mlflow_model.py"


def log_model(mlrun: MlflowRun, run: Run) -> bool:
    """The run's best weights as an MLflow model under `model`: MLflow's "models from
    code" with deploy/mlflow_model.py (named by its file, so this layer imports nothing of
    deploy) and a copy of the files `imgcls.load` reads."""
    import shutil
    import tempfile

    import mlflow.pyfunc

    with tempfile.TemporaryDirectory() as tmp:
        files = Path(tmp) / "run"
        for name, path in run.model_files().items():
            (files / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, files / name)
        model = Path(tmp) / "model"
        try:
            mlflow.pyfunc.save_model(path=str(model), python_model=str(MODEL_CODE),
                                     artifacts={"run": str(files)},
                                     pip_requirements=[_requirement(run)])
        except Exception as exc:  # noqa: BLE001 - the run's own files are unaffected
            log.warning(f"MLflow: the model of {run.path} could not be saved "
                        f"({exception_line(exc)}); `imgcls mlflow-sync` retries")
            return False
        return mlrun.artifact(model, "model")


def _requirement(run: Run) -> str:
    """The imgcls the model needs: the version the run was trained with."""
    version = (run.environment().get("versions") or {}).get("imgcls")
    return f"imgcls=={version}" if version else "imgcls"


def upload_later(run_dir: str | Path, paths: list[Path], folder: str) -> str:
    """Files made after a run ended (an export) into the MLflow run it logged to, in
    `folder`; what happened, in words (a failure is reported, not raised: the files are
    in the run folder, and `imgcls mlflow-sync` uploads them with the rest)."""
    try:
        mlrun = MlflowRun.of(Run(run_dir).mlflow() or {})
    except (KeyError, MlflowError) as exc:
        return f"MLflow: not uploaded ({exc}); `imgcls mlflow-sync {run_dir}` does it later"
    for path in paths:
        mlrun.artifact(path, folder)
    if mlrun.broken:
        return f"MLflow: not uploaded ({mlrun.broken})"
    return f"MLflow: uploaded to run {mlrun.run_id} ({folder}/)"


def sync_run(run_dir: str | Path, uri: str | None = None, experiment: str | None = None,
             model: Callable[[MlflowRun, Run], bool] | None = log_model) -> str:
    """Upload a run folder to MLflow (`imgcls mlflow-sync`): into the MLflow run it names
    (only the metric steps the server lacks), else a new one; its parameters, tags, every
    epoch's metrics, and when it finished its summary, artifacts and model. Returns the
    MLflow run id."""
    run = Run(run_dir)
    cfg = run.config()
    record = run.mlflow() or {}
    uri = uri or record.get("uri") or tracking_uri(cfg.tracking.mlflow)
    if not uri:
        raise MlflowError(f"{run.path}: no MLflow URI: give --mlflow URI or set "
                          f"{ENV_URI}")
    mlrun = open_run(run, uri, experiment or record.get("experiment")
                     or cfg.tracking.experiment or cfg.name, record.get("parent"))
    summary = run.summary()
    ok = mlrun.start(run)
    history = run.metrics()
    logged = mlrun.logged_epochs(history)
    for m in history:
        ok &= mlrun.epoch(m, logged)
    if summary is not None:
        ok &= upload_results(mlrun, run, summary, model)
        ok &= mlrun.finish("FINISHED")
    if mlrun.broken:
        raise MlflowError(f"MLflow at {uri}: {mlrun.broken}")
    run.mark_mlflow(pending=not ok or summary is None)
    return mlrun.run_id
