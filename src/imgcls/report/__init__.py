"""`imgcls report PATH`: a run's diagnostics, or an experiment's comparison, as one HTML file
plus PNGs in PATH/report/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from imgcls.experiment.results import (
    experiment_groups,
    load_record,
    table_rows,
)
from imgcls.experiment.spec import SUMMARY_METRICS
from imgcls.report import plots
from imgcls.report.html import Section, write_report
from imgcls.tracking.run import Run

SUMMARY_FIELDS = [  # (summary key, label, format)
    ("test_accuracy", "test accuracy", "{:.2%}"), ("test_accuracy_plain",
                                                   "test accuracy without TTA", "{:.2%}"),
    ("test_macro_f1", "test macro-F1", "{:.4f}"),
    ("test_balanced_accuracy", "test balanced accuracy", "{:.2%}"),
    ("test_top5_accuracy", "test top-5 accuracy", "{:.2%}"),
    ("best_val_accuracy", "best val accuracy", "{:.2%}"), ("best_epoch", "best epoch", "{}"),
    ("epochs", "epochs trained", "{}"), ("stop_reason", "stopped by", "{}"),
    ("wall_seconds", "wall time (s)", "{:.0f}"),
    ("train_images_per_second", "training speed (img/s)", "{:.0f}"),
    ("num_parameters", "parameters", "{:,}"), ("device", "device", "{}"),
]


def create_report(path: str | Path) -> Path:
    path = Path(path)
    if (path / "experiment.json").is_file():
        return write_report(path / "report", f"experiment {path.name}",
                            experiment_sections(path))
    if (path / "tune.json").is_file():
        return write_report(path / "report", f"search {path.name}", search_sections(path))
    if Run(path).is_run():
        return write_report(path / "report", f"run {path.name}", run_sections(path))
    raise FileNotFoundError(f"{path}: neither a run folder (config.yaml) nor an experiment "
                            "folder (experiment.json from sweep, tune.json from tune)")


def lr_find_figure(result: Any, cfg: Any, out: Path) -> Path:
    """out/lr_find.png: the range test's loss curve (`imgcls.train.lr_find` result for the
    config `cfg`), raw and smoothed, with its suggested lr."""
    title = f"{cfg.name}: lr range test ({cfg.optim.name}, batch {cfg.train.batch_size})"
    path = Path(out) / "lr_find.png"
    plots.save_figure(plots.lr_find_curve(result.lrs, result.losses, result.smoothed,
                                          result.suggested_lr, title), path)
    return path


# -- one run ------------------------------------------------------------------------------

def predictions(run_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(test images uint8 NHWC, class probabilities with the TTA the run's test used,
    labels, classes)
    from the run's best checkpoint, on the CPU."""
    from imgcls.data import load_data
    from imgcls.train import eval_loader, load_model
    from imgcls.train.evaluate import predict

    model, pre, cfg = load_model(run_dir, "best")
    test = load_data(cfg.data).with_channels(pre.channels).test
    loader = eval_loader(test, cfg, pre)
    summary = Run(run_dir).summary() or {}
    plain, augmented, labels, _ = predict(model, loader, summary.get("tta", cfg.train.tta),
                                          tta_margin=cfg.train.tta_margin)
    logits = augmented if augmented is not None else plain
    return (np.asarray(test.images), logits.softmax(1).numpy(), labels.numpy(),
            pre.classes)


def per_class_section(summary: dict[str, Any], heading: str = "") -> Section:
    """The summary's per-class test figures (`per_class`) as a table."""
    tta = summary.get("tta") or "none"
    rows = [{"class": str(row["class"]), "precision": f"{row['precision']:.3f}",
             "recall": f"{row['recall']:.3f}", "F1": f"{row['f1']:.3f}",
             "support": str(row["support"])} for row in summary["per_class"]]
    return Section(f"{heading}per-class metrics (test)", [
        f"Precision, recall and F1 of each class on the test split, best checkpoint, TTA: "
        f"{tta}; support is the class's number of test images."], rows)


def run_sections(run_dir: Path, heading: str = "", prefix: str = "") -> list[Section]:
    """`heading` and `prefix` tell this run's sections and files apart inside a larger
    report."""
    record = load_record(run_dir)
    history = record.metrics()
    summary = record.summary or {}
    rows = [{"figure": label, "value": fmt.format(summary[key])}
            for key, label, fmt in SUMMARY_FIELDS if summary.get(key) is not None]
    status = [] if record.summary else [
        "This run has not finished: the figures below show the epochs trained so far."]
    if record.failed:
        status = [f"This run failed: {record.failed}"]
    sections = [Section(f"{heading}summary", status, rows),
                Section(f"{heading}training curves",
                        figures=[(prefix + "curves", plots.run_curves(
                            history, f"{record.config.get('name', '')} ({run_dir.name})"))]
                        if history else [])]
    if summary.get("per_class"):
        sections.append(per_class_section(summary, heading))
    if not Run(run_dir).has_checkpoint("best"):
        return sections
    images, probs, labels, classes = predictions(run_dir)
    predicted = probs.argmax(1)
    k = len(classes)
    matrix = np.zeros((k, k), dtype=int)
    np.add.at(matrix, (labels, predicted), 1)
    counts = matrix.sum(1)
    accuracy = np.diag(matrix) / np.maximum(counts, 1)
    worst = np.argsort(accuracy)[:3]
    sections += [
        Section(f"{heading}test predictions", [
            f"{len(labels)} test images, best checkpoint, TTA: "
            f"{record.config.get('train.tta', 'none')}; accuracy "
            f"{100 * (predicted == labels).mean():.2f}%. Weakest classes: " + ", ".join(
                f"{classes[i]} {100 * accuracy[i]:.1f}%" for i in worst) + "."],
            figures=[(prefix + "confusion_matrix", plots.confusion_matrix(matrix, classes,
                                                                 "confusion matrix (test)")),
                     (prefix + "per_class_accuracy", plots.per_class_accuracy(
                         accuracy, counts, classes, "accuracy per class (test)")),
                     (prefix + "prediction_grid", plots.prediction_grid(images, predicted, labels,
                                                               classes)),
                     (prefix + "confident_mistakes", plots.confident_mistakes(images, probs, labels,
                                                                     classes))]),
        explanation_section(run_dir, images, probs, labels, classes, heading, prefix)]
    return sections


def explanation_section(run_dir: Path, images: np.ndarray, probs: np.ndarray,
                        labels: np.ndarray, classes: list[str], heading: str = "",
                        prefix: str = "", count: int = 8) -> Section:
    """Grad-CAM overlays of `count` right and `count` wrong test images (drawn with a fixed
    seed): where the best checkpoint found the evidence for the class it predicted."""
    from imgcls.deploy.predictor import load

    predicted = probs.argmax(1)
    rng = np.random.default_rng(0)
    right = rng.permutation(np.flatnonzero(predicted == labels))[:count]
    wrong = rng.permutation(np.flatnonzero(predicted != labels))[:count]
    picks = np.r_[right, wrong].astype(int)
    text = ("Grad-CAM of the best checkpoint for the class it predicted (red: where the "
            f"evidence lies), on {len(right)} right and {len(wrong)} wrong test images drawn "
            "at random: a model that looks at the background or a watermark shows it here.")
    if not len(picks):
        return Section(f"{heading}why the model decided", [text])
    try:
        overlays, _ = load(run_dir).explain(images[picks])
    except ValueError as exc:  # a network without a spatial feature map (an MLP)
        return Section(f"{heading}why the model decided", [f"No Grad-CAM: {exc}."])
    groups = [([images[i], overlays[k]],
               f"{'right' if predicted[i] == labels[i] else 'wrong'}: {classes[predicted[i]]} "
               f"{probs[i, predicted[i]]:.0%}\ntrue {classes[labels[i]]}")
              for k, i in enumerate(picks)]
    return Section(f"{heading}why the model decided", [text], figures=[
        (prefix + "grad_cam", plots.image_groups(groups, "Grad-CAM: image, then where the "
                                                 "evidence for the predicted class lies"))])


# -- an experiment ------------------------------------------------------------------------

def _seconds_per_epoch(histories: list[list[dict[str, Any]]]) -> float:
    epochs = [m["seconds"] for history in histories for m in history if "seconds" in m]
    return float(np.mean(epochs)) if epochs else float("nan")


def _numeric_axis(plan: dict[str, Any]) -> str | None:
    """The single varied key of the plan, if its values are all numbers."""
    keys = {k for v in plan["variants"] for k in v["set"]}
    if len(keys) != 1:
        return None
    key = keys.pop()
    values = [v["set"][key] for v in plan["variants"]]
    if all(isinstance(x, int | float) and not isinstance(x, bool) for x in values):
        return key
    return None


def experiment_sections(exp_dir: Path) -> list[Section]:
    plan, groups = experiment_groups(exp_dir)
    metric = plan["metric"]
    label, scale, higher = SUMMARY_METRICS[metric]
    unit = f"{label} (%)" if scale == 100 else label
    done = [g for g in groups if g.spread is not None]
    sections = [Section(
        "comparison",
        [f"{len(plan['variants'])} variants x {len(plan['seeds'])} seeds "
         f"({', '.join(map(str, plan['seeds']))}); metric: {label}; baseline: "
         f"{plan['baseline']}. Mean +- sample standard deviation over seeds; 95% confidence "
         "intervals from Student's t; each variant against the baseline with Welch's t-test "
         "(two-sided, not corrected for the number of comparisons)."],
        table_rows(groups, metric), bullets=[g.verdict for g in groups if g.verdict])]
    if not done:
        return sections
    figures = [("comparison", plots.comparison_points(
        {g.name: [v * scale for v in g.values] for g in done},
        [None if g.spread.half_width is None else g.spread.half_width * scale for g in done],
        unit, f"{plan['name']}: {label} per variant"))]
    histories = {g.name: [r.metrics() for r in g.runs] for g in groups}
    figures.append(("curves", plots.overlay_curves(histories, plan["name"])))
    figures.append(("metric_vs_time", plots.metric_vs_time(
        {g.name: [(r.summary["wall_seconds"], r.summary[metric] * scale)
                  for r in g.runs if r.summary] for g in done},
        unit, f"{label} against wall time")))
    axis = _numeric_axis(plan)
    if axis is not None:
        values = [float(g.runs[0].config[axis]) for g in done]
        figures.append((f"effect_of_{axis.rsplit('.', 1)[-1]}", plots.axis_effect(
            axis, values, [g.spread.mean * scale for g in done],
            [None if g.spread.half_width is None else g.spread.half_width * scale
             for g in done], [_seconds_per_epoch(histories[g.name]) for g in done], unit)))
    sections.append(Section("figures", figures=figures))
    best_group = max(done, key=lambda g: g.spread.mean if higher else -g.spread.mean)
    best_run = max((r for r in best_group.runs if r.summary),
                   key=lambda r: r.summary[metric] if higher else -r.summary[metric])
    heading = f"best run ({best_group.name}/{best_run.path.name}): "
    return sections + run_sections(best_run.path, heading, "best_run_")


# -- a search -----------------------------------------------------------------------------

def search_sections(exp_dir: Path) -> list[Section]:
    import json

    import optuna

    from imgcls.experiment.tune import BEST, trial_counts, trial_rows

    info = json.loads((exp_dir / "tune.json").read_text())
    study = optuna.load_study(study_name=info["study"], storage=info["storage"])
    trials = [{"number": t.number, "state": t.state.name.lower(), "value": t.value,
               "params": t.params, "curve": dict(sorted(t.intermediate_values.items())),
               "run_dir": t.user_attrs.get("run_dir")} for t in study.trials]
    metric, maximize = info["metric"], info["direction"] == "maximize"
    lines = [f"{len(trials)} trials: {trial_counts(study)}; objective: {info['direction']} "
             f"the best epoch's {metric} (validation data, never test)."]
    sections = [Section("trials", lines, trial_rows(study, exp_dir))]
    done = [t for t in trials if t["state"] == "complete"]
    if not done:
        return sections
    best = study.best_trial
    lines.append(f"Best: trial {best.number}, {metric} {best.value:.4f}, " + ", ".join(
        f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}"
        for k, v in best.params.items()) + f"; its full config: {exp_dir / BEST}.")
    numeric = {k: p.get("log", False) for k, p in info["search"].items()
               if p["type"] != "categorical"}
    figures = [("search_history", plots.search_history(trials, metric, maximize))]
    if numeric:
        figures.append(("search_parameters", plots.search_parameters(trials, numeric, metric)))
    sections.append(Section("figures", figures=figures))
    run_dir = exp_dir / best.user_attrs["run_dir"]
    if Run(run_dir).finished():
        sections += run_sections(run_dir, f"best trial ({run_dir.name}): ", "best_trial_")
    return sections
