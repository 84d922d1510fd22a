"""Operating points: a decision rule fitted on validation scores by a policy, and verified with bounds.

Policies (``fit_operating_point``):

- ``none``: the arg-max.
- ``max_f1``: binary data: the threshold on the positive class with the best
  F1; multi-class: the arg-max.
- ``recall_at_least`` / ``precision_at_least`` (``target_class``, ``value``): a
  one-vs-rest threshold on ``p[target_class]`` (``rarefit.decision.choose_threshold``).
  With ``guarantee`` the val Clopper–Pearson lower bound at ``confidence``, not
  the point estimate, must reach ``value``.
- ``cost``: the Bayes decision for a K×K cost matrix on calibrated probabilities.

A target no threshold can meet is not hidden: the result carries
``guarantee_met=False`` and a warning saying why (for a guarantee on ``n``
positives, even a perfect recall bounds at ``(1 - confidence)^(1/n)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rarefit.decision import DecisionRule, choose_threshold, decide, decision_metrics
from rarefit.guarantees import best_possible_bound, lower_bound, lower_bound_or_none

POLICIES = ("none", "max_f1", "recall_at_least", "precision_at_least", "cost")


@dataclass(frozen=True)
class FittedPoint:
    rule: DecisionRule
    guarantee_met: bool | None = None
    warnings: list[str] = field(default_factory=list)


def fit_operating_point(
    probs: np.ndarray,
    labels: np.ndarray,
    *,
    policy: str,
    positive_class: int | None,
    target_class: int | None = None,
    value: float | None = None,
    cost: Sequence[Sequence[float]] | None = None,
    guarantee: bool = False,
    confidence: float = 0.95,
    class_names: Sequence[str] | None = None,
) -> FittedPoint:
    """The decision rule ``policy`` picks on (calibrated) val ``probs (N, K)`` and ``labels (N,)``."""
    if policy not in POLICIES:
        raise ValueError(f"unknown operating-point policy {policy!r}; supported: {', '.join(POLICIES)}")
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    k = probs.shape[1]
    if policy == "cost":
        if cost is None:
            raise ValueError("policy 'cost' needs a cost matrix")
        return FittedPoint(DecisionRule.bayes(cost))
    if policy == "none" or (policy == "max_f1" and (k != 2 or positive_class is None)):
        return FittedPoint(DecisionRule.argmax())
    c = positive_class if policy == "max_f1" or target_class is None else target_class
    if c is None or not 0 <= c < k:
        raise ValueError(f"policy {policy!r} needs a class index in [0, {k}), got {c!r}")
    name = str(class_names[c]) if class_names is not None else str(c)
    is_c = labels == c
    bound = (lambda x, n: np.nan_to_num(lower_bound(x, n, confidence=confidence), nan=0.0)) if guarantee else None
    objective = "max_f1" if policy == "max_f1" else policy
    choice = choose_threshold(probs[:, c], is_c, objective=objective, target=value, bound=bound)
    if choice.threshold is None:
        return FittedPoint(DecisionRule.argmax(), False, [f"class {name!r}: {choice.reason} in val; using arg-max"])
    rule = DecisionRule.one_vs_rest({c: choice.threshold})
    if choice.met:
        return FittedPoint(rule, True if guarantee else None)
    return FittedPoint(rule, False, [_unmet(policy, name, value, guarantee, confidence, positives=int(is_c.sum()))])


def _unmet(policy: str, name: str, value: float | None, guarantee: bool, confidence: float, *, positives: int) -> str:
    what = policy.removesuffix("_at_least")
    if guarantee and policy == "recall_at_least":
        best = best_possible_bound(positives, confidence=confidence)
        if value is not None and best < value:
            return (
                f"class {name!r}: {positives} val samples are too few to guarantee recall >= {value} at "
                f"confidence {confidence}: even perfect recall bounds at {best:.4f}; the threshold with the "
                "highest recall bound is used and the guarantee does NOT hold"
            )
    kind = "lower bound" if guarantee else "value"
    return (
        f"class {name!r}: no threshold reaches a val {what} {kind} >= {value}"
        f"{f' at confidence {confidence}' if guarantee else ''}; the closest threshold is used and the target "
        "does NOT hold"
    )


def evaluate_point(
    probs: np.ndarray, labels: np.ndarray, *, rule: DecisionRule, class_names: Sequence[str], confidence: float
) -> dict:
    """The decision part of a metric block at ``rule``, each ``per_class`` entry with its lower bounds."""
    predictions, _ = decide(probs, rule=rule)
    block = decision_metrics(np.asarray(labels), predictions, class_names=class_names)
    return with_bounds(block, confidence=confidence)


def with_bounds(block: dict, *, confidence: float) -> dict:
    """``block`` with ``recall_lower_bound`` / ``precision_lower_bound`` in each ``per_class`` entry."""
    cm = np.asarray(block["confusion_matrix"])
    tp, support, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    per_class = [
        {
            **entry,
            "recall_lower_bound": lower_bound_or_none(int(tp[i]), int(support[i]), confidence=confidence),
            "precision_lower_bound": lower_bound_or_none(int(tp[i]), int(predicted[i]), confidence=confidence),
        }
        for i, entry in enumerate(block["per_class"])
    ]
    return {**block, "per_class": per_class, "confidence": confidence}
