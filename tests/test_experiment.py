"""Experiment files, statistics, sweeps (resume, concurrency) and reports."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import make_image_folder
from imgcls.config import ConfigError
from imgcls.experiment.results import experiment_groups, table_rows
from imgcls.experiment.spec import load_experiment
from imgcls.experiment.stats import describe, sentence, welch
from imgcls.experiment.sweep import run_sweep

TIMING_KEYS = {"seconds", "images_per_second"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data") / "images", classes=3,
                             per_class=30, size=24)


def base(folder, epochs=2):
    return {
        "data": {"source": "folder", "path": str(folder), "image_size": 24,
                 "val_fraction": 0.2, "test_fraction": 0.25},
        "model": {"name": "flowers_cnn", "args": {"widths": [8, 8, 8], "hidden": 16}},
        "optim": {"name": "adamw", "lr": 0.01, "weight_decay": 0.0},
        "train": {"epochs": epochs, "batch_size": 16, "eval_batch_size": 64,
                  "tensorboard": False, "deterministic": True, "threads": 1},
    }


def write_experiment(path, **spec):
    path.write_text(yaml.safe_dump({"name": "exp", **spec}, sort_keys=False))
    return path


# -- experiment files ------------------------------------------------------------------------

def test_grid_and_variants_expand_to_named_validated_runs(tmp_path, folder):
    exp = write_experiment(
        tmp_path / "e.yaml", base=base(folder), set={"train.epochs": 1},
        grid={"train.batch_size": [8, 16], "optim.lr": [0.01, 0.1]},
        variants=[{"name": "plain", "set": {"augment.flip": "none"}},
                  {"name": "flip", "set": {"augment.flip": "random"}}],
        repeats=3, baseline="flip,batch_size=16,lr=0.01")
    plan = load_experiment(exp)
    names = [name for name, _ in plan.variants]
    assert len(names) == 8 and names[0] == "plain,batch_size=8,lr=0.01"
    assert plan.seeds == [0, 1, 2]
    cfg = plan.config("flip,batch_size=16,lr=0.1", 2)
    assert (cfg.train.batch_size, cfg.optim.lr, cfg.augment.flip, cfg.seed, cfg.train.epochs) \
        == (16, 0.1, "random", 2, 1)
    assert cfg.name == "exp/flip,batch_size=16,lr=0.1"


def test_base_config_file_is_relative_to_the_experiment(tmp_path, folder):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "b.yaml").write_text(yaml.safe_dump({**base(folder), "seed": 5}))
    (tmp_path / "exps").mkdir()
    exp = write_experiment(tmp_path / "exps" / "e.yaml", base="../configs/b.yaml", repeats=2)
    plan = load_experiment(exp)
    assert plan.seeds == [5, 6] and [n for n, _ in plan.variants] == ["exp"]


@pytest.mark.parametrize("spec,message", [
    ({"grid": {"optim.lrr": [0.1, 0.2]}}, "unknown key 'optim.lrr' (did you mean 'lr'?)"),
    ({"grid": {"train.batch_size": [16, -1]}}, "variant 'batch_size=-1'"),
    ({"grid": {"seed": [1, 2]}}, "vary seeds with `repeats`"),
    ({"grid": {"train.epochs": []}}, "grid axis 'train.epochs' has no values"),
    ({"baseline": "nope", "grid": {"train.epochs": [1]}}, "baseline 'nope' is not a variant"),
    ({"variants": [{"name": "a"}, {"name": "a"}]}, "variant names repeat: a"),
    ({"search": {"optim.lr": {"type": "float", "low": 0, "high": 1, "log": True}}},
     "log: true needs low > 0"),
    ({"search": {"model.name": {"type": "categorical", "choices": ["vgg6", "vgg7"]}}},
     "search.model.name = 'vgg7'"),
    ({"repeat": 3}, "repeat"),
])
def test_bad_experiment_files_fail_before_anything_runs(tmp_path, folder, spec, message):
    exp = write_experiment(tmp_path / "e.yaml", base=base(folder), **spec)
    with pytest.raises(ConfigError) as info:
        load_experiment(exp)
    assert message in str(info.value) and str(exp) in str(info.value)
    assert not (tmp_path / "runs").exists()


# -- statistics ----------------------------------------------------------------------------

def test_welch_t_test_matches_a_hand_computation():
    a, b = [0.80, 0.82, 0.84], [0.70, 0.74, 0.72, 0.78]
    # by hand: means 0.82 and 0.735; variances 0.0004 and 0.0035 / 3;
    # se^2 = 0.0004/3 + 0.0035/12 = 4.25e-4; t = 0.085 / sqrt(4.25e-4) = 4.12311
    # df = se^4 / ((0.0004/3)^2 / 2 + (0.0035/12)^2 / 3) = 4.84960
    d = welch(a, b)
    assert d.diff == pytest.approx(0.085)
    assert d.t == pytest.approx(4.123106, rel=1e-6)
    assert d.df == pytest.approx(4.849596, rel=1e-6)
    assert d.p == pytest.approx(0.0097567, rel=1e-4)  # t distribution, 4.85 df, two-sided
    assert d.ci_low < d.diff < d.ci_high and d.ci_low > 0  # significant: CI excludes 0
    text = sentence("translate", "no-aug", d, (3, 4))
    assert text == ("translate beats no-aug by 8.50 +- 5.35 points (95% CI), "
                    "p = 0.00976 (Welch's t-test, 3 vs 4 seeds)")


def test_confidence_interval_uses_student_t():
    s = describe([1.0, 2.0, 3.0])  # mean 2, std 1, t(0.975, 2 df) = 4.302653
    assert (s.mean, s.std) == (2.0, 1.0)
    assert s.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)


def test_untestable_comparisons_say_why():
    one = welch([0.9], [0.8, 0.85])
    assert one.p is None and "one seed" in sentence("a", "b", one, (1, 2))
    flat = welch([0.9, 0.9], [0.8, 0.8])
    assert flat.p is None and "no run-to-run spread" in sentence("a", "b", flat, (2, 2))
    noise = welch([0.80, 0.84], [0.81, 0.83])
    assert noise.p > 0.5 and sentence("a", "b", noise, (2, 2)).startswith(
        "no significant difference")


# -- sweeps --------------------------------------------------------------------------------

def sweep_command(exp, out):
    return [sys.executable, "-m", "imgcls.cli", "sweep", str(exp), "--out", str(out)]


def metrics_of(exp_dir):
    """Every run's per-epoch metrics and test figures, without timings."""
    out = {}
    for summary in sorted(exp_dir.glob("*/seed-*/summary.json")):
        run = summary.parent
        lines = (run / "metrics.jsonl").read_text().splitlines()
        s = json.loads(summary.read_text())
        out[str(run.relative_to(exp_dir))] = (
            [{k: v for k, v in json.loads(x).items() if k not in TIMING_KEYS} for x in lines],
            s["test_accuracy"], s["test_loss"])
    return out


def test_two_concurrent_sweeps_train_each_run_once(tmp_path, folder):
    exp = write_experiment(tmp_path / "e.yaml", base=base(folder, epochs=1),
                           grid={"train.batch_size": [8, 16, 32]}, repeats=2)
    out = tmp_path / "out"
    procs = [subprocess.Popen(sweep_command(exp, out), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    starts = [line.split()[1] for log in logs for line in log.splitlines()
              if line.startswith("start ")]
    assert sorted(starts) == sorted(f"batch_size={b}/seed-{s}" for b in (8, 16, 32)
                                    for s in (0, 1))  # each once, across both processes
    assert all(len(r[0]) == 1 for r in metrics_of(out).values()) and len(metrics_of(out)) == 6
    # a third pass has nothing left to do
    again = subprocess.run(sweep_command(exp, out), capture_output=True, text=True)
    assert again.returncode == 0 and "start " not in again.stdout


def test_killed_sweep_resumes_to_the_uninterrupted_result(tmp_path, folder):
    exp = write_experiment(tmp_path / "e.yaml", base=base(folder, epochs=4),
                           grid={"optim.lr": [0.01, 0.003]}, repeats=1)
    plan = load_experiment(exp)
    run_sweep(plan, tmp_path / "reference", log=lambda m: None)
    out = tmp_path / "killed"
    for kill_after_epochs in (2, 6):  # mid-way through the first run, then the second
        proc = subprocess.Popen(sweep_command(exp, out), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and sum(
                len(p.read_text().splitlines()) for p in out.glob("*/seed-*/metrics.jsonl")
        ) < kill_after_epochs:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(list(out.glob("*/seed-*/summary.json"))) < 2, "finished before the kills"
    run_sweep(plan, out, log=lambda m: None)
    assert metrics_of(out) == metrics_of(tmp_path / "reference")
    rows = [{k: v for k, v in r.items() if k not in ("wall s", "img/s")}
            for r in table_rows(experiment_groups(out)[1], "test_accuracy")]
    reference = [{k: v for k, v in r.items() if k not in ("wall s", "img/s")}
                 for r in table_rows(experiment_groups(tmp_path / "reference")[1],
                                     "test_accuracy")]
    assert rows == reference


def test_a_changed_experiment_file_does_not_mix_with_old_runs(tmp_path, folder):
    exp = write_experiment(tmp_path / "e.yaml", base=base(folder, epochs=1))
    run_sweep(load_experiment(exp), tmp_path / "out", log=lambda m: None)
    write_experiment(tmp_path / "e.yaml", base=base(folder, epochs=1),
                     set={"optim.lr": 0.5})
    with pytest.raises(ConfigError, match=r"optim.lr: 0.01 -> 0.5"):
        run_sweep(load_experiment(exp), tmp_path / "out", log=lambda m: None)


def test_sweep_with_workers_and_report(tmp_path, folder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = write_experiment(tmp_path / "e.yaml", base=base(folder, epochs=2),
                           grid={"train.batch_size": [8, 16]}, repeats=2)
    result = subprocess.run([sys.executable, "-m", "imgcls.cli", "sweep", str(exp),
                             "--workers", "2"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[w1]" in result.stdout and "[w2]" in result.stdout
    exp_dir = tmp_path / "runs" / "exp"
    assert len(list(exp_dir.glob("*/seed-*/summary.json"))) == 4
    assert "| batch_size=8 | 2 |" in (exp_dir / "results.md").read_text()
    _, groups = experiment_groups(exp_dir)
    assert [g.spread.n for g in groups] == [2, 2] and groups[1].vs_baseline is not None

    from imgcls.report import create_report

    html = create_report(exp_dir)
    figures = {p.name for p in html.parent.glob("*.png")}
    assert {"comparison.png", "curves.png", "metric_vs_time.png",
            "effect_of_batch_size.png", "best_run_curves.png", "best_run_confusion_matrix.png",
            "best_run_per_class_accuracy.png", "best_run_prediction_grid.png",
            "best_run_confident_mistakes.png"} <= figures
    page = html.read_text()
    assert page.count("data:image/png;base64,") == len(figures)
    assert "batch_size=16" in page and "Welch" in page
    run_html = create_report(exp_dir / "batch_size=8" / "seed-0")
    assert {p.name for p in run_html.parent.glob("*.png")} == {
        "curves.png", "confusion_matrix.png", "per_class_accuracy.png",
        "prediction_grid.png", "confident_mistakes.png"}
