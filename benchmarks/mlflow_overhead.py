"""What logging to MLflow costs a run: the fast recipe trained with and without a local
MLflow tracking server (SQLite store, started here on 127.0.0.1), alternating, in one
process; training images/s and wall time per run, medians, and their ratios.

    python benchmarks/mlflow_overhead.py [--data ../shared/datasets/cifar10-jpeg.tar.gz] \
        [--rounds 3] [--images 10000] [--epochs 2]

Appends to benchmarks/results/mlflow_overhead.txt, with the machine. Run it alone.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from datetime import datetime
from pathlib import Path

from imgcls.configure import load_config
from imgcls.hardware import machine_line
from imgcls.tracking.mlflow_server import LocalServer
from imgcls.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/datasets/cifar10-jpeg.tar.gz")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/mlflow_overhead.txt")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imgcls-mlflow-overhead-"))
    server = LocalServer(work / "mlflow").start()
    uri = server.uri
    sets = ["data.source=folder", f"data.path={args.data}",
            f"data.train_subset={args.images}", f"train.epochs={args.epochs}",
            "train.tensorboard=false"]
    figures: dict[str, dict[str, list[float]]] = {
        side: {"images_per_second": [], "wall_seconds": []} for side in ("off", "mlflow")}
    try:
        for r in range(args.rounds):  # alternating: drifts of the machine hit both alike
            for side in ("off", "mlflow"):
                cfg = load_config("configs/cifar10-fast.yaml",
                                  [*sets, f"tracking.mlflow={'off' if side == 'off' else uri}"])
                _, summary = train(cfg, work / f"{side}-{r}")
                figures[side]["images_per_second"].append(summary["train_images_per_second"])
                figures[side]["wall_seconds"].append(summary["wall_seconds"])
                print(f"round {r + 1} {side}: {summary['train_images_per_second']:.1f} "
                      f"images/s, {summary['wall_seconds']:.1f} s", flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    median = {side: {k: statistics.median(v) for k, v in f.items()}
              for side, f in figures.items()}
    lines = [f"# {datetime.now():%Y-%m-%d %H:%M} fast recipe, {args.images} images x "
             f"{args.epochs} epochs, median of {args.rounds} alternating rounds; "
             f"{machine_line('train.amp auto')}",
             *(f"{side}_{k} {v:.1f}" for side, m in median.items() for k, v in m.items()),
             f"mlflow_over_off_images_per_second_ratio "
             f"{median['mlflow']['images_per_second'] / median['off']['images_per_second']:.3f}",
             f"mlflow_over_off_wall_seconds_ratio "
             f"{median['mlflow']['wall_seconds'] / median['off']['wall_seconds']:.3f}"]
    print("\n".join(lines))
    with open(args.out, "a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
