"""`imgcls fit` against the best hand-written config of the repository for the same data, at
the same time budgets: test accuracy (mean of the seeds) and how well each kept its budget.

    python benchmarks/fit_budget.py --data ../shared/datasets/flowers5-128.tar.gz \
        --baseline lite0-transfer-128px --budgets 5m 15m 30m --seeds 0 1
    python benchmarks/fit_budget.py --data ../shared/datasets/cifar10-jpeg.tar.gz \
        --baseline fastnet94-32px --budgets 5m 15m 30m --seeds 0 1

The baseline is the hand-written config run through `imgcls fit --candidates NAME` (seeds
--baseline-seeds, default 0): the same clock, and its epochs sized to the budget on this
machine the same way, with no search (lite0-transfer-128px is configs/finetune-folder.yaml,
fastnet94-32px configs/cifar10-fast.yaml with the data's recipe settings). `--alone NAME
...` also runs each of those candidates alone for the whole budget (the first seed; the
baseline's own run is its run alone);
`--heldout` also runs fit with priors that hold out this data set's learning curves (mode
`heldout`): the benchmark data is among the priors' own, and this is fit on data the priors
never measured (a user's). Each run
records its final run's forecast and its error. The decode-once cache is filled first at
every size a candidate stores the images (as for a user's second fit on the same data), so
no timed run pays for decoding. Rerun the same command to continue: finished runs are kept
in the JSON file (default benchmarks/results/fit_budget.json), keyed by data, budget, mode
and seed, each with the commit of the code that ran it. Run it with nothing else on the
machine: a budget is wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from imgcls.data import load_data
from imgcls.fit import forecast
from imgcls.fit.budget import parse_duration
from imgcls.fit.candidates import candidates_for
from imgcls.fit.pipeline import base_config, fit
from imgcls.fit.report import phase_seconds
from imgcls.hardware import machine_line
from imgcls.tracking.io import atomic_write_json
from imgcls.train.setup import resolve_device


def warm_cache(data: str) -> None:
    """Decode the images once at every size a candidate stores them."""
    base, native, _ = base_config(data, [])
    splits = load_data(base.data)
    for candidate in candidates_for(base, native, len(splits.train), len(splits.classes),
                                    resolve_device("auto").type):
        load_data(candidate.config.data)


@contextmanager
def priors_without(data: str | None) -> Iterator[None]:
    """fit's priors without the curves measured on `data` (None: all of them)."""
    shipped = forecast.shipped_curves
    if data is not None:
        kept = tuple(c for c in shipped() if c.data != data)
        forecast.shipped_curves = lambda: kept
    try:
        yield
    finally:
        forecast.shipped_curves = shipped


def _runs(name: str, budget: str, seeds: list[int], baseline: str, baseline_seeds: list[int],
          alone: list[str], heldout: bool) -> list[tuple[str, list[str] | None, int, bool]]:
    """(key, --candidates, seed, priors held out) of every run of one cell, by seed."""
    runs = []
    for seed in seeds:
        runs.append((f"{name}/{budget}/fit/seed{seed}", None, seed, False))
        if seed in baseline_seeds:
            runs.append((f"{name}/{budget}/baseline/seed{seed}", [baseline], seed, False))
    runs += [(f"{name}/{budget}/alone-{c}/seed{seeds[0]}", [c], seeds[0], False)
             for c in alone if c != baseline or seeds[0] not in baseline_seeds]
    if heldout:
        runs += [(f"{name}/{budget}/heldout/seed{seed}", None, seed, True) for seed in seeds]
    return runs


def code_version() -> str:
    """The repository's commit (with "+changes" when the tree differs from it), so that
    runs of different code in one results file tell themselves apart."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--", "../src") else "")


def _record(result, seconds: float, code: str) -> dict:
    record, final = result.record, result.record.final
    return {"code": code,
            "test_accuracy": result.summary["test_accuracy"], "winner": result.winner,
            "spent_seconds": record.spent_seconds, "budget_seconds": seconds,
            "budget_ratio": record.spent_seconds / seconds, "final_steps": final.steps,
            "final_epochs": final.passes / final.images, "final_images": final.images,
            "forecast": final.forecast_trained.score if final.forecast_trained else None,
            "forecast_error": final.forecast_error,
            "search_seconds": phase_seconds(record)["trials"],
            "raced": record.raced,
            "race_call": record.race_call.model_dump() if record.race_call else None,
            "tta": result.summary["tta"],
            "forecasts": {name: f.score if (f := record.last_forecast(name)) else None
                          for name in record.candidates},
            "test_accuracy_plain": result.summary["test_accuracy_plain"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--baseline", required=True, help="the hand-written candidate's name")
    parser.add_argument("--budgets", nargs="+", default=["5m"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--baseline-seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--alone", nargs="*", default=[],
                        help="candidates run alone for the whole budget (first seed)")
    parser.add_argument("--heldout", action="store_true",
                        help="also fit with priors that never saw this data set")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-fit"))
    parser.add_argument("--results", type=Path,
                        default=Path("benchmarks/results/fit_budget.json"))
    args = parser.parse_args()
    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    results.setdefault("machine", machine_line("train.amp auto"))
    runs = results.setdefault("runs", {})
    name = Path(args.data).name.split(".")[0]
    code = code_version()  # what this process imported, whatever is committed while it runs
    warm_cache(args.data)
    for budget in args.budgets:
        seconds = parse_duration(budget)
        for key, only, seed, heldout in _runs(name, budget, args.seeds, args.baseline,
                                              args.baseline_seeds, args.alone, args.heldout):
            if key in runs:
                continue
            with priors_without(name if heldout else None):
                result = fit(args.data, seconds, out=args.out / key.replace("/", "-"),
                             seed=seed, only=only)
            runs[key] = _record(result, seconds, code)
            atomic_write_json(args.results, results)
            r = runs[key]
            print(f"{key}: test {r['test_accuracy']:.4f} ({result.winner}; forecast "
                  f"{r['forecast'] or float('nan'):.4f}), {r['spent_seconds']:.0f} s of "
                  f"{seconds:.0f} s ({r['budget_ratio']:.1%})", flush=True)
        modes = sorted({k.split("/")[2] for k in runs if k.startswith(f"{name}/{budget}/")})
        for mode in modes:
            cell = [runs[k] for k in runs if k.startswith(f"{name}/{budget}/{mode}/")]
            accs = [r["test_accuracy"] for r in cell]
            spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
            errors = [abs(r["forecast_error"]) for r in cell if r["forecast_error"] is not None]
            error = (f", forecast error {100 * statistics.mean(errors):.1f} points (mean "
                     "absolute)" if errors else "")
            print(f"{name} {budget} {mode}: {100 * statistics.mean(accs):.2f} +- "
                  f"{100 * spread:.2f}% over {len(accs)} seed(s){error}", flush=True)
    print(results["machine"])


if __name__ == "__main__":
    main()
