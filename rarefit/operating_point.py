"""Operating points: a decision rule fitted on validation scores by a policy, and verified with bounds.

Policies (``fit_operating_point``, the rule itself from ``rarefit.decision.fit_rule``):

- ``none``: the arg-max.
- ``max_f1``: binary data: the threshold on the positive class with the best
  F1; multi-class: the arg-max (``fit_rule`` says why).
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
from functools import partial

import numpy as np

from rarefit.decision import DecisionRule, decide, decision_metrics, fit_rule
from rarefit.guarantees import best_possible_bound, guarantee_bound, lower_bound_or_none


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
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    bound = partial(guarantee_bound, confidence=confidence) if guarantee else None
    fitted = fit_rule(
        probs,
        labels,
        policy=policy,
        positive_class=positive_class,
        target_class=target_class,
        value=value,
        cost=cost,
        bound=bound,
    )
    choice, c = fitted.choice, fitted.target_class
    if choice is None or c is None:
        return FittedPoint(fitted.rule)
    name = str(class_names[c]) if class_names is not None else str(c)
    if choice.threshold is None:
        return FittedPoint(fitted.rule, False, [f"class {name!r}: {choice.reason} in val; using arg-max"])
    if choice.met:
        return FittedPoint(fitted.rule, True if guarantee else None)
    positives = int((labels == c).sum())
    return FittedPoint(fitted.rule, False, [_unmet(policy, name, value, guarantee, confidence, positives=positives)])


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
