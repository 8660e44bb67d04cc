"""The MLflow callback: a run logs to MLflow as it trains (`tracking.mlflow`, or MLflow's
own MLFLOW_TRACKING_URI): its parameters and tags when it starts, each epoch's metrics
with the epoch as their step, and at the end the summary's figures, the per-class table,
its records and its model. A resumed run continues its MLflow run; the callback's only
state is in the run folder (mlflow.json), so it needs none in checkpoints."""

from __future__ import annotations

from typing import Any

from imgcls.tracking.mlflow_client import MlflowRun, log_model, open_run, upload_results
from imgcls.train.callbacks import Callback, Trainer


class MLflowLogger(Callback):
    key = "mlflow"
    in_list_checkpoints = False

    def __init__(self, uri: str, experiment: str, parent: str | None = None):
        self.uri, self.experiment, self.parent = uri, experiment, parent
        self.mlrun: MlflowRun | None = None
        self.logged: dict[str, set[int]] = {}

    def on_fit_start(self, trainer: Trainer) -> None:
        if not trainer.is_main:
            return
        run = trainer.run
        self.mlrun = open_run(run, self.uri, self.experiment, self.parent)
        self.mlrun.start(run)
        if trainer.epoch:  # resumed: the epochs that reached the server before the kill
            self.logged = self.mlrun.logged_epochs(run.metrics())

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if self.mlrun is not None:
            self.mlrun.epoch(metrics, self.logged)

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        if self.mlrun is None:
            return
        ok = upload_results(self.mlrun, trainer.run, summary, log_model)
        ok &= self.mlrun.finish("FINISHED")
        trainer.run.mark_mlflow(pending=not ok)

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        if self.mlrun is None:
            return
        self.mlrun.finish("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        trainer.run.mark_mlflow(pending=True)
