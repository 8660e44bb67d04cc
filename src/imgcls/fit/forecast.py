"""What a candidate will score at the end of the final run, not at the end of its trial.

A trial is shorter than the final run, and families grow differently with time: a head on
ImageNet features is good at once and gains little from more passes, fastnet94 from scratch
starts near chance and keeps climbing on 49,000 images but levels off on 3,000. Ranking
trials by their own score picked ImageNet transfer on CIFAR-10 at 15 and 30 minutes, 4-5
points below the fast recipe (docs/fit.md). So `imgcls fit` ranks forecasts:

- **Priors**: learning curves measured on the repository's reference data
  (benchmarks/learning_curves.py writes them into this package's learning_curves.json):
  test accuracy against the passes over the training data of a candidate's last stage (0
  for a transfer candidate's head alone), per family, data set and input size. Each curve
  is fitted as error = floor + scale * (passes + offset) ^ -power (offset 1 for transfer,
  whose 0 passes is its head; 0 from scratch).
- **Shape from the priors, level from the trial**: a candidate whose trial scored s after
  `t` passes is forecast to err (1 - s) * e(f) / e(t) after the final run's `f` passes,
  e(.) the reference curves of its family, their log-ratios averaged with weights that
  fall with the distance in log training images and log input size from this data.
- **No trial yet**: the reference curves' own error at `f` passes, averaged the same way;
  a forecast that says a candidate cannot win (PRUNE_MARGIN below the best) keeps it out
  of the race.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

PRIORS = Path(str(resources.files("imgcls.fit") / "learning_curves.json"))
OFFSET = {"transfer": 1.0, "scratch": 0.0}
MIN_PASSES = 0.02  # a scratch run shorter than this has no curve to stand on
SIZE_WEIGHT = 0.5  # input size counts half as much as the data's size in the distance


@dataclass(frozen=True)
class Curve:
    """One reference curve: error = floor + scale * (passes + offset) ** -power."""

    family: str
    data: str
    candidate: str
    input_size: int
    train_images: int
    floor: float
    scale: float
    power: float
    points: int

    def error(self, passes: float) -> float:
        x = max(passes, 0.0) + OFFSET[self.family]
        return self.floor + self.scale * max(x, MIN_PASSES) ** -self.power

    def distance(self, train_images: int, input_size: int) -> float:
        return (abs(math.log(train_images / self.train_images))
                + SIZE_WEIGHT * abs(math.log(input_size / self.input_size)))


@dataclass(frozen=True)
class Forecast:
    """A candidate's forecast test accuracy after `passes` of its last stage, and what it
    rests on (`trial_passes`/`trial_score` None: the priors alone)."""

    score: float
    passes: float
    trial_passes: float | None = None
    trial_score: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)

    def describe(self) -> str:
        basis = ("from the priors alone" if self.trial_score is None else
                 f"from its trial's {self.trial_score:.4f} after {self.trial_passes:.2f} "
                 "passes")
        return f"{self.score:.4f} after {self.passes:.2f} passes ({basis})"


def _fit(family: str, passes: list[float], accuracy: list[float]) -> tuple[float, ...] | None:
    x = np.asarray(passes, dtype=float) + OFFSET[family]
    y = 1.0 - np.asarray(accuracy, dtype=float)

    def law(x, floor, scale, power):
        return floor + scale * np.maximum(x, MIN_PASSES) ** -power

    start = (max(0.0, y.min() * 0.8), max(1e-3, y.max() - y.min() * 0.8), 0.5)
    try:
        with warnings.catch_warnings():  # 3 points leave no covariance; it is not used
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(law, x, y, p0=start, bounds=([0, 0, 0.05], [0.95, 5, 3]),
                                  maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    return tuple(float(p) for p in params)


def fit_curves(points: list[dict]) -> list[Curve]:
    """A curve for each (data, candidate) with points at 3 or more different passes."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for p in points:
        if p.get("test_accuracy") is not None:
            groups.setdefault((p["data"], p["candidate"]), []).append(p)
    curves = []
    for (data, candidate), group in sorted(groups.items()):
        family = group[0]["family"]
        if len({round(p["passes"], 3) for p in group}) < 3:
            continue
        params = _fit(family, [p["passes"] for p in group],
                      [p["test_accuracy"] for p in group])
        if params is not None:
            images = round(float(np.median([p["train_images"] for p in group])))
            curves.append(Curve(family, data, candidate, group[0]["input_size"], images,
                                *params, len(group)))
    return curves


@cache
def shipped_curves(path: Path = PRIORS) -> tuple[Curve, ...]:
    """The package's reference curves (fitted once per process)."""
    return tuple(fit_curves(json.loads(path.read_text())["points"]))


def _weights(curves: list[Curve], train_images: int, input_size: int) -> np.ndarray:
    d = np.array([c.distance(train_images, input_size) for c in curves])
    w = 1.0 / (d + 0.1) ** 2
    return w / w.sum()


def forecast(family: str, input_size: int, train_images: int, classes: int, passes: float,
             trial_passes: float | None = None, trial_score: float | None = None,
             curves: tuple[Curve, ...] | None = None) -> Forecast | None:
    """The test accuracy a `family` candidate at `input_size` px reaches after `passes` over
    `train_images` images (of its last stage), from its trial's score after `trial_passes`
    where there is one; None where no reference curve of the family exists."""
    curves = [c for c in (shipped_curves() if curves is None else curves) if c.family == family]
    if not curves:
        return None
    w = _weights(curves, train_images, input_size)
    chance = 1.0 - 1.0 / max(classes, 2)
    if trial_score is None:
        error = float(np.exp(w @ np.log([c.error(passes) for c in curves])))
    else:
        ratio = w @ np.log([c.error(passes) / c.error(trial_passes) for c in curves])
        error = (1.0 - trial_score) * float(np.exp(ratio))
    score = 1.0 - min(max(error, 0.0), chance)
    return Forecast(score, passes, trial_passes, trial_score)
