"""`imgcls fit DATA --budget 10m`: the best classifier this machine can train on this data
in a given time, chosen by measurement.

1. Measure: the data (counts, classes, size, channels, balance), then each candidate
   (`imgcls.fit.candidates`) for a few steps on this device: training and inference
   images/s at its input size, which give a first cost model (`imgcls.fit.cost`).
   Candidates whose forecast from the priors alone (`imgcls.fit.forecast`) says they cannot
   win are not raced.
2. Search, with SEARCH_SHARE of the budget: synchronous successive halving. Round 1 trains
   every candidate that can be tried for an equal share of the round's time (resized to it:
   fewer steps, or a stratified subset); each trial's best validation figure is carried to a
   forecast of its candidate's score at the end of the final run, and the forecasts rank
   them: the better half goes on to round 2 with twice the time each (a candidate forecast
   PRUNE_MARGIN below the best is out at once, so a dominant one ends the search early);
   the best forecast of the last round wins. Trial runs skip the test split
   (`train.test: false`). (Optuna's pruners are asynchronous: with one trial at a time the
   first candidate would run to its end unchallenged.)
3. Final: the winner, planned with its trial-calibrated cost (the probe's when no trial
   trained its last stage) for the time that is left (less a reserve for the report),
   trains as an ordinary run folder; its config is saved as winner.yaml for `imgcls train`,
   and its forecast beside its test accuracy measures the forecast's error.

Trials and the final run are time-paced (`BudgetHeartbeat`): the plan sets their steps, and
while they train the steps follow the measured seconds per step to the time they have.

Everything lives in the output folder, and fit.json records every step and the seconds
spent, so a killed fit continues where it stopped with the time already spent counted."""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from imgcls.config import Config, ConfigError
from imgcls.configure import load_config
from imgcls.data import DataSplits, load_data
from imgcls.experiment.mlflow_parent import children_of, parent_run
from imgcls.fit.budget import format_duration, parse_duration
from imgcls.fit.candidates import Candidate, candidates_for, resized
from imgcls.fit.cost import (
    Cost,
    Sizing,
    calibrated,
    ceil_seconds,
    probe,
    size_run,
    size_trial,
    smallest_run,
    steps_for,
    steps_per_epoch,
    views,
)
from imgcls.fit.forecast import Forecast, carry, expected_gain, forecast, shipped_curves, spread
from imgcls.fit.pacing import BudgetHeartbeat, Pace
from imgcls.fit.records import (
    CandidateRecord,
    DataFacts,
    FinalRecord,
    FitRecord,
    MachineFacts,
    Plan,
    RaceCall,
    Settings,
    TrialRecord,
)
from imgcls.fit.report import write_fit_report
from imgcls.fit.state import FitState
from imgcls.hardware import machine_line
from imgcls.log import get_logger
from imgcls.models.timm_models import TIMM_PREFIX, timm_id
from imgcls.recipes import CONFIGS
from imgcls.tracking.io import atomic_write_text
from imgcls.tracking.mlflow_client import numbers
from imgcls.tracking.run import Run
from imgcls.train.precision import resolve_precision
from imgcls.train.setup import resolve_device

WINNER = "winner.yaml"
SEARCH_SHARE = 0.2  # of the budget, for the trials
DEADLINE_SLACK = 0.03  # the final run stops when an epoch would end past budget + 3%
RESERVE = 0.005  # of the budget (1 s at least), kept for the report after the final run
# a candidate forecast this far below the best is not raced (from the priors alone), or is
# out of the race (from its trial): the priors know nothing yet of this data's level
PRIOR_MARGIN = 0.10
PRUNE_MARGIN = 0.05
MIN_VAL_IMAGES = 50  # fewer cannot rank candidates: the prior choice is taken
METRICS = {"accuracy": "val_accuracy", "macro_f1": "val_macro_f1"}
NAMED_SOURCES = ("cifar10", "cifar100")
log = get_logger(__name__)


class BudgetTooSmall(ValueError):
    pass


@dataclass
class FitResult:
    out: Path
    winner: str
    run: Run
    summary: dict[str, Any]
    record: FitRecord


# -- the data --------------------------------------------------------------------------------
def base_config(data: str | Path, overrides: list[str]) -> tuple[Config, int, list[str]]:
    """The recipe `imgcls train DATA` would pick (a folder, archive or CSV file), or, for a
    dataset name, the fast CIFAR recipe on it, with `overrides` (`key=value`) on top; the
    images' own size (the median short side: the recipe may store them smaller); and the
    lines that say what was chosen."""
    from imgcls.recipes import peek_data, recipe_for_data

    text = str(data)
    if text in NAMED_SOURCES:
        cfg = load_config(CONFIGS / "cifar10-fast.yaml", [f"data.source={text}", *overrides])
        return cfg, 32, [f"data: the {text} dataset; base recipe cifar10-fast.yaml"]
    if not Path(text).expanduser().exists():
        raise ConfigError(f"{text}: no such folder or file, and not a dataset name; imgcls "
                          "fit takes a folder of class sub-folders, an archive of one, a "
                          f"CSV/TSV file, or one of {', '.join(NAMED_SOURCES)}")
    cfg, lines = recipe_for_data(text, overrides)
    native = peek_data(text, cfg.data).short_side or cfg.data.image_size or 32
    return cfg, native, lines


def data_facts(splits: DataSplits, native_size: int) -> DataFacts:
    counts = splits.counts()
    train = counts["train"]
    return DataFacts(classes=splits.classes, train_images=sum(train),
                     val_images=sum(counts.get("val", [])), test_images=sum(counts["test"]),
                     per_class_train=train, imbalance=max(train) / max(min(train), 1),
                     stored_size=splits.image_size, channels=splits.channels,
                     load_seconds=splits.seconds, native_size=native_size)


def machine_facts(cfg: Config) -> MachineFacts:
    device = resolve_device(cfg.train.device)
    precision = resolve_precision(cfg.train.amp, device)
    return MachineFacts(device=device.type, line=machine_line(precision.describe()),
                        threads=torch.get_num_threads(), torch=torch.__version__,
                        python=platform.python_version())


# -- the steps -------------------------------------------------------------------------------
def _score(run: Run, metric: str) -> float | None:
    values = [m[metric] for m in run.metrics() if m.get(metric) is not None]
    return max(values) if values else None


def _train(cfg: Config, run_dir: Path, state: FitState, deadline: float | None = None,
           pace: Pace | None = None) -> tuple[Run, dict[str, Any]]:
    """Train `cfg` into `run_dir`, or continue it there (a fit killed mid-run)."""
    from imgcls.train import train

    run = Run(run_dir)
    heartbeat = [BudgetHeartbeat(state, deadline, pace)]
    if run.finished():
        return run, run.summary()
    if run.is_run():
        return train(resume=run_dir, callbacks=heartbeat)
    return train(cfg, run_dir, callbacks=heartbeat)


def _resized_stage(candidate: Candidate) -> int | None:
    return len(candidate.config.stages) - 1 if candidate.config.stages else None


def _measure(state: FitState, candidates: list[Candidate], facts: DataFacts
             ) -> dict[str, Cost]:
    """Each candidate's cost model: from the probe, or from its latest trial once run."""
    loaded: dict[str, float] = {}
    for c in candidates:
        if c.name in state.record.candidates:
            continue
        key = c.config.data.model_dump_json()
        if key not in loaded:  # decode once into the cache; the runs then load from it
            loaded[key] = load_data(c.config.data).seconds
            loaded[key] = load_data(c.config.data).seconds
        cost, speed = probe(c, len(facts.classes), facts.channels, loaded[key],
                            facts.val_images)
        state.record.candidates[c.name] = CandidateRecord(
            family=c.family, about=c.about, input_size=c.input_size, prior=c.prior,
            probe_cost=cost, **speed)
        state.note(f"measured {c.name}: {speed['train_images_per_second']:.0f} training "
                   f"images/s, {speed['eval_images_per_second']:.0f} inference images/s "
                   f"at {c.input_size} px")
    return {c.name: state.record.candidates[c.name].current_cost for c in candidates}


def _run_trial(state: FitState, out: Path, candidate: Candidate, round_: int,
               seconds: float, costs: dict[str, Cost], facts: DataFacts, metric: str,
               seed: int) -> TrialRecord | None:
    """One trial (or the record of one already run): the candidate resized to `seconds`."""
    name = f"round{round_}-{candidate.name}"
    trial = next((t for t in state.record.trials if t.name == name), None)
    if trial is None:
        sizing = size_trial(costs[candidate.name], seconds, facts.train_images,
                            facts.min_images, candidate.head_only_possible)
        if sizing is None:
            return None
        trial = TrialRecord(name=name, candidate=candidate.name, round=round_,
                            allotted_seconds=seconds, predicted_seconds=sizing.seconds,
                            starts_at=state.clock.spent(), run_dir=f"trials/{name}",
                            **_plan(candidate, sizing, facts).model_dump())
        state.record.trials.append(trial)
        state.save()
    if trial.finished:
        return trial
    cfg = _sized_config(candidate, trial, facts, seed, name, test=False)
    fresh = not Run(out / trial.run_dir).is_run()  # else resumed: part ran before
    start = time.perf_counter()
    run, summary = _train(cfg, out / trial.run_dir, state,
                          pace=Pace(trial.starts_at + seconds, 0.0,
                                    costs[candidate.name].per_epoch))
    wall = time.perf_counter() - start if fresh else summary["wall_seconds"]
    _trained(trial, run, summary)
    trial.score, trial.wall_seconds = _score(run, metric), wall
    trial.stop_reason, trial.finished = summary["stop_reason"], True
    cost = calibrated(costs[candidate.name], summary, run.metrics(), trial.images,
                      facts.val_images, _resized_stage(candidate), wall)
    state.record.candidates[candidate.name].cost = costs[candidate.name] = cost
    score = "none" if trial.score is None else f"{trial.score:.4f}"
    state.note(f"trial {name}: {trial.text()} in {wall:.1f} s (planned "
               f"{trial.predicted_seconds:.1f} s): {metric} {score}")
    return trial


def _plan(candidate: Candidate, sizing: Sizing, facts: DataFacts) -> Plan:
    """A trial's or the final run's sizing as recorded in fit.json: the resized stage's
    epochs begun, its images and planned optimizer steps (None: head-only)."""
    steps = (steps_for(sizing, facts.train_images, candidate.config.train.batch_size)
             if sizing.epochs else None)
    return Plan(epochs=sizing.epochs, images=sizing.images(facts.train_images), steps=steps,
                passes=sizing.passes)


def _sized_config(candidate: Candidate, plan: Plan, facts: DataFacts, seed: int, name: str,
                  test: bool = True, stretch: float = 0.5) -> Config:
    subset = None if plan.images == facts.train_images else plan.images
    return resized(candidate, plan.epochs, subset, seed, name, test, plan.steps, stretch)


def _trained(plan: Plan, run: Run, summary: dict[str, Any]) -> None:
    """What a paced run trained in the end: its resized stage's steps and images."""
    if plan.steps:
        plan.steps = summary["last_stage_steps"]
        per_epoch = steps_per_epoch(plan.images, run.config().train.batch_size)
        plan.passes = plan.steps / per_epoch * plan.images


# -- forecasts -------------------------------------------------------------------------------
def _reserve(budget: float) -> float:
    """The seconds kept after the final run for the report: RESERVE, 1 s at least."""
    return max(1.0, RESERVE * budget)


def _final_room(state: FitState) -> float:
    """The seconds the final run gets once the search has taken its share."""
    budget = state.clock.budget
    search_end = state.record.search_ends_at
    if search_end is None:
        search_end = state.clock.spent() + SEARCH_SHARE * budget
    return budget - search_end - _reserve(budget)


def _final_sizing(candidate: Candidate, cost: Cost, seconds: float, facts: DataFacts
                  ) -> Sizing | None:
    """The training a final run of `seconds` holds, its test (with TTA) included."""
    return size_run(cost, seconds, facts.train_images, facts.min_images, facts.test_images,
                    views(candidate.config.train.tta), candidate.head_only_possible)


def _forecast(state: FitState, candidate: Candidate, facts: DataFacts, passes: float
              ) -> Forecast | None:
    """The candidate's score after `passes` of its last stage: from its trial that trained
    on the most images, the latest of those (its own score where no reference curve of its
    family exists), else from the priors alone (None without a curve). A trial on a small
    subset measures a model of that subset: fine-tuning Lite0 on 317 of 3,107 flowers5
    images scored 0.66 where its head on 2,520 had scored 0.76, and, taken as the latest,
    lost the race to fastnet94 (75.1% test against the config's 78-79%)."""
    scored = state.record.scored(candidate.name)
    if not scored:
        return forecast(candidate.family, candidate.input_size, facts.train_images,
                        len(facts.classes), passes)
    trial = max(reversed(scored), key=lambda t: t.images)  # ties: the latest
    trial_passes = trial.passes / facts.train_images
    return (forecast(candidate.family, candidate.input_size, facts.train_images,
                     len(facts.classes), passes, trial_passes, trial.score,
                     val_images=facts.val_images)
            or Forecast(trial.score, passes, trial_passes, trial.score))


def _final_forecast(state: FitState, candidate: Candidate, cost: Cost, seconds: float,
                    facts: DataFacts) -> Forecast | None:
    """The candidate's forecast for a final run of `seconds`: its last stage's passes over
    all the training images (0: head-only; a subset counts its images); None if no such
    run fits or no forecast can be made."""
    sizing = _final_sizing(candidate, cost, seconds, facts)
    if sizing is None:
        return None
    return _forecast(state, candidate, facts, sizing.passes / facts.train_images)


def _prune(state: FitState, candidates: list[Candidate], costs: dict[str, Cost],
           facts: DataFacts) -> list[Candidate]:
    """The candidates worth racing: those whose forecast from the priors alone, for a final
    run of the time the search leaves, is within PRIOR_MARGIN of the best forecast, and
    only if the race pays (`_race_call`), else the leader alone; the rest are left out,
    said so (the choice is kept, so a resumed fit races the same)."""
    if state.record.raced is not None:
        return [c for c in candidates if c.name in state.record.raced]
    seconds = _final_room(state)
    prior: dict[str, Forecast | None] = {}
    for c in candidates:
        prior[c.name] = _final_forecast(state, c, costs[c.name], seconds, facts)
        state.record.candidates[c.name].prior_forecast = prior[c.name]
    best = max((f.score for f in prior.values() if f), default=None)
    raced = [c for c in candidates
             if best is None or prior[c.name] is None
             or prior[c.name].score >= best - PRIOR_MARGIN]
    for c in candidates:
        if c not in raced:
            state.note(f"{c.name} not raced: forecast {prior[c.name].describe()}, more than "
                       f"{PRIOR_MARGIN:.2f} below the best forecast ({best:.4f})")
    if len(raced) > 1 and all(prior[c.name] is not None for c in raced):
        call = state.record.race_call = _race_call(state, raced, prior, costs, facts)
        if not call.pays:
            state.note(f"no race: {call.text()}")
            raced = [c for c in raced if c.name == call.leader]
    state.record.raced = [c.name for c in raced]
    state.save()
    return raced


def _race_call(state: FitState, raced: list[Candidate], prior: dict[str, Forecast],
               costs: dict[str, Cost], facts: DataFacts) -> RaceCall:
    """Whether racing `raced` pays. Without a race the best priors-only forecast for a
    final run of all the time left wins outright (the leader); a race leaves less time (the
    priors' best forecast after it, lower: the race's cost) but measures, so it is expected
    to gain the most a rival may beat the best by, their gap uncertain by `spread`."""
    left = state.clock.left() - _reserve(state.clock.budget)
    alone = {c.name: _final_forecast(state, c, costs[c.name], left, facts) for c in raced}
    leader = max(raced, key=lambda c: alone[c.name].score if alone[c.name] else -1.0)
    ahead = max(raced, key=lambda c: prior[c.name].score)  # the best, if they race
    gains = []
    for c in raced:
        if c is not ahead:
            gap = spread([ahead.family, c.family], facts.train_images,
                         [ahead.input_size, c.input_size])
            gains.append((expected_gain(prior[c.name].score - prior[ahead.name].score,
                                        gap), gap))
    gain, gap = max(gains)
    best_alone = alone[leader.name].score if alone[leader.name] else prior[ahead.name].score
    return RaceCall(leader=leader.name, cost=max(0.0, best_alone - prior[ahead.name].score),
                    gain=gain, spread=gap)


# -- the race --------------------------------------------------------------------------------
def _search(state: FitState, out: Path, candidates: list[Candidate], costs: dict[str, Cost],
            facts: DataFacts, metric: str, seed: int) -> tuple[Candidate, str]:
    """Successive halving over `candidates` (two rounds; one with two candidates), ranked by
    each one's forecast score at the end of the final run (`_forecast`), not by its
    trial's score; a candidate forecast PRUNE_MARGIN below the best is out at once, so a
    dominant one ends the search early. The winner and why it won."""
    budget = state.clock.budget
    if state.record.search_ends_at is None:
        state.record.search_ends_at = state.clock.spent() + SEARCH_SHARE * budget
    search_end = state.record.search_ends_at
    alive = list(candidates)
    rounds = 1 if len(alive) == 2 else 2
    for r in range(rounds):
        left = max(0.0, search_end - state.clock.spent())
        share = left / (rounds - r) / len(alive)
        results = []
        for c in alive:
            trial = _run_trial(state, out, c, r + 1, share, costs, facts, metric, seed)
            if trial is None:
                state.note(f"round {r + 1}: {c.name} cannot be tried in {share:.0f} s "
                           f"(its smallest useful trial is longer); out")
            elif trial.score is not None:
                trial.forecast = _final_forecast(state, c, costs[c.name], _final_room(state),
                                                 facts)
                if trial.forecast is None:
                    state.note(f"round {r + 1}: {c.name} has no final run that fits; out")
                    continue
                results.append((trial.forecast.score, -c.prior, c))
        if not results:
            break
        results.sort(key=lambda t: (t[0], t[1]), reverse=True)
        keep = 1 if r == rounds - 1 else max(1, math.ceil(len(results) / 2))
        best = results[0][0]
        alive = [c for s, _, c in results[:keep] if s >= best - PRUNE_MARGIN]
        state.note(f"round {r + 1} of {rounds}: forecasts for the final run "
                   + ", ".join(f"{c.name} {s:.4f}" for s, _, c in results)
                   + f"; on: {', '.join(c.name for c in alive)}")
        if len(alive) == 1:  # decided: the rest of the search time goes to the final run
            break
    winner = alive[0]
    forecast_trials = [t for t in state.record.trials
                       if t.candidate == winner.name and t.forecast is not None]
    if not forecast_trials:
        return _prior_choice(candidates, "no trial finished within the search share")
    last = forecast_trials[-1]
    return winner, (f"best forecast {metric.removeprefix('val_')} at the end of the final run "
                    f"({last.forecast.describe()}, round {last.round})")


def _prior_choice(candidates: list[Candidate], reason: str) -> tuple[Candidate, str]:
    best = min(candidates, key=lambda c: c.prior)
    return best, (f"{reason}: the first choice for such data ({best.about})")


def _feasible(candidates: list[Candidate], costs: dict[str, Cost], facts: DataFacts,
              seconds: float, state: FitState) -> list[Candidate]:
    """The candidates whose smallest useful final run fits in `seconds`; BudgetTooSmall
    (with the smallest useful budget) when none does."""
    smallest = {c.name: smallest_run(costs[c.name], facts.train_images, facts.min_images,
                                     facts.test_images, views(c.config.train.tta),
                                     c.head_only_possible)
                for c in candidates}
    fits = [c for c in candidates if smallest[c.name] <= seconds]
    if not fits:
        need = state.clock.spent() + min(smallest.values()) * (1 + RESERVE) + 2
        cheapest = min(smallest, key=smallest.get)
        raise BudgetTooSmall(
            f"budget {format_duration(state.clock.budget)} is too small for any candidate on "
            f"this data on this machine: the smallest useful budget is about "
            f"{format_duration(ceil_seconds(need))} ({cheapest}: one epoch over "
            f"{facts.min_images:,} images plus the test, after "
            f"{state.clock.spent():.0f} s of measuring)")
    for c in candidates:
        if c not in fits:
            state.note(f"{c.name} left out: its smallest useful run takes "
                       f"{smallest[c.name]:.0f} s, more than the {seconds:.0f} s there are")
    return fits


def _choose(state: FitState, out: Path, candidates: list[Candidate], costs: dict[str, Cost],
            facts: DataFacts, metric: str, seed: int) -> Candidate:
    record = state.record
    if record.winner is not None:
        return next(c for c in candidates if c.name == record.winner)
    if len(candidates) == 1:
        winner, why = candidates[0], "the only candidate"
        if record.race_call is not None and not record.race_call.pays:
            why = (f"best forecast from the priors alone "
                   f"({record.candidates[winner.name].prior_forecast.describe()}); "
                   f"{record.race_call.text()}")
        elif len(record.candidates) > 1:  # the others: ruled out, said above
            why = "the only candidate left"
    elif facts.val_images < MIN_VAL_IMAGES:
        winner, why = _prior_choice(candidates, f"only {facts.val_images} validation "
                                    f"images (fewer than {MIN_VAL_IMAGES} cannot rank)")
    else:
        winner, why = _search(state, out, candidates, costs, facts, metric, seed)
    record.winner, record.why = winner.name, why
    state.note(f"winner: {winner.name}, {why}")
    return winner


# -- the final run ---------------------------------------------------------------------------
def _reusable_trial(state: FitState, winner: Candidate, facts: DataFacts
                    ) -> TrialRecord | None:
    """The winner's latest head-only trial on all the training images, run to its end: its
    run is the final run's head stage, to the bit (same seed, same settings)."""
    found = [t for t in state.record.trials
             if t.candidate == winner.name and t.finished and t.steps is None
             and t.images == facts.train_images and t.stop_reason == "completed"]
    return found[-1] if found and winner.head_only_possible else None


def _plan_final(state: FitState, out: Path, winner: Candidate, cost: Cost, facts: DataFacts,
                seed: int) -> FinalRecord:
    """The final run's plan for the time left (less the report's reserve), its forecast,
    and winner.yaml. A run that starts from a head-only trial has no head stage to pay."""
    seconds = state.clock.left() - _reserve(state.clock.budget)
    reused = _reusable_trial(state, winner, facts)
    if reused is not None:
        cost = replace(cost, prefix=0.0, prefix_per_image=0.0)
    sizing = _final_sizing(winner, cost, seconds, facts)
    if sizing is None:  # the search overran: the smallest run, said so
        images = facts.min_images
        sizing = (Sizing(0, images, 0, 0.0) if winner.head_only_possible else
                  Sizing(1, images, images, 0.0))
    final = FinalRecord(candidate=winner.name, planned_seconds=seconds,
                        predicted_seconds=sizing.seconds, run_dir="final", cost=cost,
                        reused_trial=reused.name if reused else None,
                        forecast=_forecast(state, winner, facts,
                                           sizing.passes / facts.train_images),
                        **_plan(winner, sizing, facts).model_dump())
    # planned from the probe alone (no trial trained its last stage): more room
    cfg = _sized_config(winner, final, facts, seed, f"fit-{winner.name}",
                        stretch=0.5 if cost.measured else 1.0)
    _write_winner(out, winner, cfg, f"sized to {seconds:.0f} s on this machine")
    state.record.final = final
    start = f", from trial {reused.name}'s head stage" if reused else ""
    state.note(f"final: {winner.name}, {final.text()}{start}, predicted "
               f"{sizing.seconds:.0f} s of the {seconds:.0f} s left")
    return final


def _final(state: FitState, out: Path, winner: Candidate, cost: Cost, facts: DataFacts,
           seed: int) -> tuple[Run, dict[str, Any]]:
    budget = state.clock.budget
    final = state.record.final or _plan_final(state, out, winner, cost, facts, seed)
    cfg = load_config(out / WINNER)
    run_dir = out / final.run_dir
    if final.reused_trial and not Run(run_dir).is_run():
        trial = next(t for t in state.record.trials if t.name == final.reused_trial)
        Run.create(cfg, run_dir).start_from(Run(out / trial.run_dir))
    tta_views, val_images = views(cfg.train.tta), max(1, facts.val_images)
    pace = Pace(budget - _reserve(budget), 0.0, final.cost.per_epoch,
                facts.test_images * tta_views / val_images, tta_views,
                choose_tta=cfg.train.tta_from_val and tta_views > 1,
                worth=_worth(winner, facts))
    pace.measured(final.cost.test_seconds(val_images))  # until a validation measures it
    deadline = budget * (1 + DEADLINE_SLACK) - pace.after
    run, summary = _train(cfg, run_dir, state, deadline, pace)
    _trained(final, run, summary)
    final.wall_seconds, final.test_accuracy = summary["wall_seconds"], summary["test_accuracy"]
    final.forecast_trained = _forecast(state, winner, facts, final.passes / facts.train_images)
    if final.forecast_trained is not None:  # for what the paced run really trained
        final.forecast_error = final.test_accuracy - final.forecast_trained.score
    if final.steps:  # what the paced run took, so `imgcls train` repeats it
        cfg = load_config(out / WINNER, [f"train.steps={final.steps}"])
        _write_winner(out, winner, cfg, f"its final run took {final.steps:,} steps "
                      f"in {summary['wall_seconds']:.0f} s on this machine")
    return run, summary


def _worth(candidate: Candidate, facts: DataFacts) -> Callable[[float, float], float] | None:
    """The share of the error that training `candidate` for b passes instead of a removes,
    from its family's curves (None without one): what the final run weighs its TTA's test
    time against (CIFAR-10 in 5 minutes: six views of the test take the time of about 7
    of 61-64 steps, which the curves say remove 8.2-8.7% of the error, 1.4-1.6 points on
    validation, where the views gained 0.1-0.9)."""
    curves = shipped_curves()
    if not any(c.family == candidate.family for c in curves):
        return None
    return lambda a, b: 1.0 - carry(candidate.family, facts.train_images, candidate.input_size,
                                    a, b, curves)


def _selected(candidates: list[Candidate], only: list[str]) -> list[Candidate]:
    """The candidates `--candidates` names: by name, or a `timm:` model at every size."""
    def named(c: Candidate, name: str) -> bool:
        return c.name == name or (name.startswith(TIMM_PREFIX)
                                  and c.name.startswith(timm_id(name) + "-"))

    unknown = sorted(n for n in only if not any(named(c, n) for c in candidates))
    if unknown:
        raise ConfigError(f"--candidates {', '.join(unknown)}: not among this data's "
                          f"candidates: {', '.join(c.name for c in candidates)} (or a "
                          "timm:NAME.TAG with weights)")
    return [c for c in candidates if any(named(c, n) for n in only)]


def _write_winner(out: Path, winner: Candidate, cfg: Config, sized: str) -> None:
    atomic_write_text(out / WINNER, f"# imgcls fit's winner ({winner.about}), {sized}; "
                      f"rerun: imgcls train {WINNER}\n" + cfg.to_yaml())


def fit(data: str | Path, budget: str | float, metric: str = "accuracy",
        out: str | Path | None = None, seed: int = 0, overrides: list[str] = (),
        only: list[str] | None = None, started: float | None = None) -> FitResult:
    """Train the best classifier this machine can in `budget` (seconds, or a duration such
    as "10m") on `data`; `only` restricts the candidates by name. The budget counts from
    `started` (a `time.perf_counter()` reading; the CLI passes its own start), else from
    now. Rerun with the same arguments to continue an interrupted fit; a finished one
    returns its result."""
    started = time.perf_counter() if started is None else started
    if metric not in METRICS:
        raise ConfigError(f"metric {metric!r}: valid: {', '.join(METRICS)}")
    seconds = budget if isinstance(budget, int | float) else parse_duration(budget)
    overrides = list(overrides)
    base, native, lines = base_config(data, overrides)
    out = Path(out) if out else Path("runs") / f"fit-{base.name}-{format_duration(seconds)}"
    settings = Settings(data=str(data), budget_seconds=seconds, metric=metric, seed=seed,
                        overrides=overrides, only=list(only) if only else None)
    out.mkdir(parents=True, exist_ok=True)
    state = FitState(out, settings, seconds, started)
    record = state.record
    if record.done:
        run = Run(out / record.final.run_dir)
        return FitResult(out, record.winner, run, run.summary(), record)
    if record.data is None:
        for line in lines:
            state.note(line)
        record.data = data_facts(load_data(base.data), native)
        record.machine = machine_facts(base)
        state.note(f"machine: {record.machine.line}")
    facts = record.data
    asked = [name for name in only or [] if name.startswith(TIMM_PREFIX)]
    candidates = candidates_for(base, facts.native_size, facts.train_images,
                                len(facts.classes), record.machine.device,
                                overrides=overrides, timm_models=asked)
    if only:
        candidates = _selected(candidates, only)
    costs = _measure(state, candidates, facts)
    if record.winner is None:
        room = state.clock.left() - _reserve(seconds)
        if len(candidates) > 1:
            room *= 1 - SEARCH_SHARE  # what the final run gets if a search runs
        candidates = _feasible(candidates, costs, facts, room, state)
        if len(candidates) > 1 and facts.val_images >= MIN_VAL_IMAGES:  # else: no race
            candidates = _prune(state, candidates, costs, facts)
    experiment = base.tracking.experiment or f"fit-{base.name}"
    parent = parent_run(out, base.tracking.mlflow, experiment, "fit")
    with children_of(parent, experiment):  # the trials and the final run
        winner = _choose(state, out, candidates, costs, facts, METRICS[metric], seed)
        run, summary = _final(state, out, winner, costs[winner.name], facts, seed)
    if parent is not None:
        parent.params({"winner": winner.name, "budget_seconds": str(seconds)})
        parent.metrics(numbers({k: summary.get(k) for k in (
            "test_accuracy", "test_accuracy_plain", "test_macro_f1")}) | {
            "spent_seconds": state.clock.spent()}, step=0)
    state.save()
    write_fit_report(out, record)
    record.done = True  # after the report: a fit killed while writing it redoes it
    state.save()  # the report's seconds count too
    if parent is not None:
        parent.artifact(out / "fit.md")
        parent.finish("FINISHED")
    return FitResult(out, winner.name, run, summary, record)
