"""`imgcls tune`: hyperparameter search with Optuna over any config key.

Every trial is an ordinary run folder (runs/<experiment>/trials/trial-NNNN). The study lives
in a SQLite file in the experiment folder unless `tune.storage` names any database URL
Optuna accepts (e.g. postgresql://...), which is how workers on several machines join one
study. Interrupted trials are resumed from their last checkpoint: trials whose worker died
(kill -9, a lost machine) are noticed by their stale heartbeat and retried by Optuna;
trials stopped by Ctrl-C are re-queued when the study is opened again. Each trial reports
its per-epoch metric so the pruner can stop poor trials early.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from imgcls.experiment.mlflow_parent import children_of, parent_run
from imgcls.experiment.spec import ExperimentPlan, SearchParam
from imgcls.log import get_logger
from imgcls.tracking.io import atomic_write_json, atomic_write_text, ctrl_c_held
from imgcls.tracking.run import Run
from imgcls.train.callbacks import Callback
from imgcls.train.setup import monitored
from imgcls.train.trainer import Trainer, TrainingDiverged

DONE = (TrialState.COMPLETE, TrialState.PRUNED)
BEST = "best.yaml"  # in the experiment folder: the best trial's full config
log = get_logger(__name__)
# heartbeats and retries are marked experimental, but they are what makes a study resumable
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def suggest(trial: optuna.Trial, key: str, p: SearchParam) -> Any:
    if p.type == "categorical":
        return trial.suggest_categorical(key, p.choices)
    if p.type == "int":
        return trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)


class OptunaPruning(Callback):
    """Reports the monitored metric every epoch; asks the pruner whether to stop."""

    def __init__(self, trial: optuna.Trial, metric: str):
        self.trial, self.metric = trial, metric

    def on_fit_start(self, trainer: Trainer) -> None:
        for m in trainer.run.metrics():  # a resumed trial: report the epochs already trained
            self.trial.report(m[monitored(self.metric, trainer.has_val)], m["epoch"])

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        # Ctrl-C waits for these database writes: an interrupt inside a SQLite write can
        # leave its lock held, and the next write (marking the trial failed) then waits out
        # the 60 s busy timeout
        with ctrl_c_held():
            self.trial.report(metrics[monitored(self.metric, trainer.has_val)],
                              metrics["epoch"])
            prune = self.trial.should_prune()
        if prune:
            trainer.stop_reason = f"pruned by Optuna after epoch {metrics['epoch']}"


def storage_url(plan: ExperimentPlan, exp_dir: Path) -> str:
    return plan.spec.tune.storage or f"sqlite:///{(exp_dir / 'study.db').resolve()}"


def open_study(plan: ExperimentPlan, exp_dir: Path, worker: int = 0) -> optuna.Study:
    settings = plan.spec.tune
    exp_dir.mkdir(parents=True, exist_ok=True)
    url = storage_url(plan, exp_dir)
    # SQLite serializes writers; several local workers wait for the lock instead of failing
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    storage = RDBStorage(url, engine_kwargs=engine, heartbeat_interval=15, grace_period=60,
                         heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
    name = settings.study or plan.name
    # the sampler's seed depends on the trials already there and on the worker, so a resumed
    # or parallel search does not propose the same points again
    known = 0
    if name in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        known = len(optuna.load_study(study_name=name, storage=storage).trials)
    seed = plan.seeds[0] * 100_003 + known * 1_009 + worker
    sampler = (optuna.samplers.TPESampler(seed=seed, n_startup_trials=settings.startup_trials)
               if settings.sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed))
    epochs = plan.config(plan.baseline, plan.seeds[0]).train.epochs
    pruner: optuna.pruners.BasePruner = {
        "median": lambda: optuna.pruners.MedianPruner(
            n_startup_trials=settings.startup_trials, n_warmup_steps=settings.warmup_epochs),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=max(
            1, settings.warmup_epochs), max_resource=epochs),
        "none": optuna.pruners.NopPruner,
    }[settings.pruner]()
    return optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                               pruner=pruner, direction=settings.direction,
                               load_if_exists=True)


def _run_number(trial: optuna.Trial) -> int:
    """The trial whose run folder this trial continues (itself unless it is a retry)."""
    if "resume_of" in trial.user_attrs:
        return trial.user_attrs["resume_of"]
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        history = RetryHeartbeatStaleTrialCallback.retry_history(frozen)
    return history[0] if history else trial.number


def requeue_interrupted(study: optuna.Study) -> list[int]:
    """Trials that failed because their process was interrupted get a retry that resumes
    their run folder (stale ones are retried by Optuna's heartbeat check instead)."""
    trials = study.get_trials(deepcopy=False)
    taken = {t.user_attrs.get("resume_of") for t in trials}
    taken |= {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    requeued = []
    for t in trials:
        if (t.state == TrialState.FAIL and t.number not in taken
                and t.user_attrs.get("interrupted")):
            origin = t.user_attrs.get("resume_of", t.number)
            study.enqueue_trial(t.params, user_attrs={"resume_of": origin})
            log.info(f"trial {t.number} was interrupted; queued to resume")
            requeued.append(t.number)
    return requeued


def objective_for(plan: ExperimentPlan, exp_dir: Path) -> Callable[[optuna.Trial], float]:
    from imgcls.train import train

    settings = plan.spec.tune

    def objective(trial: optuna.Trial) -> float:
        params = {key: suggest(trial, key, p) for key, p in plan.spec.search.items()}
        number = _run_number(trial)
        run_dir = exp_dir / "trials" / f"trial-{number:04d}"
        trial.set_user_attr("run_dir", str(run_dir.relative_to(exp_dir)))  # same on every host
        cfg = plan.config(plan.baseline, plan.seeds[0], extra=params)
        pruning = [OptunaPruning(trial, settings.metric)]
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in params.items())
        resuming = Run(run_dir).is_run()
        log.info(f"trial {trial.number}{f' (resumes trial {number})' if resuming else ''}: "
                 f"{shown}")
        try:
            _, summary = (train(resume=run_dir, callbacks=pruning) if resuming
                          else train(cfg, run_dir, callbacks=pruning))
        except TrainingDiverged as exc:
            trial.set_user_attr("diverged", str(exc))
            log.warning(f"trial {trial.number}: diverged, counted as pruned")
            raise optuna.TrialPruned(str(exc)) from None
        except KeyboardInterrupt:
            with ctrl_c_held():
                trial.set_user_attr("interrupted", True)
            raise
        history = [m[monitored(settings.metric, "val_loss" in m)]
                   for m in Run(run_dir).metrics()]
        best = max(history) if settings.direction == "maximize" else min(history)
        if summary["stop_reason"].startswith("pruned"):
            log.info(f"trial {trial.number}: {summary['stop_reason']} "
                     f"({settings.metric} {best:.4f})")
            raise optuna.TrialPruned(summary["stop_reason"])
        log.info(f"trial {trial.number}: {settings.metric} {best:.4f}")
        return best

    return objective


def run_tune(plan: ExperimentPlan, exp_dir: Path) -> optuna.Study:
    """Run trials until the study holds `tune.trials` finished (complete or pruned) ones,
    then write best.yaml."""
    if not plan.spec.search:
        raise ValueError(f"{plan.origin}: no `search` section; tune needs a search space, "
                         "e.g. search: {optim.lr: {type: float, low: 0.01, high: 1, log: true}}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    worker = int(os.environ.get("IMGCLS_WORKER", "0"))
    study = open_study(plan, exp_dir, worker)
    settings = plan.spec.tune
    atomic_write_json(exp_dir / "tune.json", {  # what `imgcls report` needs to find the study
        "name": plan.name, "file": plan.origin, "storage": storage_url(plan, exp_dir),
        "study": study.study_name, "metric": settings.metric, "direction": settings.direction,
        "search": {k: p.model_dump() for k, p in plan.spec.search.items()}})
    if worker == 0:
        requeue_interrupted(study)
    target = plan.spec.tune.trials
    finished = len(study.get_trials(deepcopy=False, states=DONE))
    base = plan.config(plan.variants[0][0], plan.seeds[0])
    experiment = base.tracking.experiment or plan.name
    parent = parent_run(exp_dir, base.tracking.mlflow, experiment, "search")
    if finished < target:
        with children_of(parent, experiment):  # each trial a child run
            study.optimize(objective_for(plan, exp_dir), callbacks=[
                optuna.study.MaxTrialsCallback(target, states=DONE)])
    if parent is not None and study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        parent.metrics({f"best.{settings.metric}": study.best_value}, step=finished)
        parent.params({f"best.{k}": str(v) for k, v in study.best_params.items()})
        parent.finish("FINISHED")
    write_best(plan, study, exp_dir / BEST)
    return study


def trial_rows(study: optuna.Study, exp_dir: Path) -> list[dict[str, str]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        run_dir = t.user_attrs.get("run_dir")
        epochs = len(Run(exp_dir / run_dir).metrics()) if run_dir else 0
        rows.append({
            "trial": str(t.number), "state": t.state.name.lower(),
            "value": "-" if t.value is None else f"{t.value:.4f}", "epochs": str(epochs),
            **{k: f"{v:.4g}" if isinstance(v, float) else str(v) for k, v in t.params.items()}})
    return rows


def _completed(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def trial_counts(study: optuna.Study) -> str:
    """'4 complete, 0 pruned, 1 failed': what `imgcls tune` ends with and the report says."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return (f"{states.count(TrialState.COMPLETE)} complete, {states.count(TrialState.PRUNED)} "
            f"pruned, {states.count(TrialState.FAIL)} failed")


def summarize(plan: ExperimentPlan, study: optuna.Study, exp_dir: Path) -> str:
    """The end of `imgcls tune`: the trial counts, the best trial and its config file."""
    if not _completed(study):
        return f"{trial_counts(study)}; no trial has completed yet"
    best = exp_dir / BEST
    return (f"{trial_counts(study)}; best trial {study.best_trial.number}: "
            f"{plan.spec.tune.metric} "
            f"{study.best_value:.4f} with {study.best_params}\n"
            f"best config: {best}  (run it: imgcls train {best})")


def write_best(plan: ExperimentPlan, study: optuna.Study, path: Path) -> Path | None:
    """The best trial's full config, ready for `imgcls train`; None (and no file) while no
    trial has completed (pruned ones have no final value to rank)."""
    if not _completed(study):
        return None
    best = study.best_trial
    cfg = plan.config(plan.baseline, plan.seeds[0], extra=best.params)
    cfg = cfg.model_copy(update={"name": f"{plan.name}-best"})
    header = (f"# best of {len(study.get_trials(states=DONE))} trials of {plan.name} "
              f"(trial {best.number}: {plan.spec.tune.metric} = {best.value:.4f})\n"
              + "".join(f"#   {k}: {v}\n" for k, v in best.params.items()))
    return atomic_write_text(path, header + cfg.to_yaml())
