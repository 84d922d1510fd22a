"""Coverage of the recall guarantee on a population whose true recall is known in closed form.

Scores are ``sigmoid(z)`` with ``z ~ N(SHIFT, 1)`` for positives and ``N(0, 1)``
for negatives, so a threshold ``t`` has the true recall ``Φ(SHIFT - logit(t))``.
Each draw of a val part fits ``recall_at_least`` with ``guarantee``; a valid
guarantee keeps the true recall at the chosen threshold below the target in at
most ``1 - confidence`` of the draws. The second test pins down why a finite
test split misses a valid val bound more often than that.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from rarefit.guarantees import lower_bound
from rarefit.operating_point import fit_operating_point

SHIFT = 2.5
PREVALENCE = 0.74  # PneumoniaMNIST's share of pneumonia in val and test
CONFIDENCE = 0.95
ALPHA = 1.0 - CONFIDENCE
TARGET = 0.95
# 2000 draws: the binomial standard error of a 5 % rate is 0.5 %; 1.5 % is three of them.
DRAWS = 2000
TOLERANCE = 0.015


def draw_val(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    labels = (rng.random(n) < PREVALENCE).astype(np.int64)
    p1 = 1.0 / (1.0 + np.exp(-(rng.normal(size=n) + SHIFT * labels)))
    return np.stack([1.0 - p1, p1], axis=1), labels


def true_recall(threshold: float) -> float:
    return float(norm.sf(np.log(threshold / (1.0 - threshold)) - SHIFT))


def miss_rate(*, guarantee: bool, draws: int = DRAWS, n: int = 524, seed: int = 0) -> float:
    """How often the true recall at the threshold fitted on a fresh val draw is below ``TARGET``."""
    rng = np.random.default_rng(seed)
    misses = 0
    for _ in range(draws):
        probs, labels = draw_val(rng, n)
        fitted = fit_operating_point(
            probs,
            labels,
            policy="recall_at_least",
            positive_class=1,
            target_class=1,
            value=TARGET,
            guarantee=guarantee,
            confidence=CONFIDENCE,
        )
        assert fitted.guarantee_met is (True if guarantee else None)
        misses += true_recall(fitted.rule.thresholds[1]) < TARGET
    return misses / draws


def test_the_guarantee_bounds_the_miss_rate_against_the_true_recall() -> None:
    guaranteed = miss_rate(guarantee=True)
    # Clopper–Pearson is conservative, but not vacuous: a rule that always took the lowest threshold would read 0.
    assert 0.01 <= guaranteed <= ALPHA + TOLERANCE
    # The point estimate alone meets the target on val about half the time it misses it in truth.
    assert miss_rate(guarantee=False, draws=200) >= 0.3


@pytest.mark.parametrize(("n_val", "n_test"), [(389, 389), (389, 390)])
def test_a_finite_test_split_misses_a_valid_val_bound_more_often_than_alpha(n_val: int, n_test: int) -> None:
    """An unselected threshold with true recall 0.95, bounded on ``n_val`` positives and checked on ``n_test``.

    The bound covers the true recall (miss rate <= α), but the test recall has its own binomial noise:
    ``P(test recall < val bound) ≈ P(Z < -z_α / √2) ≈ 12 %`` for equal sizes (normal approximation), a little
    less with the exact, conservative bound.
    """
    rng = np.random.default_rng(1)
    draws = 200_000
    val_hits = rng.binomial(n_val, TARGET, size=draws)
    test_recall = rng.binomial(n_test, TARGET, size=draws) / n_test
    bound = lower_bound(val_hits, np.full(draws, n_val), confidence=CONFIDENCE)
    assert np.mean(TARGET < bound) <= ALPHA
    normal_approximation = float(norm.cdf(-norm.ppf(CONFIDENCE) / np.sqrt(2.0)))
    assert normal_approximation == pytest.approx(0.122, abs=0.001)
    assert 0.08 <= np.mean(test_recall < bound) <= normal_approximation
