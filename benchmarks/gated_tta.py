"""Confidence-gated TTA against full TTA on trained runs: the test accuracy and the seconds
of the test evaluation with the views for every image, only for the images whose plain
top-1 probability leads the runner-up's by less than each margin (`train.tta_margin`), and
with none; medians of `--repeats` timings, each run's best checkpoint on this CPU, the
run's own precision (bf16 autocast where the run trained in it).

    python benchmarks/gated_tta.py runs/cifar10-fast-2025/recipe/seed-* \\
        [--margins 0.1 0.2 0.3 0.5] [--repeats 3]

Results go to benchmarks/results/gated_tta.json: per run and margin the accuracy, the share
of images given the views and the seconds; over the runs the mean +- std of the accuracy
difference to full TTA and the median time ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from imgcls.data import load_data
from imgcls.hardware import machine_line
from imgcls.tracking.io import atomic_write_json
from imgcls.tracking.run import Run
from imgcls.train import eval_loader, load_model
from imgcls.train.evaluate import evaluate
from imgcls.train.precision import DTYPES


def measure(run_dir: Path, margins: list[float], repeats: int) -> dict[str, Any]:
    """Each way of testing the run: accuracy, TTA share and the median seconds."""
    model, pre, cfg = load_model(run_dir, "best")
    loader = eval_loader(load_data(cfg.data).with_channels(pre.channels).test, cfg, pre)
    amp = DTYPES[((Run(run_dir).summary() or {}).get("precision") or {}).get("amp", "none")]
    tta = cfg.train.tta if cfg.train.tta != "none" else "mirror_translate"
    ways = {"plain": ("none", None), "full": (tta, None),
            **{f"margin {m:g}": (tta, m) for m in margins}}
    out = {}
    for name, (views, margin) in ways.items():
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = evaluate(model, loader, views, amp, tta_margin=margin)
            seconds.append(time.perf_counter() - start)
        out[name] = {"accuracy": result.get("tta_accuracy", result["accuracy"]),
                     "tta_share": result.get("tta_share", 0.0), "margin": margin,
                     "seconds": statistics.median(seconds)}
    return {"run": str(run_dir), "tta": tta, "images": len(loader.labels), **out}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Over the runs: each way's accuracy minus full TTA's (mean +- std, points) and its
    seconds over full TTA's (median)."""
    ways = [k for k in runs[0] if isinstance(runs[0][k], dict)]
    table = {}
    for way in ways:
        diff = [100 * (r[way]["accuracy"] - r["full"]["accuracy"]) for r in runs]
        ratio = [r[way]["seconds"] / r["full"]["seconds"] for r in runs]
        table[way] = {
            "accuracy_mean": statistics.mean(100 * r[way]["accuracy"] for r in runs),
            "accuracy_std": statistics.stdev(100 * r[way]["accuracy"] for r in runs)
            if len(runs) > 1 else 0.0,
            "vs_full_points_mean": statistics.mean(diff),
            "vs_full_points_std": statistics.stdev(diff) if len(runs) > 1 else 0.0,
            "tta_share_mean": statistics.mean(r[way]["tta_share"] for r in runs),
            "seconds_median": statistics.median(r[way]["seconds"] for r in runs),
            "time_vs_full_median": statistics.median(ratio)}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--margins", nargs="+", type=float, default=[0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path,
                        default=Path("benchmarks/results/gated_tta.json"))
    args = parser.parse_args()
    run_dirs = [p for p in args.runs if p.is_dir()]  # a glob also catches seed-N.lock files
    if skipped := [str(p) for p in args.runs if p not in run_dirs]:
        print(f"not run folders, skipped: {', '.join(skipped)}", flush=True)
    if not run_dirs:
        parser.error("no run folders among the paths given (a run folder holds config.yaml)")
    runs = []
    for run_dir in run_dirs:
        runs.append(measure(run_dir, args.margins, args.repeats))
        print(json.dumps(runs[-1]), flush=True)
    report = {"machine": machine_line("the runs' own precision"), "runs": runs,
              "summary": summarize(runs)}
    atomic_write_json(args.results, report)
    for way, row in report["summary"].items():
        print(f"{way:12s} {row['accuracy_mean']:.2f} +- {row['accuracy_std']:.2f}%  "
              f"vs full {row['vs_full_points_mean']:+.2f} +- {row['vs_full_points_std']:.2f}  "
              f"views for {row['tta_share_mean']:.0%}  {row['seconds_median']:.1f} s "
              f"({row['time_vs_full_median']:.2f}x full)")


if __name__ == "__main__":
    main()
