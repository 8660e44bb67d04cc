"""Time to accuracy of imgcls's fastest CIFAR-10 recipe (configs/cifar10-fast.yaml) on the
offline cifar10-jpeg copy: trains one run per seed (a seed already finished in --out is
reused, so the benchmark can be resumed), then prints one figure per line and appends them
to benchmarks/results/time_to_accuracy.txt, with the accuracy-vs-time curve next to it.

    python benchmarks/time_to_accuracy.py --seeds 0 1 2 [--set train.epochs=8]
    python benchmarks/time_to_accuracy.py --runs runs/a runs/b   # report finished runs

Run it alone on the machine: the wall time is the figure.
"""

from __future__ import annotations

import argparse
import statistics
from datetime import datetime
from pathlib import Path

from imgcls.configure import load_config
from imgcls.report.plots import accuracy_vs_time, save_figure
from imgcls.tracking.run import Run
from imgcls.train import train
from imgcls.train.precision import machine_header


def curve(run: Run, summary: dict) -> list[tuple[float, float]]:
    """(elapsed wall seconds, validation accuracy) after each epoch; eval time between
    epochs is small and spread evenly into the training seconds."""
    history = run.metrics()
    train_total = sum(m["seconds"] for m in history)
    spare = summary["wall_seconds"] - summary["startup_seconds"] - train_total
    elapsed, points = summary["startup_seconds"], []
    for m in history:
        elapsed += m["seconds"] + max(spare, 0) * m["seconds"] / train_total
        points.append((elapsed, m["val_accuracy"]))
    return points


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/cifar10-fast.yaml")
    parser.add_argument("--data", default="../shared/datasets/cifar10-jpeg.tar.gz")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--out", default="runs/time-to-accuracy")
    parser.add_argument("--target", type=float, default=0.906)
    parser.add_argument("--limit-minutes", type=float, default=18.0)
    parser.add_argument("--results", default="benchmarks/results/time_to_accuracy.txt")
    parser.add_argument("--runs", nargs="+", help="report these finished runs instead")
    args = parser.parse_args()

    sets = ["data.source=folder", f"data.path={args.data}", *args.sets]
    planned = ({Path(r).name: Path(r) for r in args.runs} if args.runs else
               {f"seed{seed}": Path(args.out) / f"seed-{seed}" for seed in args.seeds})
    summaries, curves, finals = {}, {}, {}
    for label, run_dir in planned.items():
        run = Run(run_dir)
        summary = run.summary()
        if summary is None:
            if args.runs:
                raise SystemExit(f"{run_dir}: no summary.json (not a finished run)")
            cfg = load_config(args.config, [*sets, f"seed={label.removeprefix('seed')}"])
            run, summary = train(cfg, run_dir)
        summaries[label] = summary
        curves[label] = curve(run, summary)
        finals[label] = (summary["wall_seconds"], summary["test_accuracy"])

    acc = [s["test_accuracy"] for s in summaries.values()]
    plain = [s["test_accuracy_plain"] for s in summaries.values()]
    wall = [s["wall_seconds"] for s in summaries.values()]
    limit = 60 * args.limit_minutes
    what = " ".join(args.runs) if args.runs else f"{args.config} {' '.join(args.sets)}"
    lines = [f"# {datetime.now():%Y-%m-%d %H:%M} {what}; {machine_header()}"]
    for label, s in summaries.items():
        lines += [f"{label}_test_accuracy {s['test_accuracy']:.4f}",
                  f"{label}_test_accuracy_plain {s['test_accuracy_plain']:.4f}",
                  f"{label}_wall_seconds {s['wall_seconds']:.0f}"]
    lines += [] if args.runs else [f"mean_test_accuracy {statistics.mean(acc):.4f}",
              f"mean_test_accuracy_plain {statistics.mean(plain):.4f}",
              f"median_wall_seconds {statistics.median(wall):.0f}",
              f"max_wall_seconds {max(wall):.0f}",
              f"meets_target {statistics.mean(acc) >= args.target and max(wall) <= limit} "
              f"(mean >= {args.target}, every run <= {limit:.0f} s)"]
    print("\n".join(lines))
    with open(args.results, "a") as f:
        f.write("\n".join(lines) + "\n")
    title = ("time to accuracy: fastnet94 on cifar10-jpeg, 2-core CPU" if args.runs else
             f"{Path(args.config).stem}: mean test {100 * statistics.mean(acc):.2f}% in "
             f"{statistics.median(wall) / 60:.1f} min (median, {len(acc)} seeds)")
    save_figure(accuracy_vs_time(curves, finals, args.target, limit, title),
                Path(args.results).with_suffix(".png"))


if __name__ == "__main__":
    main()
