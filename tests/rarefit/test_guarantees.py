"""Clopper–Pearson lower bounds against scipy's exact binomial interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from rarefit.guarantees import best_possible_bound, lower_bound, lower_bound_or_none


@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95, 0.99])
@pytest.mark.parametrize("n", [1, 2, 5, 17, 100, 1000])
def test_matches_scipy_exact_one_sided_interval(n, confidence) -> None:
    xs = np.unique(np.linspace(0, n, 12).round().astype(int))
    ours = lower_bound(xs, np.full_like(xs, n), confidence=confidence)
    for x, bound in zip(xs, ours, strict=True):
        # alternative="greater": the one-sided interval [low, 1] at this confidence.
        oracle = binomtest(int(x), n, alternative="greater").proportion_ci(confidence_level=confidence, method="exact")
        assert bound == pytest.approx(oracle.low, abs=1e-12)


def test_edges() -> None:
    assert lower_bound(0, 10, confidence=0.95) == 0.0
    assert math.isnan(float(lower_bound(0, 0, confidence=0.95))) and lower_bound_or_none(0, 0, confidence=0.95) is None
    assert best_possible_bound(10, confidence=0.95) == pytest.approx(float(lower_bound(10, 10, confidence=0.95)))
    assert best_possible_bound(10, confidence=0.95) == pytest.approx(0.05**0.1)
    for bad in (0.0, 1.0, True, float("nan")):
        with pytest.raises(ValueError, match="confidence must be a number in"):
            lower_bound(1, 2, confidence=bad)
    with pytest.raises(ValueError, match="successes must lie"):
        lower_bound(3, 2, confidence=0.9)
