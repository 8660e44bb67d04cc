"""`imgcls audit` against planted problems: near duplicates across train and test, and
flipped training labels, on a folder of photos (flower_photos-256), each seed planting
anew; and the share of CIFAR-10's test images with a near duplicate in its training split,
beside Barz and Denzler's 3.3% ("Do we train on test data?", 2020), with 32 of the pairs
drawn at random in docs/audit/cifar10-near-pairs.png.

    python benchmarks/audit_planted.py planted --data ../shared/datasets/flower_photos-256.tar.gz \
        --seeds 0 1
    python benchmarks/audit_planted.py cifar --data ../shared/datasets/cifar10-jpeg.tar.gz
    python benchmarks/audit_planted.py retrain --data ../shared/datasets/flower_photos-256.tar.gz \
        --seeds 0 1

Planting, per seed: the photos are split 80/20 (stratified, by the seed); 3% of all images
get an edited copy in the other split (half of them test images copied into train, half
training images copied into test), each edit one of: resized to 50-80% (then stored at the
audit's size again by the loader), recompressed as JPEG at quality 40-90, cropped by 2-6%
per side, mirrored; 5% of the training images get another class at random. The result is
a CSV data set (split column) that `imgcls audit` reads like any other. Near duplicates:
recall = planted pairs found across the splits / planted; precision = found pairs across
the splits that are planted / all found across the splits, strictly, and counting pairs of
two original photos as correct only where their pixels are equal (the data's own copies);
the found pairs that are not planted are listed (`others`) to be judged by eye.
Label errors: the share of planted flips among the top N training-split suspects (N = the
flips). Results
go to benchmarks/results/audit_planted.json (one entry per data set and seed), the audit's
page and findings to runs/bench-audit/. `--phash` also measures the usual alternative on the
same planted data: imagehash's perceptual hash (and its mirror image's) within 4, 8 and 12
of its 64 bits.

`retrain`: configs/finetune-folder.yaml trained on each seed's planted data as planted, with
what the audit found left out (`data.exclude`: its exclude-suggested.txt, i.e. the training
copies of test images, plus the top N label suspects of the training split, N = the flips, as
a user taking the audit's first suspects would), with the leaks left out and those suspects
relabelled to the audit's class instead (`data.relabel`), and with exactly the planted
problems left out (the ceiling). Test accuracy of each: on the whole test split (leaked copies
included, so "as planted" is flattered by them) and on the clean test images (neither a
planted copy nor the original of one). Results under `retrain/` in the same JSON.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from imgcls.audit import Findings, audit
from imgcls.audit.pool import Pool
from imgcls.config import DataConfig
from imgcls.configure import load_config
from imgcls.data import image_root, load_data
from imgcls.deploy.predictor import Predictor
from imgcls.experiment.stats import welch
from imgcls.hardware import machine_line
from imgcls.tracking.io import atomic_write_json
from imgcls.tracking.run import Run
from imgcls.train import train

DUPLICATE_SHARE = 0.03
FLIP_SHARE = 0.05
PAPER_SHARE = 0.033  # CIFAR-10 test images with a near duplicate in train (Barz & Denzler)
GRID = Path(__file__).resolve().parents[1] / "docs" / "audit" / "cifar10-near-pairs.png"
FINETUNE = Path(__file__).resolve().parents[1] / "configs" / "finetune-folder.yaml"
RETRAIN = ("as-planted", "found-excluded", "found-relabelled", "planted-excluded")


def _edit(image: Image.Image, kind: str, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """The edited copy and the JPEG quality it is saved at."""
    quality = 95
    if kind == "resized":
        scale = rng.uniform(0.5, 0.8)
        image = image.resize((round(image.width * scale), round(image.height * scale)),
                             Image.Resampling.BICUBIC)
    elif kind == "recompressed":
        quality = int(rng.integers(40, 91))
    elif kind == "cropped":
        w, h = image.size
        left, top, right, bottom = (rng.uniform(0.02, 0.06, 4) * [w, h, w, h]).astype(int)
        image = image.crop((left, top, w - right, h - bottom))
    else:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image, quality


def plant(root: Path, out: Path, seed: int) -> tuple[Path, dict[str, str], list[str]]:
    """The CSV data set with planted copies and flips; the copies (copy -> original) and
    the flipped images' names. Planted once per folder (planted.json), then read back."""
    table, record = out / "planted.csv", out / "planted.json"
    if table.is_file() and record.is_file():
        known = json.loads(record.read_text())
        return table, known["copies"], known["flipped"]
    rng = np.random.default_rng(seed)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(f"{c}/{p.name}", c) for c in classes for p in sorted((root / c).iterdir())]
    split = {}
    for c in classes:
        members = [n for n, k in files if k == c]
        order = rng.permutation(len(members))
        test = set(order[:round(0.2 * len(members))].tolist())
        split.update({members[i]: "test" if i in test else "train" for i in range(len(members))})
    label = dict(files)
    picked = rng.choice(len(files), size=round(DUPLICATE_SHARE * len(files)), replace=False)
    copies = {}
    (out / "copies").mkdir(parents=True, exist_ok=True)
    rows = [(str(root / n), label[n], split[n]) for n, _ in files]
    for k, i in enumerate(picked):
        name, c = files[i]
        kind = ("resized", "recompressed", "cropped", "mirrored")[k % 4]
        with Image.open(root / name) as image:
            copy, quality = _edit(image.convert("RGB"), kind, rng)
        target = out / "copies" / f"{kind}-{k}-{Path(name).stem}.jpg"
        buffer = io.BytesIO()
        copy.save(buffer, format="JPEG", quality=quality)
        target.write_bytes(buffer.getvalue())
        rows.append((str(target), c, "train" if split[name] == "test" else "test"))
        copies[target.name] = name
    train_rows = [i for i, r in enumerate(rows[:len(files)]) if r[2] == "train"]
    flipped = []
    for i in rng.choice(train_rows, size=round(FLIP_SHARE * len(train_rows)), replace=False):
        path, c, s = rows[i]
        rows[i] = (path, str(rng.choice([k for k in classes if k != c])), s)
        flipped.append(files[i][0])
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
    atomic_write_json(record, {"seed": seed, "copies": copies, "flipped": flipped})
    return table, copies, flipped


def _key(name: str, root: Path) -> str:
    """A CSV image name (an absolute path) as the planting named it."""
    path = Path(name)
    return path.name if path.parent.name == "copies" else path.relative_to(root).as_posix()


def planted_run(data: str, seed: int, out: Path, size: int, phash: bool = False) -> dict:
    root = image_root(DataConfig(source="folder", path=data))
    table, copies, flipped = plant(root, out / f"data-seed{seed}", seed)
    start = time.perf_counter()
    findings = audit(DataConfig(source="csv", path=str(table), image_size=size,
                                test_fraction=0.2, val_fraction=0.0), out / f"seed{seed}",
                     seed=seed)
    seconds = time.perf_counter() - start
    planted_pairs = {frozenset((c, o)) for c, o in copies.items()}
    found = [p for p in findings.duplicates if p.across]
    keys = [frozenset((_key(p.a.name, root), _key(p.b.name, root))) for p in found]
    hits = [k for k in keys if k in planted_pairs]
    own_exact = sum(1 for p, k in zip(found, keys, strict=True)
                    if k not in planted_pairs and p.exact)
    baseline = {}
    if phash:
        apart, test_names, train_names = phash_distances(table, size)
        for distance in (4, 8, 12):
            pairs = {frozenset((_key(test_names[i], root), _key(train_names[j], root)))
                     for i, j in zip(*np.nonzero(apart <= distance), strict=True)}
            right = pairs & planted_pairs
            baseline[f"phash<={distance}"] = {
                "recall": len(right) / len(planted_pairs),
                "precision": len(right) / max(len(pairs), 1), "found": len(pairs)}
    suspects = [s for s in findings.label_suspects if s.image.split == "train"]
    top = [_key(s.image.name, root) for s in suspects[:len(flipped)]]
    return {
        "seed": seed, "images": sum(map(sum, findings.counts.values())),
        "planted_duplicates": len(planted_pairs), "found_across": len(found),
        "duplicate_recall": len(set(hits)) / len(planted_pairs),
        "duplicate_precision_strict": len(hits) / max(len(found), 1),
        "duplicate_precision_own_exact_counted": (len(hits) + own_exact) / max(len(found), 1),
        "missed": sorted(f"{c} ({o})" for c, o in copies.items()
                         if frozenset((c, o)) not in set(hits)),
        "others": [{"pair": sorted(k), "similarity": round(p.similarity, 4),
                    "aligned": p.aligned, "exact": p.exact}
                   for p, k in zip(found, keys, strict=True) if k not in planted_pairs],
        "planted_flips": len(flipped),
        "label_precision_at_n": len(set(top) & set(flipped)) / max(len(flipped), 1),
        "label_accuracy": findings.label_accuracy,
        "threshold": findings.threshold.model_dump(), "features": findings.features,
        "seconds": seconds, "steps": findings.seconds, "phash": baseline,
    }


def phash_distances(table: Path, size: int) -> tuple[np.ndarray, list[str], list[str]]:
    """The perceptual-hash way: imagehash's pHash of each stored image and of its mirror
    image; the Hamming distance (of 64 bits) of every test image to every training image
    (the nearer of the training image and its mirror), and both splits' names."""
    import imagehash

    splits = load_data(DataConfig(source="csv", path=str(table), image_size=size,
                                  val_fraction=0.0))
    hashes = {}
    for split, images in (("train", splits.train), ("test", splits.test)):
        bits = []
        for array in images.images:
            picture = Image.fromarray(np.asarray(array))
            bits.append([imagehash.phash(p).hash.flatten() for p in
                         (picture, picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT))])
        hashes[split] = np.array(bits)
    train, test = hashes["train"], hashes["test"]
    apart = np.stack([np.minimum((train[:, 0] != h[0]).sum(1), (train[:, 1] != h[0]).sum(1))
                      for h in test])
    return apart, [str(n) for n in splits.test.names], [str(n) for n in splits.train.names]


def sample_grid(findings: Findings, cfg: DataConfig, target: Path, count: int = 32) -> Path:
    """`count` near pairs across the splits drawn at random (seed 0), side by side at 2x:
    what the count is made of, not only its most certain pairs (the audit page's)."""
    pool = Pool.of(load_data(cfg))
    pairs = [p for p in findings.duplicates if p.across and not p.exact]
    picked = np.random.default_rng(0).choice(len(pairs), min(count, len(pairs)), replace=False)
    tiles = []
    for k in picked:
        a, b = (pool.image(r.name) for r in (pairs[k].a, pairs[k].b))
        pair = np.concatenate([a, np.full((a.shape[0], 2, 3), 255, np.uint8), b], 1)
        tiles.append(np.pad(pair, ((3, 3), (3, 3), (0, 0)), constant_values=255))
    tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % 8)
    grid = np.concatenate([np.concatenate(tiles[i:i + 8], 1) for i in range(0, len(tiles), 8)])
    image = Image.fromarray(grid)
    image.resize((2 * image.width, 2 * image.height), Image.Resampling.NEAREST).save(target)
    return target


def cifar_run(data: str, out: Path) -> dict:
    cfg = DataConfig(source="folder", path=data, val_fraction=0.0)
    start = time.perf_counter()
    findings = audit(cfg, out / "cifar10")
    splits = load_data(cfg)
    sample_grid(findings, cfg, GRID)
    leak = findings.leakage
    return {"test_images": leak.test_images, "test_with_train_duplicate": leak.test_leaking,
            "share": leak.test_share, "paper_share": PAPER_SHARE,
            "exact_test_in_train": splits.overlap.test_in_train,
            "threshold": findings.threshold.model_dump(), "features": findings.features,
            "seconds": time.perf_counter() - start, "steps": findings.seconds}


def _write_list(target: Path, names: list[str]) -> str:
    target.write_text("\n".join(names) + "\n")
    return str(target)


def retrain_sets(seed: int, out: Path, size: int, root: Path, table: Path,
                 copies: dict[str, str], flipped: list[str]) -> dict[str, list[str]]:
    """Each variant's `--set`s for configs/finetune-folder.yaml on the planted table."""
    found_dir = out / f"seed{seed}"
    if not (found_dir / "findings.json").is_file():
        audit(DataConfig(source="csv", path=str(table), image_size=size, test_fraction=0.2,
                         val_fraction=0.0), found_dir, seed=seed)
    findings = Findings.model_validate_json((found_dir / "findings.json").read_text())
    leaks = [line for line in (found_dir / "exclude-suggested.txt").read_text().splitlines()
             if line and not line.startswith("#")]
    suspects = [s for s in findings.label_suspects if s.image.split == "train"][:len(flipped)]
    lists = out / f"data-seed{seed}"
    split = {r["path"]: r["split"] for r in csv.DictReader(table.open())}
    planted = [f"copies/{c}" if split[str(lists / "copies" / c)] == "train"  # its name
               else str(root / o) for c, o in copies.items()]
    relabel = lists / "relabel-found.csv"
    relabel.write_text("path,label\n" + "".join(f"{s.image.name},{s.suggested}\n"
                                                 for s in suspects if s.image.name not in leaks))
    base = [f"seed={seed}", "data.source=csv", f"data.path={table}"]
    return {
        "as-planted": base,
        "found-excluded": base + ["data.exclude=" + _write_list(
            lists / "exclude-found.txt",
            sorted(set(leaks) | {s.image.name for s in suspects}))],
        "found-relabelled": base + ["data.exclude=" + _write_list(lists / "exclude-leaks.txt",
                                                                  leaks),
                                    f"data.relabel={relabel}"],
        "planted-excluded": base + ["data.exclude=" + _write_list(
            lists / "exclude-planted.txt", planted + [str(root / f) for f in flipped])],
    }


def clean_test_accuracy(run_dir: Path, table: Path, copies: dict[str, str], root: Path
                        ) -> tuple[float, float, int]:
    """The best checkpoint's accuracy (mirror TTA, as the run evaluates) on the whole test
    split and on its clean images: neither a planted copy nor the original of one."""
    planted = set(copies) | {str(root / o) for o in copies.values()}
    rows = [r for r in csv.DictReader(table.open()) if r["split"] == "test"]
    predictor = Predictor.from_run(run_dir)
    images, kept, problems = predictor.read([Path(r["path"]) for r in rows])
    assert not problems, problems
    predicted = predictor.probabilities(images, tta="mirror").argmax(1).tolist()
    right = [predictor.classes[p] == r["label"] for p, r in zip(predicted, rows, strict=True)]
    clean = [ok for ok, r in zip(right, rows, strict=True)
             if Path(r["path"]).name not in planted and r["path"] not in planted]
    return sum(right) / len(right), sum(clean) / len(clean), len(clean)


def retrain_run(data: str, seeds: list[int], out: Path, size: int, results: dict,
                save: Callable[[], None]) -> None:
    """Every variant x seed, finished runs read back (the benchmark resumes)."""
    root = image_root(DataConfig(source="folder", path=data))
    entry = results.setdefault("retrain", {"config": str(FINETUNE.name), "runs": []})
    done = {(r["variant"], r["seed"]) for r in entry["runs"]}
    prepared: dict[int, tuple[Path, dict[str, str], dict[str, list[str]]]] = {}
    for variant in RETRAIN:
        for seed in seeds:
            if (variant, seed) in done:
                continue
            if seed not in prepared:  # each seed's data, audit and lists once
                table, copies, flipped = plant(root, out / f"data-seed{seed}", seed)
                prepared[seed] = (table, copies, retrain_sets(seed, out, size, root, table,
                                                              copies, flipped))
            table, copies, variants = prepared[seed]
            sets = variants[variant]
            run_dir = out / "retrain" / f"{variant}-seed{seed}"
            summary = Run(run_dir).summary()
            if summary is None:
                _, summary = train(load_config(FINETUNE, sets), run_dir=run_dir)
            whole, clean, clean_n = clean_test_accuracy(run_dir, table, copies, root)
            entry["runs"].append({
                "variant": variant, "seed": seed, "test_accuracy": summary["test_accuracy"],
                "test_accuracy_predictor": whole, "clean_test_accuracy": clean,
                "clean_test_images": clean_n, "train_images": summary["images"]["train"],
                "wall_seconds": summary["wall_seconds"],
                "warnings": summary.get("warnings", [])})
            save()
            print(json.dumps(entry["runs"][-1]), flush=True)
    for metric in ("test_accuracy", "clean_test_accuracy"):
        values = {v: [r[metric] for r in entry["runs"] if r["variant"] == v] for v in RETRAIN}
        entry[metric] = {v: {"mean": float(np.mean(x)), "std": float(np.std(x, ddof=1)),
                             "diff_vs_as_planted": welch(x, values["as-planted"]).diff,
                             "p_vs_as_planted": welch(x, values["as-planted"]).p}
                         for v, x in values.items() if len(x) > 1}
    save()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["planted", "cifar", "retrain"])
    parser.add_argument("--data", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--size", type=int, default=224, help="planted: stored image size")
    parser.add_argument("--phash", action="store_true",
                        help="planted: also imagehash's pHash (pip install imagehash)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-audit"))
    parser.add_argument("--results", type=Path,
                        default=Path("benchmarks/results/audit_planted.json"))
    args = parser.parse_args()
    args.out = args.out.resolve()  # the planted table names its images by absolute paths
    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    results["machine"] = machine_line("train.amp auto")
    name = Path(args.data).name.split(".")[0]
    if args.mode == "retrain":
        retrain_run(args.data, args.seeds, args.out, args.size, results,
                    lambda: atomic_write_json(args.results, results))
        print(json.dumps({k: results["retrain"].get(k) for k in
                          ("test_accuracy", "clean_test_accuracy")}, indent=1))
        return
    if args.mode == "cifar":
        results[name] = cifar_run(args.data, args.out)
        atomic_write_json(args.results, results)
        print(json.dumps(results[name], indent=1))
        return
    for seed in args.seeds:
        results[f"{name}/seed{seed}"] = planted_run(args.data, seed, args.out, args.size,
                                                    args.phash)
        atomic_write_json(args.results, results)
        r = results[f"{name}/seed{seed}"]
        print(f"seed {seed}: near duplicates recall {r['duplicate_recall']:.1%}, precision "
              f"{r['duplicate_precision_strict']:.1%} ({r['found_across']} found); label "
              f"errors {r['label_precision_at_n']:.1%} of the top {r['planted_flips']}; "
              f"{r['seconds']:.0f} s", flush=True)
    print(results["machine"])


if __name__ == "__main__":
    main()
