"""Feature extraction with and without the feature cache: a new head trained on a frozen
backbone (configs/flowers-transfer.yaml, head-only stage, no augmentation), once pushing
every epoch's images through the backbone and once on features computed a single time.
Prints the head stage's wall time and test accuracy of each and their ratio, and appends
them to benchmarks/results/feature_cache.txt.

    python benchmarks/feature_cache.py [--epochs 20] [--seeds 0 1 2]

Needs the backbone run the config names (runs/cifar10-fast). Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from datetime import datetime
from pathlib import Path

from imgcls.configure import load_config
from imgcls.train import train
from imgcls.train.precision import machine_header


def head_stage(cache: str, epochs: int, seed: int, config: str, out: Path) -> dict:
    stage = (f"[{{epochs: {epochs}, train: head, cache_features: {cache}, "
             "optim: {name: adamw, lr: 1.0, weight_decay: 0.0}}]")
    cfg = load_config(config, ["augment.ops=[]", f"stages={stage}", f"seed={seed}",
                               "train.tensorboard=false"])
    _, summary = train(cfg, out / f"{cache}-{seed}")
    # the stage's own time: its epochs with validation, and (cached) the one feature pass;
    # data loading, model building and the final test are the same for both
    seconds = summary["wall_seconds"] - summary["startup_seconds"] - summary["test_seconds"]
    return {"seconds": seconds, "accuracy": summary["test_accuracy_plain"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/flowers-transfer.yaml")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--results", default="benchmarks/results/feature_cache.txt")
    args = parser.parse_args()
    results: dict[str, list[dict]] = {"false": [], "true": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for cache in ("false", "true"):
                results[cache].append(head_stage(cache, args.epochs, seed, args.config,
                                                 Path(tmp)))
    lines = [f"# {datetime.now():%Y-%m-%d %H:%M} {args.config} head-only stage, "
             f"{args.epochs} epochs, seeds {args.seeds}; {machine_header()}"]
    for cache, label in (("false", "through_backbone"), ("true", "cached_features")):
        seconds = statistics.median(r["seconds"] for r in results[cache])
        accuracy = statistics.mean(r["accuracy"] for r in results[cache])
        lines += [f"{label}_median_seconds {seconds:.2f}", f"{label}_mean_test_accuracy "
                  f"{accuracy:.4f}"]
    speedup = (statistics.median(r["seconds"] for r in results["false"])
               / statistics.median(r["seconds"] for r in results["true"]))
    lines.append(f"speedup {speedup:.1f}")
    print("\n".join(lines))
    with open(args.results, "a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
