"""The fast recipe (configs/cifar10-fast.yaml) on grayscale CIFAR-10: the offline
cifar10-jpeg copy converted to Pillow's "L" mode and saved as PNG folders, read with
`data.channels: auto` (stored and trained as one channel) or `--channels 3` (the gray
image repeated in three identical channels, the case that used to break fastnet's
whitening). One run per seed (finished seeds in --out are reused, so it resumes); prints
each epoch's validation accuracy and the test accuracy, and writes them to --results.

    python benchmarks/grayscale_cifar10.py --seeds 0 1 [--channels auto|1|3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tarfile
from pathlib import Path

from PIL import Image

from imgcls.configure import load_config
from imgcls.tracking.run import Run
from imgcls.train import train
from imgcls.train.precision import machine_header


def gray_copy(archive: Path, out: Path) -> Path:
    """cifar10/{train,test}/<class>/*.png in L mode, made once (out/done marks it)."""
    root = out / "cifar10-gray"
    if (out / "done").exists():
        return root
    raw = out / "raw"
    if not (raw / "cifar10").is_dir():
        with tarfile.open(archive) as tar:
            tar.extractall(raw, filter="data")
    for src in sorted((raw / "cifar10").rglob("*.jpg")):
        dst = root / src.relative_to(raw / "cifar10").with_suffix(".png")
        dst.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(src) as image:
            image.convert("L").save(dst)
    (out / "done").write_text("ok")
    return root


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/cifar10-fast.yaml")
    parser.add_argument("--data", default="../shared/datasets/cifar10-jpeg.tar.gz")
    parser.add_argument("--work", default="runs/grayscale-data")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--channels", default="auto")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--out", default="runs/grayscale-cifar10")
    parser.add_argument("--results", default="benchmarks/results/grayscale_cifar10.json")
    args = parser.parse_args()

    folder = gray_copy(Path(args.data), Path(args.work))
    results = []
    for seed in args.seeds:
        run_dir = Path(args.out) / f"channels-{args.channels}-seed-{seed}"
        run = Run(run_dir)
        summary = run.summary()
        if summary is None:
            cfg = load_config(args.config, ["data.source=folder", f"data.path={folder}",
                                            f"data.channels={args.channels}", f"seed={seed}",
                                            *args.sets])
            run, summary = train(cfg, run_dir=run_dir)
        val = [round(m["val_accuracy"], 4) for m in run.metrics()]
        results.append({"seed": seed, "channels": run.preprocessing().channels,
                        "val_accuracy_per_epoch": val,
                        "test_accuracy": summary["test_accuracy"],
                        "test_accuracy_plain": summary["test_accuracy_plain"],
                        "wall_seconds": summary["wall_seconds"],
                        "cpu": summary.get("cpu"), "warnings": summary.get("warnings", [])})
        print(json.dumps(results[-1]))
    tests = [r["test_accuracy"] for r in results]
    report = {"machine": machine_header(), "config": args.config, "channels": args.channels,
              "sets": args.sets,
              "runs": results, "test_accuracy_mean": statistics.mean(tests),
              "test_accuracy_std": statistics.stdev(tests) if len(tests) > 1 else 0.0}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(report, indent=1) + "\n")
    print(f"test accuracy {100 * report['test_accuracy_mean']:.2f} +- "
          f"{100 * report['test_accuracy_std']:.2f}% over seeds {args.seeds}")


if __name__ == "__main__":
    main()
