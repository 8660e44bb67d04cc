"""`imgcls fit`'s forecasts: learning curves fitted to points, a trial's score carried to
the final run's passes along its family's curves, the shipped priors, and the pruning of
candidates that cannot win."""

from __future__ import annotations

import math

import pytest

from imgcls.fit.forecast import (
    SPREAD_NEAR,
    expected_gain,
    fit_curves,
    forecast,
    shipped_curves,
    spread,
)


def _law(passes: float, floor: float = 0.1, scale: float = 0.5, power: float = 0.8,
         offset: float = 0.0) -> float:
    return floor + scale * (passes + offset) ** -power


def _points(data: str, family: str, images: int, size: int, level: float = 1.0,
            passes=(0.2, 0.5, 1, 2, 4, 8)) -> list[dict]:
    offset = 1.0 if family == "transfer" else 0.0
    return [{"data": data, "candidate": f"{family}-{size}px", "family": family,
             "input_size": size, "train_images": images, "passes": p,
             "test_accuracy": 1 - level * _law(p, offset=offset)} for p in passes]


def test_a_curve_is_exact_where_measured_and_cautious_beyond():
    (curve,) = fit_curves(_points("a", "scratch", 10_000, 32))
    for passes in (0.2, 1, 8):  # measured
        assert curve.error(passes) == pytest.approx(_law(passes), rel=1e-9)
    for passes in (0.3, 3):  # between: joined in log-log
        assert curve.error(passes) == pytest.approx(_law(passes), rel=0.02)
    assert _law(64) < curve.error(64) < curve.error(8)  # beyond: still falling, not too fast
    assert fit_curves(_points("a", "scratch", 10_000, 32, passes=(1, 2))) == []  # too few


def test_noise_never_makes_more_training_look_worse():
    points = _points("a", "transfer", 3_000, 128, passes=(0, 1, 3, 10, 30))
    points[2]["test_accuracy"] -= 0.05  # a bad seed at 3 passes
    (curve,) = fit_curves(points)
    errors = [curve.error(p) for p in (0, 1, 2, 3, 5, 10, 30, 100)]
    assert errors == sorted(errors, reverse=True)


def test_a_trial_is_carried_along_its_familys_curve():
    curves = tuple(fit_curves(_points("ref", "scratch", 10_000, 32)))
    # data twice as hard as the reference, the same shape: a trial after half a pass
    trial = 1 - 2 * _law(0.5)
    found = forecast("scratch", 32, 10_000, 10, 8.0, 0.5, trial, curves)
    assert found.score == pytest.approx(1 - 2 * _law(8.0), abs=0.01)
    assert found.score > trial + 0.3  # far above the trial's own score
    alone = forecast("scratch", 32, 10_000, 10, 8.0, curves=curves)  # no trial: the priors
    assert alone.score == pytest.approx(1 - _law(8.0), abs=0.01)
    assert alone.trial_score is None and "priors alone" in alone.describe()
    assert forecast("transfer", 32, 10_000, 10, 8.0, curves=curves) is None  # no curve


def test_a_noisy_trial_is_weighed_against_the_priors():
    """Near the reference data (spread 2 points) a trial scored on 300 validation images
    (2.3 points of noise, 1.7 carried to the final run) counts about half; far from it (10
    times the images: spread 25 points) it decides; scored on many images it decides too."""
    curves = tuple(fit_curves(_points("ref", "scratch", 10_000, 32)))
    lucky = 1 - 0.7 * _law(4)  # a trial well above the curve after 4 passes
    carried = forecast("scratch", 32, 10_000, 10, 8.0, 4, lucky, curves).score
    prior = forecast("scratch", 32, 10_000, 10, 8.0, curves=curves).score
    near = forecast("scratch", 32, 10_000, 10, 8.0, 4, lucky, curves, val_images=300)
    assert prior < near.score < carried and 0.3 < near.trial_weight < 0.7
    assert "against the priors" in near.describe()
    far = forecast("scratch", 32, 100_000, 10, 8.0, 4, lucky, curves, val_images=300)
    assert far.trial_weight > 0.98
    many = forecast("scratch", 32, 10_000, 10, 8.0, 4, lucky, curves, val_images=100_000)
    assert many.trial_weight > 0.9


def test_a_trial_carried_far_from_its_own_curve_weighs_less():
    """A trial at 64 px, where the only curve is at 32 px, carried 30x its passes rests on
    a shape measured at another size: it counts less than carried 2x, and less than a
    trial on its own curve carried as far."""
    curves = tuple(fit_curves(_points("ref", "scratch", 3_000, 32, passes=(1, 3, 10, 30))))
    trial = 1 - 0.8 * _law(1)  # ahead of the curve after one pass

    def weight(size: int, passes: float) -> float:
        return forecast("scratch", size, 3_000, 5, passes, 1.0, trial, curves,
                        val_images=350).trial_weight

    assert weight(64, 30) < weight(64, 2) - 0.1
    assert weight(64, 30) < weight(32, 30) - 0.1
    far = forecast("scratch", 64, 3_000, 5, 30, 1.0, trial, curves, val_images=350)
    carried = forecast("scratch", 64, 3_000, 5, 30, 1.0, trial, curves)
    prior = forecast("scratch", 64, 3_000, 5, 30, curves=curves)
    assert prior.score < far.score < carried.score


def test_the_nearest_reference_data_weighs_most():
    small = _points("small", "scratch", 2_000, 32, passes=(1, 3, 10, 30))
    for p in small:  # a few images: levels off early
        p["test_accuracy"] = 0.75 - 0.3 / p["passes"]
    curves = tuple(fit_curves(small + _points("big", "scratch", 50_000, 32)))
    trial = 0.45
    near_small = forecast("scratch", 32, 2_500, 5, 30, 1.0, trial, curves).score
    near_big = forecast("scratch", 32, 40_000, 5, 30, 1.0, trial, curves).score
    assert near_big > near_small + 0.1


def test_the_shipped_priors_see_cifars_crossover():
    """On CIFAR-10, a head on ImageNet features beats fastnet94 from scratch in a short
    final run, and loses to it in a long one (docs/fit.md: 5 against 15-30 minutes); the
    trials alone ranked transfer first at every budget."""
    curves = shipped_curves()
    assert {c.family for c in curves} == {"scratch", "transfer"}

    def scores(scratch_passes: float, transfer_passes: float) -> tuple[float, float]:
        scratch = forecast("scratch", 32, 49_000, 10, scratch_passes, 0.33, 0.432, curves)
        transfer = forecast("transfer", 64, 49_000, 10, transfer_passes, 0.0, 0.71, curves)
        return scratch.score, transfer.score

    short_scratch, short_transfer = scores(0.8, 0.35)  # 5 minutes on a 2-core Zen 3
    long_scratch, long_transfer = scores(6.5, 4.0)  # 30 minutes
    assert short_transfer > short_scratch + 0.02
    assert long_scratch > long_transfer + 0.02


def test_what_measuring_a_rival_is_expected_to_gain():
    """E[max(0, G)], G ~ Normal(gap, spread): checked against a sum over a fine grid."""
    for gap, sd in ((0.0, 0.02), (-0.03, 0.02), (0.01, 0.05), (-0.2, 0.02)):
        step = sd / 200
        grid = [gap + sd * k / 200 for k in range(-2400, 2401)]
        dens = [math.exp(-((g - gap) / sd) ** 2 / 2) / (sd * math.sqrt(2 * math.pi))
                for g in grid]
        numeric = sum(max(g, 0.0) * d * step for g, d in zip(grid, dens, strict=True))
        assert expected_gain(gap, sd) == pytest.approx(numeric, rel=1e-3, abs=1e-9)
    assert expected_gain(0.0, 0.02) == pytest.approx(0.02 / math.sqrt(2 * math.pi))
    assert expected_gain(0.05, 0.0) == 0.05 and expected_gain(-0.05, 0.0) == 0.0
    assert expected_gain(-0.05, math.inf) == math.inf  # no curve: measuring is priceless


def test_the_spread_grows_with_the_distance_from_the_reference_data():
    curves = tuple(fit_curves(_points("ref", "scratch", 10_000, 32)
                              + _points("ref", "transfer", 10_000, 64)))
    on_it = spread(["scratch", "transfer"], 10_000, [32, 64], curves)
    assert on_it == pytest.approx(SPREAD_NEAR)
    farther = spread(["scratch", "transfer"], 1_000, [32, 64], curves)
    assert farther > on_it + 0.2  # ten times fewer images: log 10 = 2.3 away
    assert spread(["scratch", "transfer"], 10_000, [32, 256], curves) > on_it  # bigger input
    assert spread(["scratch", "other"], 10_000, [32, 64], curves) == math.inf
