"""Statistics fit for a handful of seeds: t-based confidence intervals and Welch's t-test.

Three to five seeds are typical; a normal approximation would claim too much, so the
intervals use Student's t, and two variants are compared with Welch's test, which does not
assume equal spread (a bigger batch size can change the run-to-run spread).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as sps


@dataclass(frozen=True)
class Spread:
    n: int
    mean: float
    std: float | None  # sample standard deviation (n - 1); None for one value
    ci_low: float | None
    ci_high: float | None

    @property
    def half_width(self) -> float | None:
        return None if self.ci_high is None else (self.ci_high - self.ci_low) / 2


def describe(values: Sequence[float], confidence: float = 0.95) -> Spread:
    n = len(values)
    if n == 0:
        raise ValueError("describe() needs at least one value")
    mean = math.fsum(values) / n
    if n == 1:
        return Spread(1, mean, None, None, None)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Spread(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Difference:
    """`a` minus `b`, with Welch's t-test (two-sided)."""

    diff: float
    ci_low: float | None
    ci_high: float | None
    t: float | None
    df: float | None
    p: float | None  # None: not testable (one seed on a side, or no spread at all)

    @property
    def half_width(self) -> float | None:
        return None if self.ci_high is None else (self.ci_high - self.ci_low) / 2


def welch(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Difference:
    sa, sb = describe(a), describe(b)
    diff = sa.mean - sb.mean
    if sa.std is None or sb.std is None:
        return Difference(diff, None, None, None, None, None)
    va, vb = sa.std**2 / sa.n, sb.std**2 / sb.n
    se = math.sqrt(va + vb)
    if se == 0:
        return Difference(diff, diff, diff, None, None, None)
    t = diff / se
    df = (va + vb) ** 2 / (va**2 / (sa.n - 1) + vb**2 / (sb.n - 1))
    p = 2 * float(sps.t.sf(abs(t), df))
    half = float(sps.t.ppf(0.5 + confidence / 2, df)) * se
    return Difference(diff, diff - half, diff + half, t, df, p)


def sentence(name: str, baseline: str, d: Difference, n: tuple[int, int],
             scale: float = 100.0, unit: str = "points", higher_is_better: bool = True,
             alpha: float = 0.05) -> str:
    """The comparison in plain words, e.g. 'translate beats no-aug by 4.1 +- 1.2 points
    (95% CI), p = 0.003 (Welch's t-test, 4 vs 4 seeds)'."""
    size = abs(d.diff) * scale
    seeds = f"{n[0]} vs {n[1]} seeds"
    if d.p is None:
        why = ("one seed on a side: run `repeats: 2` or more to test it" if min(n) < 2
               else "no run-to-run spread at all, so no test applies")
        direction = "above" if d.diff > 0 else "below" if d.diff < 0 else "equal to"
        return f"{name} is {size:.2f} {unit} {direction} {baseline} ({seeds}; {why})"
    better = (d.diff > 0) == higher_is_better
    ci = f"{size:.2f} +- {d.half_width * scale:.2f} {unit} (95% CI)"
    test = f"p = {d.p:.3g} (Welch's t-test, {seeds})"
    if d.p < alpha:
        verb = "beats" if better else "is worse than"
        return f"{name} {verb} {baseline} by {ci}, {test}"
    return (f"no significant difference: {name} is {ci} "
            f"{'above' if d.diff > 0 else 'below'} {baseline}, {test}")
