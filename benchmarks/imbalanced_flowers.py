"""Class imbalance on flowers5-128: one class cut to 10% of its training images (the test
split left whole), trained with the recipe `imgcls train FOLDER` picks for it, three ways:
no correction, `train.class_weights: auto` (inverse frequency in the loss) and
`data.sampler: balanced`. Reports test macro-F1 and balanced accuracy, mean +- std over
the seeds, with Welch's p against no correction, and the cut class's recall. Finished
runs in --out are reused, so it resumes.

    python benchmarks/imbalanced_flowers.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tarfile
from pathlib import Path

import numpy as np

from imgcls.experiment.stats import welch
from imgcls.recipes import recipe_for_data
from imgcls.tracking.run import Run
from imgcls.train import train
from imgcls.train.precision import machine_header

VARIANTS = {"none": [], "class_weights": ["train.class_weights=auto"],
            "balanced_sampler": ["data.sampler=balanced"]}


def imbalanced_copy(archive: Path, work: Path, cut: str, keep: float, test_share: float,
                    seed: int = 0) -> Path:
    """work/imbalanced/{train,test}/<class>/ as links to the unpacked photos: a stratified
    `test_share` of every class is the test split; `cut` keeps `keep` of its training
    images."""
    root = work / "imbalanced"
    if (work / "done").exists():
        return root
    raw = work / "raw"
    if not raw.is_dir():
        with tarfile.open(archive) as tar:
            tar.extractall(raw, filter="data")
    classes = sorted(p for p in next(raw.iterdir()).iterdir() if p.is_dir())
    rng = np.random.default_rng(seed)
    for folder in classes:
        files = sorted(folder.glob("*.jpg"))
        order = rng.permutation(len(files))
        n_test = round(test_share * len(files))
        train = [files[i] for i in order[n_test:]]
        if folder.name == cut:
            train = train[:max(1, round(keep * len(train)))]
        for split, chosen in (("test", [files[i] for i in order[:n_test]]), ("train", train)):
            target = root / split / folder.name
            target.mkdir(parents=True, exist_ok=True)
            for f in chosen:
                (target / f.name).symlink_to(f.resolve())
    (work / "done").write_text("ok")
    return root


def stats(values: dict[str, list[float]]) -> dict[str, dict]:
    base = values["none"]
    out = {}
    for name, v in values.items():
        d = welch(v, base) if name != "none" else None
        out[name] = {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0,
                     "values": v, "diff_vs_none": d.diff if d else None,
                     "p_vs_none": d.p if d else None}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/datasets/flowers5-128.tar.gz")
    parser.add_argument("--work", default="runs/imbalanced-data")
    parser.add_argument("--cut", default="sunflower")
    parser.add_argument("--keep", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--out", default="runs/imbalanced-flowers")
    parser.add_argument("--results", default="benchmarks/results/imbalanced_flowers.json")
    args = parser.parse_args()

    folder = imbalanced_copy(Path(args.data), Path(args.work), args.cut, args.keep, 0.2)
    rows = []
    for seed in args.seeds:
        for name, sets in VARIANTS.items():
            run_dir = Path(args.out) / f"{name}-seed-{seed}"
            run = Run(run_dir)
            summary = run.summary()
            if summary is None:
                cfg, lines = recipe_for_data(folder, [f"seed={seed}", *sets, *args.sets])
                if not rows:
                    print("\n".join(lines))
                run, summary = train(cfg, run_dir=run_dir)
            cut = next(c for c in summary["per_class"] if c["class"] == args.cut)
            rows.append({"variant": name, "seed": seed,
                         "macro_f1": summary["test_macro_f1"],
                         "balanced_accuracy": summary["test_balanced_accuracy"],
                         "accuracy": summary["test_accuracy"], "cut_recall": cut["recall"],
                         "train_images": summary["images"]["train"],
                         "wall_seconds": summary["wall_seconds"],
                         "warnings": summary.get("warnings", [])})
            print(json.dumps(rows[-1]), flush=True)
    report = {"machine": machine_header(), "cut": args.cut, "keep": args.keep,
              "seeds": args.seeds, "sets": args.sets,
              "cpu": run.summary().get("cpu"), "runs": rows}
    for metric in ("macro_f1", "balanced_accuracy", "accuracy", "cut_recall"):
        report[metric] = stats({v: [r[metric] for r in rows if r["variant"] == v]
                                for v in VARIANTS})
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(report, indent=1) + "\n")
    for metric in ("macro_f1", "balanced_accuracy", "cut_recall"):
        for name, s in report[metric].items():
            p = "" if s["p_vs_none"] is None else f"  p = {s['p_vs_none']:.3g} vs none"
            print(f"{metric:18s} {name:17s} {100 * s['mean']:.2f} +- {100 * s['std']:.2f}{p}")


if __name__ == "__main__":
    main()
