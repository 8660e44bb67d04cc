"""A fingerprint of what training computes, to prove a restructuring changed nothing: two
fixed short CPU runs through the command line, the fast recipe (configs/cifar10-fast.yaml
on a 2,000-image subset of the offline CIFAR-10 archive, 2 epochs) and the staged transfer
recipe (configs/flowers-transfer.yaml from that run, 2 + 2 epochs), reduced to their
metrics.jsonl and summary.json figures without timings. Two fingerprints from the same
machine and thread count must be equal to the last bit.

    python benchmarks/behaviour_fingerprint.py OUT.json [--datasets ../shared/datasets]
    python benchmarks/behaviour_fingerprint.py --compare A.json B.json

Run it alone on the machine; it uses 2 threads and takes about 3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from imgcls.train.precision import machine_header

TIMINGS = ("seconds", "images_per_second")
SUMMARY = ("test_accuracy", "test_accuracy_plain", "test_loss", "best_val_accuracy",
           "best_epoch", "epochs", "stop_reason", "num_parameters", "images")


def train(config: str, run_dir: Path, overrides: list[str]) -> dict:
    sets = [arg for value in overrides for arg in ("--set", value)]
    subprocess.run([sys.executable, "-m", "imgcls.cli", "train", config, "--run-dir",
                    str(run_dir), *sets, "--set", "train.threads=2",
                    "--set", "train.tensorboard=false"], check=True)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"metrics": [{k: v for k, v in m.items() if k not in TIMINGS} for m in metrics],
            "summary": {k: summary.get(k) for k in SUMMARY}}


def fingerprint(datasets: Path, work: Path) -> dict:
    fast = train("configs/cifar10-fast.yaml", work / "fast", [
        "data.source=folder", f"data.path={datasets / 'cifar10-jpeg.tar.gz'}",
        "data.train_subset=2000", "data.val_fraction=0.1", "train.epochs=2"])
    stages = ("[{name: head, epochs: 2, train: head, cache_features: true, "
              "optim: {name: adamw, lr: 1.0, weight_decay: 0.0}}, "
              "{name: fine-tune, epochs: 2, train: all, optim: {lr: 0.2, muon_lr: 0.072}}]")
    transfer = train("configs/flowers-transfer.yaml", work / "transfer", [
        f"data.path={datasets / 'flowers5-128.tar.gz'}", f"model.pretrained={work / 'fast'}",
        f"stages={stages}"])
    return {"cifar10-fast": fast, "flowers-transfer": transfer}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", nargs="?", type=Path)
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"))
    args = parser.parse_args()
    if args.compare:
        a, b = (json.loads(p.read_text()) for p in args.compare)
        print("bit-identical" if a == b else "DIFFERENT")
        sys.exit(0 if a == b else 1)
    print(machine_header())  # not in the fingerprint: it compares behaviour, not machines
    with tempfile.TemporaryDirectory() as work:
        result = fingerprint(args.datasets.resolve(), Path(work))
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for name, run in result.items():
        print(name, run["summary"]["test_accuracy"], len(run["metrics"]), "epochs")


if __name__ == "__main__":
    main()
