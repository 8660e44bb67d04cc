"""The `imgcls` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from imgcls.configure import load_config

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="imgcls: train, evaluate and compare image classifiers.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect datasets.")
app.add_typer(data_app, name="data")
augment_app = typer.Typer(no_args_is_help=True, help="List and preview augmentations.")
app.add_typer(augment_app, name="augment")
console = Console()

SetOption = Annotated[list[str], typer.Option(
    "--set", help="Override a config key, e.g. --set optim.lr=0.05 (repeatable).")]


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _user_errors() -> tuple[type[Exception], ...]:
    """The errors a user's input can cause, shown as one clear message, not a traceback.
    (ConfigError and DataError are ValueErrors; bad model arguments raise ValueError.)"""
    from imgcls.train.trainer import TrainingDiverged

    return (ValueError, FileNotFoundError, TrainingDiverged)


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="YAML config file.")] = None,
    set_: SetOption = [],  # noqa: B006 - typer needs a literal default
    run_dir: Annotated[Path | None, typer.Option(
        help="Run folder (default: runs/<time>-<name>).")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue this interrupted run.")] = None,
) -> None:
    """Train a model and record the run. Under `torchrun --nproc-per-node N -m imgcls.cli
    train ...`, N processes train it data-parallel (docs/training.md)."""
    from imgcls.train import distributed
    from imgcls.train import train as run_training

    try:
        if resume is not None:
            if config is not None or set_:
                _fail("--resume takes the run's own config; drop CONFIG and --set")
            run, summary = run_training(resume=resume)
        else:
            cfg = load_config(config, set_)
            run, summary = run_training(cfg, run_dir)
    except _user_errors() as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        console.print("interrupted; continue with `imgcls train --resume RUN_DIR`")
        raise typer.Exit(130) from None
    finally:
        distributed.teardown()
    if distributed.env_rank() == 0:  # one summary line from a torchrun launch
        console.print(
            f"[bold]{run.path}[/bold]: test accuracy {summary['test_accuracy']:.4f}"
            f" (plain {summary['test_accuracy_plain']:.4f}, tta {summary['tta']}),"
            f" {summary['train_images_per_second']:.0f} img/s, {summary['wall_seconds']:.0f} s",
            soft_wrap=True)


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

    from imgcls.report.plots import lr_find_curve, save_figure
    from imgcls.train.lr_find import lr_find as range_test

    try:
        cfg = load_config(config, set_)
        out = out or Path("runs/lr-find") / f"{datetime.now():%Y%m%d-%H%M%S}-{cfg.name}"
        result = range_test(cfg, out, start, end, steps)
    except _user_errors() as exc:
        _fail(str(exc))
    title = f"{cfg.name}: lr range test ({cfg.optim.name}, batch {cfg.train.batch_size})"
    save_figure(lr_find_curve(result.lrs, result.losses, result.smoothed,
                              result.suggested_lr, title), out / "lr_find.png")
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
    tta: Annotated[str | None, typer.Option(
        help="none, mirror or mirror_translate (default: the run's own).")] = None,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
) -> None:
    """Reload a run's saved model and evaluate it."""
    from imgcls.train import evaluate_run

    try:
        result = evaluate_run(run_dir, data, tta, checkpoint)
    except _user_errors() as exc:
        _fail(str(exc))
    console.print_json(json.dumps(result))


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    images: Annotated[list[str] | None, typer.Argument(
        help="Image files, folders (searched recursively) or glob patterns.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Classes shown per image.", min=1)] = 3,
    output: Annotated[str, typer.Option(
        "--format", help="table, csv or json (csv/json: one record per image, to stdout).")
    ] = "table",
    tta: Annotated[str, typer.Option(help="none, mirror or mirror_translate.")] = "none",
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    batch_size: Annotated[int, typer.Option(min=1)] = 256,
    bench: Annotated[bool, typer.Option(
        help="Measure inference images/s of PyTorch and of its ONNX and TorchScript exports "
        "on this machine (on IMAGES if given, else on random pixels).")] = False,
) -> None:
    """Classify images with a trained run: top-k classes and probabilities per image.
    Unreadable files are reported and skipped."""
    from imgcls.config import TTA
    from imgcls.deploy.predictor import load

    if output not in ("table", "csv", "json"):
        _fail(f"--format {output!r}: valid: table, csv, json")
    if tta not in TTA.__args__:
        _fail(f"--tta {tta!r}: valid: {', '.join(TTA.__args__)}")
    if not images and not bench:
        _fail("give images to classify (files, folders or globs), or --bench")
    try:
        predictor = load(run_dir, checkpoint)
    except _user_errors() as exc:
        _fail(str(exc))
    if bench:
        return _print_bench(predictor, images or [], batch_size)
    result = predictor.predict(images, top_k, tta, batch_size)
    for problem in result.skipped:  # on stderr: stdout stays valid CSV / JSON
        typer.echo(f"skipped {problem}", err=True)
    if output == "json":
        typer.echo(json.dumps([p.as_dict() for p in result.items], indent=1))
    elif output == "csv":
        import csv
        import sys

        writer = csv.writer(sys.stdout)
        writer.writerow(["image", "rank", "class", "probability"])
        for p in result.items:
            for rank, (c, prob) in enumerate(zip(p.classes, p.probabilities, strict=True), 1):
                writer.writerow([p.source, rank, c, f"{prob:.6f}"])
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

    try:
        rows = inference_speed(predictor, images, batch_size)
    except _user_errors() as exc:
        _fail(str(exc))
    for row in rows:
        console.print(f"{row['engine']}: {row['images_per_second']:.0f} images/s "
                      f"(batch {batch_size}, {row['images']} images, median of "
                      f"{row['repeats']})", highlight=False)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    fmt: Annotated[str, typer.Option("--format", help="onnx or torchscript.")] = "onnx",
    out: Annotated[Path | None, typer.Option(
        help="Output file (default RUN_DIR/export/model.onnx or model.torchscript.pt).")
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    verify: Annotated[str, typer.Option(
        help="Test images to verify the export on: a number, or 'all'.")] = "256",
) -> None:
    """Export a run's model (normalization included; uint8 NHWC RGB input, dynamic batch),
    verified against PyTorch on the run's test images; a failed check keeps no file."""
    from imgcls.deploy.export import ExportError, export_run

    if verify != "all" and not verify.isdigit():
        _fail(f"--verify {verify!r}: a number of images, or 'all'")
    try:
        path, info = export_run(run_dir, fmt, out, checkpoint,
                                None if verify == "all" else int(verify))
    except (*_user_errors(), ExportError) as exc:
        _fail(str(exc))
    check = info["verification"]
    console.print(f"[bold]{path}[/bold] (+ {path.name}.json): verified on {check['images']} "
                  f"test images, max |logit diff| {check['max_abs_logit_diff']:.2g} (tolerance "
                  f"{check['atol']} + {check['rtol']} x |logit|), top-1 agreement "
                  f"{check['top1_agreement']:.2%} ({check['disagreements']} differ)",
                  highlight=False, soft_wrap=True)


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

    try:
        rows = run_rows(root, where, sort)
    except _user_errors() as exc:
        _fail(str(exc))
    table = Table(*COLUMNS)
    for row in rows:
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
        help="The group the others are tested against (default: the first).")] = None,
    sort: Annotated[bool, typer.Option(help="Best group first (the baseline stays first).")
                    ] = True,
) -> None:
    """Mean, spread, 95% CI and Welch's t-test of groups of runs, across experiments."""
    from imgcls.experiment.results import compare as compare_groups
    from imgcls.experiment.spec import SUMMARY_METRICS
    from imgcls.tracking.records import find_runs
    from imgcls.tracking.table import parse_where, select

    try:
        if metric not in SUMMARY_METRICS:
            raise ValueError(f"--metric {metric!r}: valid: {', '.join(SUMMARY_METRICS)}")
        records = select(find_runs(paths), parse_where(where))
        if by is not None and records and all(r.value(by) is None for r in records):
            raise ValueError(f"--by {by!r}: no run has this key")

        def group_of(r):
            return f"{by}={r.value(by)}" if by else str(r.config.get("name", r.path.name))

        names = sorted({group_of(r) for r in records})
        _, _, higher = SUMMARY_METRICS[metric]
        groups = compare_groups(records, group_of, metric, baseline, names)
        if sort:
            base = [g for g in groups if g.is_baseline]
            rest = sorted((g for g in groups if not g.is_baseline),
                          key=lambda g: -1e9 if g.spread is None else
                          (g.spread.mean if higher else -g.spread.mean), reverse=True)
            groups = base + rest
    except _user_errors() as exc:
        _fail(str(exc))
    _print_groups(groups, metric, f"{len(records)} runs: {metric}")


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


def _print_groups(groups, metric: str, title: str) -> None:
    from imgcls.experiment.results import table_rows

    rows = table_rows(groups, metric)
    if not rows:
        console.print("no runs found")
        return
    table = Table(*rows[0], title=title)
    for row in rows:
        table.add_row(*row.values())
    console.print(table)
    for group in groups:
        if group.verdict:
            console.print(f"  {group.verdict}", highlight=False, soft_wrap=True)


@app.command()
def sweep(
    experiment: Annotated[Path, typer.Argument(help="Experiment YAML (grid/variants/repeats).")],
    out: OutOption = None,
    workers: WorkersOption = 1,
    threads: ThreadsOption = None,
) -> None:
    """Run every variant x seed of an experiment; rerun the same command to resume."""
    from imgcls.experiment.results import experiment_groups, markdown_table, table_rows
    from imgcls.experiment.sweep import run_sweep, slots
    from imgcls.tracking.io import atomic_write_text

    try:
        plan, exp_dir = _experiment(experiment, out)
        total = len(slots(plan, exp_dir))
        console.print(f"[bold]{plan.name}[/bold]: {len(plan.variants)} variants x "
                      f"{len(plan.seeds)} seeds = {total} runs in {exp_dir}")
        if workers > 1:
            code = run_workers_cli(["sweep", str(experiment), "--out", str(exp_dir)], workers)
            if code:
                raise typer.Exit(code)
        else:
            _set_threads(threads)
            outcomes = run_sweep(plan, exp_dir, lambda m: console.print(m, highlight=False))
            busy = outcomes.get("busy", [])
            if busy:
                console.print(f"{len(busy)} run(s) are being trained by other processes: "
                              f"{', '.join(busy)}")
        _, groups = experiment_groups(exp_dir)
    except _user_errors() as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        console.print("interrupted; run the same command again to resume")
        raise typer.Exit(130) from None
    metric = plan.spec.metric
    atomic_write_text(exp_dir / "results.md", markdown_table(table_rows(groups, metric)) + "\n"
                      + "".join(f"- {g.verdict}\n" for g in groups if g.verdict))
    _print_groups(groups, metric, f"{plan.name}: {metric}")


@app.command()
def tune(
    experiment: Annotated[Path, typer.Argument(help="Experiment YAML with a `search` section.")],
    out: OutOption = None,
    workers: WorkersOption = 1,
    threads: ThreadsOption = None,
) -> None:
    """Hyperparameter search (Optuna); rerun the same command to resume the study."""
    from imgcls.experiment.tune import (
        open_study,
        requeue_interrupted,
        run_tune,
        storage_url,
        trial_rows,
        write_best,
    )

    try:
        plan, exp_dir = _experiment(experiment, out)
        settings = plan.spec.tune
        console.print(f"[bold]{plan.name}[/bold]: {settings.trials} trials, {settings.sampler} "
                      f"sampler, {settings.pruner} pruner, {settings.direction} "
                      f"{settings.metric}; study in {storage_url(plan, exp_dir)}",
                      soft_wrap=True)
        if workers > 1:
            for number in requeue_interrupted(open_study(plan, exp_dir)):
                console.print(f"trial {number} was interrupted; queued to resume")
            code = run_workers_cli(["tune", str(experiment), "--out", str(exp_dir)], workers)
            if code:
                raise typer.Exit(code)
            study = open_study(plan, exp_dir)
        else:
            _set_threads(threads)
            study = run_tune(plan, exp_dir, lambda m: console.print(m, highlight=False))
    except _user_errors() as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        console.print("interrupted; run the same command again to resume the study")
        raise typer.Exit(130) from None
    rows = trial_rows(study, exp_dir)
    table = Table(*rows[0], title=f"{plan.name}: trials")
    for row in rows:
        table.add_row(*row.values())
    console.print(table)
    states = [r["state"] for r in rows]
    best = write_best(plan, study, exp_dir / "best.yaml")
    console.print(f"{states.count('complete')} complete, {states.count('pruned')} pruned, "
                  f"{states.count('fail')} failed; best trial {study.best_trial.number}: "
                  f"{settings.metric} {study.best_value:.4f} with {study.best_params}")
    console.print(f"best config: {best}  (run it: imgcls train {best})", highlight=False)


@app.command()
def report(
    path: Annotated[Path, typer.Argument(help="A run folder or an experiment folder.")],
) -> None:
    """Write PATH/report/report.html (figures embedded) and the figures as PNG files."""
    from imgcls.report import create_report

    try:
        html_path = create_report(path)
    except _user_errors() as exc:
        _fail(str(exc))
    console.print(f"report: {html_path}", highlight=False)


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
    markdown: Annotated[bool, typer.Option(help="Print a markdown table.")] = False,
) -> None:
    """The model zoo: parameters, forward GFLOPs and (with --bench) training speed."""
    from imgcls.models.catalog import matching_names, model_rows

    names, total = matching_names(pattern)
    if not names:
        _fail(f"no model matches {pattern!r}; `imgcls models` lists imgcls' models, "
              "`imgcls models 'timm:resnet*'` searches timm's")
    if (summary or layers) and len(names) != 1:
        _fail(f"{'--summary' if summary else '--layers'} needs one model; {pattern!r} matches "
              f"{total}: {', '.join(names[:8])}{'...' if total > 8 else ''}")
    if summary:
        return _print_summary(names[0], input_size, num_classes, depth, small_input)
    if layers:
        return _print_layers(names[0], num_classes, small_input)
    rows = []
    with console.status("measuring...") as status:
        for row in model_rows(names, input_size, num_classes, bench, batch_size, small_input):
            status.update(f"measured {row['model']}")
            rows.append(row)
    headers = ["model", "source", "params", f"GFLOPs @{input_size}px"]
    headers += [f"train img/s (batch {batch_size})"] if bench else []
    headers += ["about"]
    cells = []
    for row in rows:
        if "error" in row:
            cells.append([row["model"], row["source"], "-", "-"] + (["-"] if bench else [])
                         + [row["error"]])
            continue
        cells.append([row["model"], row["source"], f"{row['params']:,}",
                      f"{row['gflops']:.3g}"]
                     + ([f"{row['images_per_second']:.0f}"] if bench else []) + [row["about"]])
    if markdown:
        from imgcls.experiment.results import markdown_table

        console.print(markdown_table([dict(zip(headers, c, strict=True)) for c in cells]),
                      highlight=False, markup=False, soft_wrap=True)
    else:
        table = Table(title=f"{len(rows)} model(s)"
                      + (f" of {total} matching; narrow the pattern" if total > len(rows) else ""))
        for header in headers:
            table.add_column(header, no_wrap=header != "about", overflow="fold")
        for c in cells:
            table.add_row(*c)
        console.print(table)
    if pattern is None and not markdown:
        console.print("and every timm model as timm:<name>: `imgcls models 'timm:resnet*'`")


def _print_summary(name: str, input_size: int, num_classes: int, depth: int | None,
                   small_input: bool) -> None:
    from imgcls.models import create_model
    from imgcls.models.profile import (
        count_parameters,
        forward_gflops,
        layer_summary,
        statistics_count,
    )

    try:
        model = create_model(name, num_classes, input_size, small_input)
    except ValueError as exc:
        _fail(str(exc))
    table = Table("layer (type)", "output shape", "params",
                  title=f"{name}: {num_classes} classes, input 3 x {input_size} x {input_size}")
    for layer in layer_summary(model, input_size, depth):
        table.add_row(f"{layer.name} ({layer.kind})", layer.output_shape, f"{layer.params:,}")
    console.print(table)
    trainable, frozen = count_parameters(model)
    stats = statistics_count(model)
    console.print(f"Total params: {trainable + frozen:,}\nTrainable params: {trainable:,}\n"
                  f"Non-trainable params: {frozen:,}", highlight=False)
    if stats:
        keras_total = trainable + frozen + stats
        console.print(f"BatchNorm statistics (buffers): {stats:,}; Keras counts them as "
                      f"non-trainable params, so its total would read {keras_total:,}",
                      highlight=False)
    console.print(f"Forward: {forward_gflops(model, input_size):.3g} GFLOPs per image",
                  highlight=False)


def _print_layers(name: str, num_classes: int, small_input: bool) -> None:
    from imgcls.models import create_model
    from imgcls.models.parts import head_name, layers, stages

    try:
        model = create_model(name, num_classes, small_input=small_input)
    except ValueError as exc:
        _fail(str(exc))
    modules = dict(model.named_modules())
    blocks = stages(model)
    stage_of = {p: label for label, params in blocks for p in params}
    table = Table("fine_tune_at", "layer", "type", "params", "stage",
                  title=f"{name}: layers with weights (head: {head_name(model)})")
    for index, layer in enumerate(layers(model)):
        own = list(modules[layer].parameters(recurse=False))
        first = next(n for n, _ in model.named_parameters() if n.startswith(layer + "."))
        table.add_row(str(index), layer, type(modules[layer]).__name__,
                      f"{sum(p.numel() for p in own):,}", stage_of.get(first, ""))
    console.print(table)
    console.print("last_stages: K trains the last K of "
                  + ", ".join(label for label, _ in blocks), highlight=False)


def run_workers_cli(args: list[str], workers: int) -> int:
    from imgcls.experiment.workers import run_workers

    return run_workers(args, workers, lambda line: console.print(line, highlight=False,
                                                                 markup=False))


@data_app.command("info")
def data_info(
    config: Annotated[Path | None, typer.Argument(help="YAML config file.")] = None,
    set_: SetOption = [],  # noqa: B006
) -> None:
    """Images per class and split, as the config's data section sees them."""
    from imgcls.data import load_data

    try:
        splits = load_data(load_config(config, set_).data)
    except _user_errors() as exc:
        _fail(str(exc))
    counts = splits.counts()
    table = Table("class", *counts, title=f"{len(splits.classes)} classes, "
                  f"{splits.image_size}x{splits.image_size} px"
                  f"{' (cached)' if splits.cache_hit else ''}")
    for i, name in enumerate(splits.classes):
        table.add_row(name, *(str(c[i]) for c in counts.values()))
    table.add_row("[bold]total", *(f"[bold]{sum(c)}" for c in counts.values()))
    console.print(table)
    if splits.skipped:
        console.print(f"skipped {len(splits.skipped)} unreadable file(s):")
        for line in splits.skipped:
            console.print(f"  {line}", highlight=False, soft_wrap=True)


@augment_app.command("list")
def augment_list() -> None:
    """Every op and policy `augment.ops` accepts, with its keys and defaults."""
    from imgcls.augment import AUGMENTS

    table = Table("name", "what it does", "keys (defaults)", title="augment.ops entries")
    for name in AUGMENTS:
        cls = AUGMENTS.get(name)
        keys = ", ".join(f"{k}={f.default!r}" if f.default is not None else k
                         for k, f in cls.model_fields.items())
        table.add_row(name, cls.summary, keys)
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
    import yaml

    from imgcls.augment import build_op, create_augment
    from imgcls.augment.preview import augmented_rows, pick_images, preview_figure
    from imgcls.config import read_yaml
    from imgcls.data import load_data
    from imgcls.report.plots import save_figure

    try:
        raw = read_yaml(config)
        if {"base", "variants", "grid"} & set(raw):  # an experiment: its variants
            plan, _ = _experiment(config, None)
            configs = {name: plan.config(name, plan.seeds[0]) for name, _ in plan.variants}
            cfg = next(iter(configs.values()))
            blocks = {name: create_augment(c.augment) for name, c in configs.items()}
        else:
            cfg = load_config(config, set_)
            ops = create_augment(cfg.augment)
            blocks = {str(o.spec()): [o] for o in ops}
            if len(ops) > 1:
                blocks["all of the above, in order"] = ops
        if op:
            blocks = {text: [build_op(yaml.safe_load(text))] for text in op}
        if not blocks:
            _fail(f"{config}: augment.ops is empty; nothing to preview (try --op randaugment)")
        data = load_data(cfg.data).train
        picked = data.images[pick_images(data.labels, images, seed)]
        rows = {name: augmented_rows(ops, picked, versions, seed) for name, ops in blocks.items()}
    except _user_errors() as exc:
        _fail(str(exc))
    save_figure(preview_figure(rows, f"{config.name}: {len(rows)} augmentation(s)"), out)
    console.print(f"wrote {out} ({len(rows)} blocks x {images} images x {versions} versions)")


if __name__ == "__main__":
    app()
