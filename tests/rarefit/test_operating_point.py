"""Operating-point policies on adversarial score lists; guarantees that hold or say they cannot."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from rarefit.guarantees import lower_bound
from rarefit.operating_point import evaluate_point, fit_operating_point


def binary(p1, labels):
    p1 = np.asarray(p1, dtype=float)
    return np.stack([1 - p1, p1], axis=1), np.asarray(labels)


def test_recall_at_least_with_guarantee_meets_the_lower_bound_on_val() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(2000) < 0.3).astype(int)
    probs, labels = binary(1 / (1 + np.exp(-(rng.normal(size=2000) + 2 * labels - 1))), labels)
    plain = fit_operating_point(probs, labels, policy="recall_at_least", positive_class=1, value=0.9)
    sure = fit_operating_point(
        probs, labels, policy="recall_at_least", positive_class=1, value=0.9, guarantee=True, confidence=0.95
    )
    t_plain, t_sure = plain.rule.thresholds[1], sure.rule.thresholds[1]
    assert sure.guarantee_met is True and not sure.warnings and t_sure <= t_plain  # stricter: a lower threshold
    positives = probs[labels == 1, 1]
    tp = int((positives >= t_sure).sum())
    assert float(lower_bound(tp, len(positives), confidence=0.95)) >= 0.9


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_guaranteed_threshold_matches_a_brute_force_oracle(seed, ties) -> None:
    """Every observed score is a candidate (``p >= t``); feasible: the exact binomial bound of its recall (scipy's
    ``binomtest``) reaches the target. Chosen: the best precision among them, which lies at or below the largest
    feasible threshold, so its true recall is at least that threshold's (the monotone family stays valid)."""
    rng = np.random.default_rng(seed)
    n = 300
    labels = (rng.random(n) < 0.6).astype(int)
    p1 = 1 / (1 + np.exp(-(rng.normal(size=n) + 3 * labels - 1)))
    probs, labels = binary(np.round(p1, 1) if ties else p1, labels)
    fitted = fit_operating_point(
        probs, labels, policy="recall_at_least", positive_class=1, value=0.9, guarantee=True, confidence=0.95
    )
    n_pos = int((labels == 1).sum())
    feasible = []
    for t in np.unique(probs[:, 1]):
        claimed = probs[:, 1] >= t
        tp = int((claimed & (labels == 1)).sum())
        low = binomtest(tp, n_pos, alternative="greater").proportion_ci(confidence_level=0.95, method="exact").low
        if tp and low >= 0.9:
            feasible.append((tp / int(claimed.sum()), t))
    best_precision = max(p for p, _ in feasible)
    oracle = max(t for p, t in feasible if p == best_precision)  # the highest threshold among equal precision
    assert fitted.guarantee_met is True and fitted.rule.thresholds[1] == oracle <= max(t for _, t in feasible)


def test_too_few_positives_for_a_guarantee_is_said_not_hidden() -> None:
    probs, labels = binary([0.9, 0.8, 0.3, 0.2, 0.1], [1, 1, 0, 0, 0])  # perfect separation, 2 positives
    fitted = fit_operating_point(
        probs, labels, policy="recall_at_least", positive_class=1, value=0.95, guarantee=True, confidence=0.95
    )
    assert fitted.guarantee_met is False and "too few to guarantee recall >= 0.95" in fitted.warnings[0]
    assert "0.2236" in fitted.warnings[0]  # 0.05 ** (1 / 2)
    assert fitted.rule.thresholds[1] == 0.1  # the highest recall bound there is: everything positive


@pytest.mark.parametrize("policy", ["max_f1", "recall_at_least", "precision_at_least"])
def test_adversarial_lists(policy) -> None:
    value = None if policy == "max_f1" else 0.8
    ties, labels = binary([0.5] * 6, [1, 0, 1, 0, 1, 0])
    fitted = fit_operating_point(ties, labels, policy=policy, positive_class=1, value=value)
    assert fitted.rule.thresholds == {1: 0.5}
    none, labels = binary([0.2, 0.4, 0.6], [0, 0, 0])  # one class only in val
    fitted = fit_operating_point(none, labels, policy=policy, positive_class=1, value=value)
    assert fitted.rule.kind == "argmax" and "no samples of the class" in fitted.warnings[0]
    every, labels = binary([0.2, 0.4, 0.6], [1, 1, 1])
    fitted = fit_operating_point(every, labels, policy=policy, positive_class=1, value=value)
    assert not fitted.warnings and fitted.rule.thresholds[1] == 0.2  # precision 1 everywhere: the best recall


def test_one_vs_rest_target_on_a_multiclass_class_and_cost() -> None:
    probs = np.array([[0.6, 0.3, 0.1], [0.5, 0.2, 0.3], [0.2, 0.2, 0.6], [0.7, 0.25, 0.05]])
    labels = np.array([0, 2, 2, 1])
    fitted = fit_operating_point(probs, labels, policy="recall_at_least", positive_class=None, target_class=2, value=1)
    assert fitted.rule.thresholds == {2: 0.3}  # recall 1 needs 0.3; precision there is 1 (2 of 2)
    block = evaluate_point(probs, labels, rule=fitted.rule, class_names=["a", "b", "c"], confidence=0.9)
    assert block["per_class"][2]["recall"] == 1.0 and block["per_class"][2]["recall_lower_bound"] == pytest.approx(
        0.1**0.5
    )
    cost = fit_operating_point(
        probs, labels, policy="cost", positive_class=None, cost=[[0, 1, 1], [1, 0, 1], [9, 9, 0]]
    )
    # Expected costs (predict 0: p1 + 9 p2, 1: p0 + 9 p2, 2: p0 + p1), by hand:
    # row 0: 1.2, 1.5, 0.9 -> 2; row 1: 2.9, 3.2, 0.7 -> 2; row 2: 5.6, 5.6, 0.4 -> 2; row 3: 0.7, 1.15, 0.95 -> 0
    assert evaluate_point(probs, labels, rule=cost.rule, class_names="abc", confidence=0.9)["confusion_matrix"] == [
        [0, 0, 1],
        [1, 0, 0],
        [0, 0, 2],
    ]
    with pytest.raises(ValueError, match="unknown operating-point policy 'vote'"):
        fit_operating_point(probs, labels, policy="vote", positive_class=None)


def test_undefined_bounds_are_none() -> None:
    probs, labels = binary([0.9, 0.1], [0, 0])
    block = evaluate_point(
        probs,
        labels,
        rule=fit_operating_point(probs, labels, policy="none", positive_class=1).rule,
        class_names=["n", "p"],
        confidence=0.95,
    )
    assert block["per_class"][1]["recall_lower_bound"] is None and block["per_class"][1]["support"] == 0
