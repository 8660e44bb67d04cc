"""The `imgcls` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from imgcls.config import load_config

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="imgcls: train, evaluate and compare image classifiers.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect datasets.")
app.add_typer(data_app, name="data")
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
    """Train a model and record the run."""
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
    console.print(
        f"[bold]{run.path}[/bold]: test accuracy {summary['test_accuracy']:.4f}"
        f" (plain {summary['test_accuracy_plain']:.4f}, tta {summary['tta']}),"
        f" {summary['train_images_per_second']:.0f} img/s, {summary['wall_seconds']:.0f} s",
        soft_wrap=True)


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
def runs(root: Annotated[Path, typer.Argument(help="Folder of runs.")] = Path("runs")) -> None:
    """A table of runs with their key metrics."""
    from imgcls.tracking.table import run_rows

    table = Table("run", "model", "epochs", "best val", "test", "img/s", "wall s", "status")
    for row in run_rows(root):
        table.add_row(*row)
    console.print(table)


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


if __name__ == "__main__":
    app()
