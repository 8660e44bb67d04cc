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
  is its measured error made non-increasing and joined in log error against log passes
  (passes + 1 for transfer, whose 0 passes is its head alone): `Curve`.
- **Shape from the priors, level from the trial**: a candidate whose trial scored s after
  `t` passes is forecast to err (1 - s) * e(f) / e(t) after the final run's `f` passes,
  e(.) the reference curves of its family, their log-ratios averaged with weights that
  fall with the distance in log training images and log input size from this data.
- **No trial yet**: the reference curves' own error at `f` passes, averaged the same way;
  a forecast that says a candidate cannot win (by a margin: `imgcls.fit.pipeline`) keeps
  it out of the race.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

PRIORS = Path(str(resources.files("imgcls.fit") / "learning_curves.json"))
OFFSET = {"transfer": 1.0, "scratch": 0.0}
MIN_PASSES = 0.02  # a scratch run shorter than this has no curve to stand on
TAIL = 0.5  # beyond the longest measured run, the error falls at this share of its last slope
SIZE_WEIGHT = 0.5  # input size counts half as much as the data's size in the distance
# How far apart two candidates' forecasts from the priors alone may be from their real gap:
# on the curves' own data, the scatter between seeds and lengths; away from it, forecasting
# each shipped point from the curves of the other data sets alone, the gap between families
# erred 0.08 at distance 0.59 (each flower set from the other) and 0.18 at 2.8 (CIFAR-10)
SPREAD_NEAR = 0.02
SPREAD_PER_DISTANCE = 0.1
# How surely the curves' shape carries a trial: the log error a trial's forecast misses by,
# per unit of log passes it extrapolates, SHAPE_NEAR plus SHAPE_PER_ROOT_DISTANCE per root of
# the distance to the nearest curve (`benchmarks/learning_curves.py --shape`: 0.00-0.07 on
# the curves' own data; forecasting each data set from the other data sets' curves alone,
# 0.08-0.23 at distance 0.6-0.9 and 0.23-0.39 at 2.8-3.1: growing slower than the distance)
SHAPE_NEAR = 0.02
SHAPE_PER_ROOT_DISTANCE = 0.165


def log_passes(family: str, passes: float) -> float:
    """The axis the curves are joined on: log (passes + the family's offset)."""
    return math.log(max(max(passes, 0.0) + OFFSET[family], MIN_PASSES))


@dataclass(frozen=True)
class Curve:
    """One reference curve: the measured error against passes, made non-increasing (pool
    adjacent violators: noise between seeds and lengths must not make more training look
    worse), joined linearly in log error against log (passes + offset), and continued
    before its first point along its first segment and beyond its last at TAIL times its
    last segment's slope (a learning curve flattens toward a floor), never steeper than
    its average slope: exact where it was measured, cautious where it was not."""

    family: str
    data: str
    candidate: str
    input_size: int
    train_images: int
    log_x: tuple[float, ...]
    log_error: tuple[float, ...]

    def error(self, passes: float) -> float:
        x = log_passes(self.family, passes)
        lx, ly = self.log_x, self.log_error
        average = (ly[-1] - ly[0]) / (lx[-1] - lx[0])
        if x > lx[-1]:  # flattening toward a floor: half the last segment's slope
            slope = TAIL * max((ly[-1] - ly[-2]) / (lx[-1] - lx[-2]), average)
            return math.exp(ly[-1] + min(slope, 0.0) * (x - lx[-1]))
        if x < lx[0]:
            slope = max((ly[1] - ly[0]) / (lx[1] - lx[0]), average)
            return math.exp(ly[0] + min(slope, 0.0) * (x - lx[0]))
        return math.exp(float(np.interp(x, lx, ly)))

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
    trial_weight: float | None = None  # the trial's share against the priors alone

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)

    def describe(self) -> str:
        basis = ("from the priors alone" if self.trial_score is None else
                 f"from its trial's {self.trial_score:.4f} after {self.trial_passes:.2f} "
                 "passes")
        if self.trial_weight is not None and self.trial_weight < 0.995:
            basis += f", weighing {self.trial_weight:.0%} against the priors alone"
        return f"{self.score:.4f} after {self.passes:.2f} passes ({basis})"


def _non_increasing(values: list[float], weights: list[float]) -> list[float]:
    """The closest non-increasing sequence in least squares (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [value, weight, count]
    for value, weight in zip(values, weights, strict=True):
        blocks.append([value, weight, 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            v2, w2, n2 = blocks.pop()
            v1, w1, n1 = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    return [v for v, _, n in blocks for _ in range(int(n))]


def fit_curves(points: list[dict]) -> list[Curve]:
    """A curve for each (data, candidate) measured at 3 or more different passes (points
    at the same passes, from several seeds, averaged)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for p in points:
        if p.get("test_accuracy") is not None:
            groups.setdefault((p["data"], p["candidate"]), []).append(p)
    curves = []
    for (data, candidate), group in sorted(groups.items()):
        family = group[0]["family"]
        by_passes: dict[float, list[float]] = {}
        for p in group:
            by_passes.setdefault(round(p["passes"], 3), []).append(1.0 - p["test_accuracy"])
        if len(by_passes) < 3:
            continue
        xs = sorted(by_passes)
        errors = _non_increasing([float(np.mean(by_passes[x])) for x in xs],
                                 [len(by_passes[x]) for x in xs])
        log_x = tuple(log_passes(family, x) for x in xs)
        log_error = tuple(math.log(max(e, 1e-4)) for e in errors)
        images = round(float(np.median([p["train_images"] for p in group])))
        curves.append(Curve(family, data, candidate, group[0]["input_size"], images, log_x,
                            log_error))
    return curves


@cache
def shipped_curves(path: Path = PRIORS) -> tuple[Curve, ...]:
    """The package's reference curves (fitted once per process)."""
    return tuple(fit_curves(json.loads(path.read_text())["points"]))


def _weights(curves: list[Curve], train_images: int, input_size: int) -> np.ndarray:
    d = np.array([c.distance(train_images, input_size) for c in curves])
    w = 1.0 / (d + 0.1) ** 2
    return w / w.sum()


def spread(families: list[str], train_images: int, input_sizes: list[int],
           curves: tuple[Curve, ...] | None = None) -> float:
    """The standard error of the gap between priors-only forecasts of candidates of
    `families` at `input_sizes` px: SPREAD_NEAR plus SPREAD_PER_DISTANCE per unit of the
    distance from this data to the nearest curve, of the farther candidate (inf where a
    family has no curve)."""
    curves = shipped_curves() if curves is None else curves
    return spread_at(max(nearest(family, train_images, size, curves)
                         for family, size in zip(families, input_sizes, strict=True)))


def spread_at(distance: float) -> float:
    """The spread of priors-only forecasts at `distance` from the nearest curve."""
    return SPREAD_NEAR + SPREAD_PER_DISTANCE * distance


def nearest(family: str, train_images: int, input_size: int, curves: tuple[Curve, ...]
            ) -> float:
    """The distance from this data at `input_size` px to the nearest curve of `family`
    (inf where there is none)."""
    return min((c.distance(train_images, input_size) for c in curves if c.family == family),
               default=math.inf)


def expected_gain(gap: float, spread: float) -> float:
    """E[max(0, G)] for a gap G ~ Normal(`gap`, `spread`): what choosing by a measurement
    is worth against a candidate forecast `gap` ahead (below, when negative) of the
    leader, if the measurement were exact."""
    if math.isinf(spread):
        return math.inf
    if spread <= 0:
        return max(gap, 0.0)
    z = gap / spread
    return gap * 0.5 * math.erfc(-z / math.sqrt(2)) + spread * math.exp(-z * z / 2) / math.sqrt(
        2 * math.pi)


def _ratio(curves: list[Curve], w: np.ndarray, start: float, end: float) -> float:
    return float(np.exp(w @ np.log([c.error(end) / c.error(start) for c in curves])))


def carry(family: str, train_images: int, input_size: int, start: float, end: float,
          curves: tuple[Curve, ...]) -> float | None:
    """The factor the curves of `family` say the error falls by from `start` to `end`
    passes (None without a curve of the family)."""
    own = [c for c in curves if c.family == family]
    return _ratio(own, _weights(own, train_images, input_size), start, end) if own else None


def forecast(family: str, input_size: int, train_images: int, classes: int, passes: float,
             trial_passes: float | None = None, trial_score: float | None = None,
             curves: tuple[Curve, ...] | None = None, val_images: int | None = None
             ) -> Forecast | None:
    """The test accuracy a `family` candidate at `input_size` px reaches after `passes` over
    `train_images` images (of its last stage), from its trial's score after `trial_passes`
    where there is one; None where no reference curve of the family exists.

    A trial scored on `val_images` images is a noisy measure (binomial: 2.6 points on 310
    images at 71%), and the curves' shape carries it the less surely the farther it
    extrapolates, in log passes, from curves of other data or sizes (SHAPE_*); the priors
    alone are an uncertain measure too (`spread`). The two forecasts are weighed by their
    precisions, so near the reference data a lucky trial does not carry the forecast far
    off its curve (fastnet94's 0.711 on 310 flowers5-128 validation images alone forecast
    78.7%; it reached 74.7%), nor a short trial of a size without its own curve across 15x
    its passes (fastnet94 at 64 px: 0.699 after 1.33 passes carried to 81%; it reached
    75.7% after 18.8), and far from the reference data the trial decides."""
    shipped = shipped_curves() if curves is None else curves
    curves = [c for c in shipped if c.family == family]
    if not curves:
        return None
    w = _weights(curves, train_images, input_size)
    chance = 1.0 - 1.0 / max(classes, 2)
    prior = float(np.exp(w @ np.log([c.error(passes) for c in curves])))
    if trial_score is None:
        return Forecast(1.0 - min(prior, chance), passes)
    ratio = _ratio(curves, w, trial_passes, passes)
    carried, weight = (1.0 - trial_score) * ratio, 1.0
    if val_images:
        far = nearest(family, train_images, input_size, shipped)
        noise = ratio * math.sqrt(trial_score * (1.0 - trial_score) / val_images)
        reach = abs(log_passes(family, passes) - log_passes(family, trial_passes))
        shape = carried * (SHAPE_NEAR + SHAPE_PER_ROOT_DISTANCE * math.sqrt(far)) * reach
        doubt = spread_at(far)
        weight = doubt**2 / (doubt**2 + noise**2 + shape**2) if noise + shape > 0 else 1.0
    error = weight * carried + (1.0 - weight) * prior
    return Forecast(1.0 - min(max(error, 0.0), chance), passes, trial_passes, trial_score,
                    weight)
