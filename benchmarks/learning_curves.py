"""The learning curves behind `imgcls fit`'s forecasts: each candidate family's test accuracy
against the passes over the training data of its last (resized) stage, measured on the
repository's reference data, written as the package's priors
(src/imgcls/fit/learning_curves.json, read by `imgcls.fit.forecast`).

    python benchmarks/learning_curves.py --datasets ../shared/datasets
    python benchmarks/learning_curves.py --datasets ../shared/datasets \
        --import-fit benchmarks/results/fit_budget.json   # + the fit benchmark's runs
    python benchmarks/learning_curves.py --spread   # how far the priors err on unseen data
    python benchmarks/learning_curves.py --shape    # how far their shape carries a trial

Each point is one run of a candidate exactly as `imgcls fit` builds it (`resized`: its last
stage cut to the passes' optimizer steps, the lr schedule ending there, the test with the
candidate's TTA), one seed. 0 passes of a transfer candidate is its head alone on cached
features. Finished points are kept in the file: rerun the same command to continue. Accuracy
against passes does not depend on the machine's speed, so points from another CPU (the fit
benchmark's runs, `--import-fit`) join as they are, their machine recorded."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from imgcls.data import load_data
from imgcls.fit import forecast
from imgcls.fit.candidates import Candidate, candidates_for, resized
from imgcls.fit.cost import steps_per_epoch
from imgcls.fit.forecast import PRIORS
from imgcls.fit.pipeline import base_config
from imgcls.hardware import machine_line
from imgcls.tracking.io import atomic_write_json
from imgcls.train import train

NO_CAP = 10**6  # classes: a forecast not held below chance (the points' own class counts vary)
# data archive (`NAME@N`: a stratified subset of N training images) -> candidate -> passes
# of its last stage
GRID: dict[str, dict[str, list[float]]] = {
    "flower_photos-256": {"lite0-transfer-224px": [0, 1, 3],
                          "lite0-transfer-128px": [0, 1, 3], "fastnet94-32px": [3, 10, 30]},
    "cifar10-jpeg": {"fastnet94-32px": [0.16, 0.33, 0.65, 1.3],
                     "lite0-transfer-64px": [0, 0.1, 1.0]},
    "flowers5-128": {"fastnet94-32px": [1, 3, 10], "lite0-transfer-128px": [0, 1]},
}


def _candidate(archive: Path, subset: int | None, name: str) -> tuple[Candidate, int]:
    base, native, _ = base_config(archive, [])
    splits = load_data(base.data)
    found = {c.name: c for c in candidates_for(base, native, len(splits.train),
                                               len(splits.classes), "cpu")}
    if name not in found:
        raise SystemExit(f"{archive.name}: no candidate {name} (there are {', '.join(found)})")
    return found[name], subset or len(splits.train)


def measure(archive: Path, subset: int | None, candidate: Candidate, images: int,
            passes: float, work: Path) -> dict:
    """One run of `candidate` for `passes` over `images` training images."""
    batch = candidate.config.train.batch_size
    per_epoch = steps_per_epoch(images, batch)
    steps = max(1, round(passes * per_epoch)) if passes else None
    cfg = resized(candidate, math.ceil(passes), subset, 0, f"curve-{candidate.name}", True,
                  steps, stretch=0.0)
    _, summary = train(cfg, work / f"{archive.name}-{subset}-{candidate.name}-{passes}")
    return {"candidate": candidate.name, "family": candidate.family,
            "input_size": candidate.input_size, "train_images": summary["images"]["train"],
            "passes": (steps / per_epoch) if steps else 0.0,
            "test_accuracy": summary["test_accuracy"],
            "wall_seconds": summary["wall_seconds"], "seed": 0}


def import_fit(path: Path) -> list[dict]:
    """The fit benchmark's runs as points: each one's winner trained for its final passes."""
    results = json.loads(path.read_text())
    points = []
    for key, r in results["runs"].items():
        data = key.split("/")[0]
        points.append({"data": data, "candidate": r["winner"],
                       "family": "transfer" if "transfer" in r["winner"] else "scratch",
                       "input_size": int(r["winner"].rsplit("-", 1)[1][:-2]),
                       "train_images": r["final_images"], "passes": r["final_epochs"],
                       "test_accuracy": r["test_accuracy"], "source": f"{path.name} {key}",
                       "machine": results["machine"]})
    return points


def _left_out(points: list[dict]):
    """Each data set's points with the curves of the other data sets alone: what the
    priors know of data they never saw."""
    for data in sorted({p["data"] for p in points}):
        others = tuple(forecast.fit_curves([p for p in points if p["data"] != data]))
        own = [p for p in points if p["data"] == data and p.get("test_accuracy") is not None]
        yield data, others, own


def spread_table(points: list[dict]) -> list[dict]:
    """How far the priors alone err on a data set they never saw: for each data set, its
    points forecast from the other data sets' curves alone, and the error of the forecast
    gap between every two of its points of different candidates (RMS), beside the distance
    `forecast.spread` reads (the farther of the two candidates' nearest curves). The
    measurement behind `forecast.SPREAD_PER_DISTANCE`."""
    rows = []
    for data, others, own in _left_out(points):
        errors, distances = [], []
        for i, p in enumerate(own):
            for q in own[i + 1:]:
                if p["candidate"] == q["candidate"]:
                    continue
                f = [forecast.forecast(x["family"], x["input_size"], x["train_images"],
                                       NO_CAP, x["passes"], curves=others) for x in (p, q)]
                if None in f:
                    continue
                errors.append((f[0].score - f[1].score)
                              - (p["test_accuracy"] - q["test_accuracy"]))
                distances.append(max(forecast.nearest(x["family"], x["train_images"],
                                                      x["input_size"], others)
                                     for x in (p, q)))
        if errors:
            rows.append({"data": data, "pairs": len(errors),
                         "distance": sum(distances) / len(distances),
                         "gap_rms": math.sqrt(sum(e * e for e in errors) / len(errors))})
    return rows


def shape_table(points: list[dict]) -> list[dict]:
    """How far a curve's shape carries a trial: every point taken as a trial and forecast
    by the ratio of the curves' errors (no weighing against the priors) to each longer
    point of its candidate (1.5x the passes or more), once from all the curves and once
    from the other data sets' curves alone; per data set and candidate, the RMS miss in
    log error per unit of log passes extrapolated, beside the distance to the nearest
    curve. The measurement behind `forecast.SHAPE_NEAR` and `SHAPE_PER_ROOT_DISTANCE`."""
    every = tuple(forecast.fit_curves(points))
    rows = []
    for data, others, own in _left_out(points):
        for source, curves in (("own", every), ("left out", others)):
            misses: dict[str, list[tuple[float, float]]] = {}
            for p in own:
                for q in own:
                    if p["candidate"] != q["candidate"] or q["passes"] < 1.5 * p["passes"]:
                        continue
                    ratio = forecast.carry(p["family"], p["train_images"], p["input_size"],
                                           p["passes"], q["passes"], curves)
                    if ratio is None:
                        continue
                    reach = abs(forecast.log_passes(q["family"], q["passes"])
                                - forecast.log_passes(p["family"], p["passes"]))
                    miss = math.log((1 - q["test_accuracy"])
                                    / ((1 - p["test_accuracy"]) * ratio))
                    misses.setdefault(p["candidate"], []).append((miss, reach))
            for candidate, pairs in sorted(misses.items()):
                x = next(p for p in own if p["candidate"] == candidate)
                rows.append({"data": data, "candidate": candidate, "curves": source,
                             "pairs": len(pairs),
                             "distance": forecast.nearest(x["family"], x["train_images"],
                                                          x["input_size"], curves),
                             "per_log_pass": math.sqrt(sum(m * m for m, _ in pairs)
                                                       / sum(r * r for _, r in pairs))})
    return rows


def _shape_fit(rows: list[dict]) -> float:
    """The least-squares slope of the rows' miss per log pass above SHAPE_NEAR against the
    root of their distance."""
    roots = [math.sqrt(r["distance"]) for r in rows]
    above = [r["per_log_pass"] - forecast.SHAPE_NEAR for r in rows]
    return sum(a * b for a, b in zip(roots, above, strict=True)) / sum(a * a for a in roots)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--only", nargs="*", help="data keys of GRID to measure")
    parser.add_argument("--import-fit", type=Path)
    parser.add_argument("--work", type=Path, default=Path("runs/curves"))
    parser.add_argument("--out", type=Path, default=PRIORS)
    parser.add_argument("--spread", action="store_true",
                        help="only print how far the priors err on a data set left out")
    parser.add_argument("--shape", action="store_true",
                        help="only print how far the curves' shape carries a trial")
    args = parser.parse_args()
    saved = json.loads(args.out.read_text()) if args.out.is_file() else {"points": []}
    points = saved["points"]
    if args.spread:
        for row in spread_table(points):
            print(f"{row['data']}: forecast gaps from the other data sets' curves err "
                  f"{row['gap_rms']:.3f} (RMS over {row['pairs']} pairs) at distance "
                  f"{row['distance']:.2f}; spread() gives "
                  f"{forecast.spread_at(row['distance']):.3f}")
        return
    if args.shape:
        rows = shape_table(points)
        for row in rows:
            print(f"{row['data']} {row['candidate']} ({row['curves']} curves, distance "
                  f"{row['distance']:.2f}, {row['pairs']} pairs): misses "
                  f"{row['per_log_pass']:.3f} in log error per log pass")
        print(f"fit: {forecast.SHAPE_NEAR} + {_shape_fit(rows):.3f} x root distance "
              f"(shipped: {forecast.SHAPE_PER_ROOT_DISTANCE})")
        return
    if args.import_fit:
        have = {p.get("source") for p in points}
        points += [p for p in import_fit(args.import_fit) if p["source"] not in have]
        atomic_write_json(args.out, saved)
    machine = machine_line("train.amp auto")
    for data, grid in GRID.items():
        if args.only and data not in args.only:
            continue
        name, _, subset = data.partition("@")
        archive = args.datasets / f"{name}.tar.gz"
        for candidate_name, passes_list in grid.items():
            candidate, images = _candidate(archive, int(subset) if subset else None,
                                           candidate_name)
            for passes in passes_list:
                source = f"{Path(__file__).name} {data} {candidate_name} {passes}"
                if any(p.get("source") == source for p in points):
                    continue
                point = measure(archive, int(subset) if subset else None, candidate, images,
                                passes, args.work)
                points.append({"data": data, **point, "source": source, "machine": machine})
                atomic_write_json(args.out, saved)
                print(f"{data} {candidate_name} {point['passes']:.2f} passes over "
                      f"{point['train_images']:,}: test {point['test_accuracy']:.4f} "
                      f"({point['wall_seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
