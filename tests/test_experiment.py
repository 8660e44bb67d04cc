"""Experiment files, statistics, sweeps (resume, concurrency) and reports."""

import json
import math
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import make_image_folder, without_timing
from imgcls.config import ConfigError
from imgcls.experiment.results import compare_runs, experiment_groups, table_rows
from imgcls.experiment.spec import load_experiment
from imgcls.experiment.stats import describe, sentence, welch
from imgcls.experiment.sweep import run_sweep


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
    assert (cfg.train.batch_size, cfg.optim.lr, cfg.augment.ops[0]["name"], cfg.seed,
            cfg.train.epochs) == (16, 0.1, "flip", 2, 1)
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
            without_timing([json.loads(x) for x in lines]),
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
    assert again.returncode == 0 and "start " not in again.stdout + again.stderr


def test_killed_sweep_resumes_to_the_uninterrupted_result(tmp_path, folder):
    exp = write_experiment(tmp_path / "e.yaml", base=base(folder, epochs=8),
                           grid={"optim.lr": [0.01, 0.003]}, repeats=1)
    plan = load_experiment(exp)
    run_sweep(plan, tmp_path / "reference")
    out = tmp_path / "killed"
    for kill_after_epochs in (3, 11):  # mid-way through the first run, then the second
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
    run_sweep(plan, out)
    assert metrics_of(out) == metrics_of(tmp_path / "reference")
    rows = [{k: v for k, v in r.items() if k not in ("wall s", "img/s")}
            for r in table_rows(experiment_groups(out)[1], "test_accuracy")]
    reference = [{k: v for k, v in r.items() if k not in ("wall s", "img/s")}
                 for r in table_rows(experiment_groups(tmp_path / "reference")[1],
                                     "test_accuracy")]
    assert rows == reference


def test_a_changed_experiment_file_does_not_mix_with_old_runs(tmp_path, folder):
    exp = write_experiment(tmp_path / "e.yaml", base=base(folder, epochs=1))
    assert run_sweep(load_experiment(exp), tmp_path / "out") == {"trained": ["exp/seed-0"]}
    assert "| exp | 1 |" in (tmp_path / "out" / "results.md").read_text()  # the API's too
    write_experiment(tmp_path / "e.yaml", base=base(folder, epochs=1),
                     set={"optim.lr": 0.5})
    with pytest.raises(ConfigError, match=r"optim.lr: 0.01 -> 0.5"):
        run_sweep(load_experiment(exp), tmp_path / "out")


def test_sweep_with_workers_and_report(tmp_path, folder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = write_experiment(tmp_path / "e.yaml", base=base(folder, epochs=2),
                           grid={"train.batch_size": [8, 16]}, repeats=2)
    result = subprocess.run([sys.executable, "-m", "imgcls.cli", "sweep", str(exp),
                             "--workers", "2"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[w1]" in result.stderr and "[w2]" in result.stderr  # messages, on stderr
    exp_dir = tmp_path / "runs" / "exp"
    assert len(list(exp_dir.glob("*/seed-*/summary.json"))) == 4
    assert "| batch_size=8 | 2 |" in (exp_dir / "results.md").read_text()
    _, groups = experiment_groups(exp_dir)
    assert [g.spread.n for g in groups] == [2, 2] and groups[1].vs_baseline is not None
    compared = compare_runs([exp_dir])  # the plan's baseline (its first variant), though
    assert [g.name for g in compared if g.is_baseline] == ["exp/batch_size=8"]  # "1" < "8"

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
        "prediction_grid.png", "confident_mistakes.png", "grad_cam.png"}


# -- tune ----------------------------------------------------------------------------------

def tune_file(path, folder, trials, pruner="none"):
    """Trials of 20 short epochs, so that an interrupt lands inside one."""
    return write_experiment(
        path, base=base(folder, epochs=20),
        search={"optim.lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True},
                "train.batch_size": {"type": "int", "low": 8, "high": 16, "step": 8}},
        tune={"trials": trials, "sampler": "tpe", "pruner": pruner, "startup_trials": 2})


def test_tune_resumes_its_study_and_an_interrupted_trial(tmp_path, folder):
    from imgcls.experiment.tune import run_tune, write_best

    out = tmp_path / "out"
    study = run_tune(load_experiment(tune_file(tmp_path / "t.yaml", folder, 2)), out)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    first = (out / "trials/trial-0000/summary.json").stat().st_mtime_ns

    plan = load_experiment(tune_file(tmp_path / "t.yaml", folder, 3))
    study = run_tune(plan, out)  # the same study, one more trial
    assert len(study.trials) == 3 and (out / "trials/trial-0002/summary.json").is_file()
    assert (out / "trials/trial-0000/summary.json").stat().st_mtime_ns == first

    tune_file(tmp_path / "t.yaml", folder, 4)  # Ctrl-C in the middle of trial 3
    proc = subprocess.Popen([sys.executable, "-m", "imgcls.cli", "tune", str(tmp_path / "t.yaml"),
                             "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            # a background shell (CI) starts us with SIGINT ignored; a user's
                            # terminal does not, and Python only turns it into Ctrl-C then
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    metrics = out / "trials/trial-0003/metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (
            metrics.is_file() and metrics.read_text().strip()):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130 and "run the same command again" in output, output
    assert not (out / "trials/trial-0003/summary.json").exists()

    plan = load_experiment(tmp_path / "t.yaml")
    study = run_tune(plan, out)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE"] * 3 + ["FAIL", "COMPLETE"]
    assert study.trials[4].user_attrs["resume_of"] == 3
    assert study.trials[4].params == study.trials[3].params
    assert len((out / "trials/trial-0003/metrics.jsonl").read_text().splitlines()) == 20
    assert not (out / "trials/trial-0004").exists()

    best = write_best(plan, study, tmp_path / "best.yaml")
    from imgcls.configure import load_config

    cfg = load_config(best)
    assert cfg.optim.lr == pytest.approx(study.best_params["optim.lr"])
    assert cfg.train.batch_size == study.best_params["train.batch_size"]

    from imgcls.report import create_report

    html = create_report(out)
    assert {"search_history.png", "search_parameters.png", "best_trial_curves.png",
            "best_trial_confusion_matrix.png"} <= {p.name for p in html.parent.glob("*.png")}
    assert "4 complete, 0 pruned, 1 failed" in html.read_text()


def test_pruned_trials_stop_early(tmp_path, folder):
    import optuna

    from imgcls.experiment.tune import objective_for

    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    plan = load_experiment(tune_file(tmp_path / "t.yaml", folder, 1))
    study = optuna.create_study(pruner=AlwaysPrune(), direction="maximize")
    study.optimize(objective_for(plan, tmp_path / "out"), n_trials=1)
    assert study.trials[0].state.name == "PRUNED"
    assert study.trials[0].intermediate_values.keys() == {1}
    summary = json.loads((tmp_path / "out/trials/trial-0000/summary.json").read_text())
    assert summary["epochs"] == 1 and summary["stop_reason"].startswith("pruned")


def test_tune_without_a_search_space_is_explained(tmp_path, folder):
    from imgcls.experiment.tune import run_tune

    exp = write_experiment(tmp_path / "e.yaml", base=base(folder))
    with pytest.raises(ValueError, match="no `search` section"):
        run_tune(load_experiment(exp), tmp_path / "out")


def test_runs_and_compare_filter_sort_and_group_across_experiments(tmp_path, folder):
    from typer.testing import CliRunner

    from imgcls.cli import app

    for name, lr in (("a", 0.01), ("b", 0.003)):
        exp = write_experiment(tmp_path / f"{name}.yaml", base=base(folder, epochs=1),
                               set={"optim.lr": lr}, grid={"train.batch_size": [8, 16]})
        (tmp_path / f"{name}.yaml").write_text(
            (tmp_path / f"{name}.yaml").read_text().replace("name: exp", f"name: {name}"))
        run_sweep(load_experiment(exp), tmp_path / "runs" / name)
    runner = CliRunner(env={"COLUMNS": "200"})  # the console reads it at each print
    listed = runner.invoke(app, ["runs", str(tmp_path / "runs"), "--where",
                                 "train.batch_size=8", "--sort=-test_accuracy"])
    assert listed.exit_code == 0, listed.output
    names = [line.split()[1] for line in listed.output.splitlines() if "seed-0" in line]
    assert sorted(names) == ["a/batch_size=8/seed-0", "b/batch_size=8/seed-0"]
    accuracy = [float(line.split()[9]) for line in listed.output.splitlines()
                if "seed-0" in line]
    assert accuracy == sorted(accuracy, reverse=True)
    compared = runner.invoke(app, ["compare", str(tmp_path / "runs"), "--by",
                                   "train.batch_size", "--baseline", "train.batch_size=16"])
    assert compared.exit_code == 0, compared.output
    assert "train.batch_size=8" in compared.output and "baseline" in compared.output
    assert "(Welch's t-test, 2 vs 2 seeds)" in compared.output
    groups = compare_runs([tmp_path / "runs"], by="train.batch_size",
                          baseline="train.batch_size=16")
    assert [g.name for g in groups] == ["train.batch_size=16", "train.batch_size=8"]
    printed = [line.split("│")[1].strip() for line in compared.output.splitlines()
               if "train.batch_size=" in line and "│" in line]
    assert printed == [g.name for g in groups]  # the CLI prints the API's groups, in order
    assert [g.spread.n for g in groups] == [2, 2] and groups[1].verdict in compared.output
    bad = runner.invoke(app, ["compare", str(tmp_path / "runs"), "--by", "optim.lrr"])
    assert bad.exit_code == 2 and "no run has this key" in bad.output
    missing = runner.invoke(app, ["report", str(tmp_path)])
    assert missing.exit_code == 2 and "neither a run folder" in missing.output


def test_tune_workers_share_one_study(tmp_path, folder):
    import optuna

    exp = tune_file(tmp_path / "t.yaml", folder, 4)
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "imgcls.cli", "tune", str(exp), "--out",
                             str(out), "--workers", "2"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[w1]" in result.stderr and "[w2]" in result.stderr
    study = optuna.load_study(study_name="exp", storage=f"sqlite:///{out / 'study.db'}")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert 4 <= len(done) <= 5  # both workers stop at 4; one may be mid-trial then
    folders = [t.user_attrs["run_dir"] for t in study.trials]
    assert len(set(folders)) == len(folders)  # no trial ran in another's folder
    assert len({tuple(sorted(t.params.items())) for t in done}) == len(done)
    assert (out / "best.yaml").is_file()
