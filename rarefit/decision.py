"""The one decision rule: probabilities in, class indices out (numpy and the standard library only).

Training metrics (``workers.training.metrics``), operating-point fitting and
hosted predict all decide through :func:`decide`, so a threshold means the same
thing everywhere: a class ``c`` with a threshold ``t_c`` is *claimed* when
``p_c >= t_c``. The training core may import this module and nothing else of
``rarefit`` (import-linter contract in ``pyproject.toml``).

Rules (:class:`DecisionRule`):

- ``argmax``: the most probable class (the first on ties).
- ``threshold``: one-vs-rest thresholds for some classes. Among the classes
  that reach their threshold, the one with the largest ``p_c - t_c`` wins;
  when none does, the argmax over the classes *without* a threshold (over all
  classes when every class has one). A binary threshold on the positive class
  is the special case ``{positive: t}``: positive when ``p_pos >= t``, else the
  other class.
- ``cost``: the Bayes decision for a ``K×K`` cost matrix ``C[true][predicted]``:
  the class with the least expected cost ``Σ_i p_i C[i][j]`` (the first on ties).

The *margin* of a decision says how far it is from flipping: ``p_c - t_c``
for a claimed class, ``p_j - max(p_other)`` for an argmax, the second-least
minus the least expected cost for ``cost``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

RULES = ("argmax", "threshold", "cost")


@dataclass(frozen=True)
class DecisionRule:
    """How probabilities become a class (build with :meth:`argmax`, :meth:`binary`, :meth:`one_vs_rest`,
    :meth:`bayes`); see the module docstring for the rules."""

    kind: str = "argmax"
    thresholds: Mapping[int, float] = field(default_factory=dict)
    cost: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in RULES:
            raise ValueError(f"unknown decision rule {self.kind!r}; supported: {', '.join(RULES)}")
        for index, value in self.thresholds.items():
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                raise ValueError(f"threshold class must be a class index >= 0, got {index!r}")
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ValueError(f"threshold for class {index} must be a number in [0, 1], got {value!r}")
        if (self.kind == "threshold") != bool(self.thresholds):
            raise ValueError("thresholds are given exactly when kind is 'threshold'")
        if (self.kind == "cost") != (self.cost is not None):
            raise ValueError("a cost matrix is given exactly when kind is 'cost'")
        if self.cost is not None:
            _check_cost(self.cost)

    @classmethod
    def argmax(cls) -> DecisionRule:
        return cls()

    @classmethod
    def binary(cls, *, positive_class: int, threshold: float | None) -> DecisionRule:
        """``positive_class`` when its probability is ``>= threshold``; ``None`` threshold = argmax."""
        return cls() if threshold is None else cls(kind="threshold", thresholds={int(positive_class): float(threshold)})

    @classmethod
    def one_vs_rest(cls, thresholds: Mapping[int, float]) -> DecisionRule:
        return cls(kind="threshold", thresholds={int(k): float(v) for k, v in thresholds.items()})

    @classmethod
    def bayes(cls, cost: Sequence[Sequence[float]]) -> DecisionRule:
        return cls(kind="cost", cost=tuple(tuple(float(v) for v in row) for row in cost))

    def check_classes(self, num_classes: int) -> None:
        """``ValueError`` when the rule does not fit ``num_classes`` classes."""
        beyond = [c for c in self.thresholds if c >= num_classes]
        if beyond:
            raise ValueError(f"threshold for class {beyond[0]}, but the model has {num_classes} classes")
        if self.cost is not None and len(self.cost) != num_classes:
            raise ValueError(f"the cost matrix is {len(self.cost)}x{len(self.cost)} for {num_classes} classes")


def decide(probs: np.ndarray | Sequence[float], *, rule: DecisionRule) -> tuple[np.ndarray, np.ndarray]:
    """``(class indices (N,), margins (N,))`` for probabilities ``(N, K)`` (a single row ``(K,)`` is one sample)."""
    p = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs must have shape (N, K) with K >= 2, got {np.shape(probs)}")
    rule.check_classes(p.shape[1])
    if rule.kind == "cost":
        return _bayes(p, np.asarray(rule.cost, dtype=np.float64))
    if rule.kind == "threshold":
        return _thresholded(p, rule.thresholds)
    return _argmax(p, np.ones(p.shape[1], dtype=bool))


def _argmax(p: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    masked = np.where(allowed, p, -np.inf)
    labels = masked.argmax(axis=1)
    rows = np.arange(len(p))
    best = masked[rows, labels]
    masked[rows, labels] = -np.inf
    runner_up = masked.max(axis=1)
    margins = best - np.where(np.isfinite(runner_up), runner_up, 0.0) if allowed.sum() > 1 else best
    return labels, margins


def _thresholded(p: np.ndarray, thresholds: Mapping[int, float]) -> tuple[np.ndarray, np.ndarray]:
    classes = np.array(sorted(thresholds), dtype=np.int64)
    cuts = np.array([thresholds[c] for c in classes], dtype=np.float64)
    excess = p[:, classes] - cuts  # >= 0 where the class is claimed
    claimed = excess >= 0
    winner = np.where(claimed, excess, -np.inf).argmax(axis=1)
    free = np.ones(p.shape[1], dtype=bool)
    free[classes] = False
    fallback, _ = _argmax(p, free if free.any() else ~free)
    any_claim = claimed.any(axis=1)
    labels = np.where(any_claim, classes[winner], fallback)
    # Unclaimed: how far the nearest threshold is (negative: that much below a flip).
    margins = np.where(any_claim, excess[np.arange(len(p)), winner], excess.max(axis=1))
    return labels, margins


def _bayes(p: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    expected = p @ cost  # (N, K): expected cost of predicting each class
    labels = expected.argmin(axis=1)
    ordered = np.sort(expected, axis=1)
    return labels, ordered[:, 1] - ordered[:, 0]


def _check_cost(cost: tuple[tuple[float, ...], ...]) -> None:
    k = len(cost)
    if k < 2 or any(len(row) != k for row in cost):
        raise ValueError(f"the cost matrix must be K×K with K >= 2, got rows of lengths {[len(r) for r in cost]}")
    if not all(math.isfinite(v) and v >= 0 for row in cost for v in row):
        raise ValueError("cost matrix entries must be finite numbers >= 0")


# --- what a decision scores -------------------------------------------------------------------


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, *, num_classes: int) -> np.ndarray:
    """``(K, K)`` int64 counts, rows = true class, columns = predicted class."""
    flat = np.bincount(np.asarray(labels) * num_classes + np.asarray(predictions), minlength=num_classes**2)
    return flat.reshape(num_classes, num_classes)


def per_class_scores(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined, as sklearn)."""
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    precision = _divide(tp, predicted)
    recall = _divide(tp, support)
    f1 = _divide(2.0 * tp, support + predicted)  # = 2PR/(P+R), sklearn's form
    return precision, recall, f1, support


def decision_metrics(labels: np.ndarray, predictions: np.ndarray, *, class_names: Sequence[str]) -> dict:
    """The decision-dependent part of a metric block (sklearn definitions, ``zero_division=0``).

    ``accuracy``, ``balanced_accuracy`` (mean recall over the classes present),
    ``macro_f1`` (over all classes), ``per_class`` and ``confusion_matrix``.
    """
    k = len(class_names)
    cm = confusion_matrix(labels, predictions, num_classes=k)
    precision, recall, f1, support = per_class_scores(cm)
    present = support > 0
    return {
        "accuracy": float(np.mean(np.asarray(predictions) == np.asarray(labels))),
        "balanced_accuracy": float(recall[present].mean()),
        "macro_f1": float(f1.mean()),
        "per_class": [
            {"class": str(name), "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)
        ],
        "confusion_matrix": cm.tolist(),
    }


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.zeros_like(numerator, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def cut_points(scores: np.ndarray, is_positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each distinct score as a threshold (highest first) with the true and false positives at ``>=`` it.

    Candidate thresholds are observed scores, not midpoints, so a chosen value
    reproduces exactly the confusion matrix it was chosen for.
    """
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(sorted_scores) - 1]
    tps = np.cumsum(is_positive[order], dtype=np.float64)[last_of_group]
    fps = last_of_group + 1.0 - tps
    return sorted_scores[last_of_group], tps, fps


# --- choosing a threshold on one class's scores ----------------------------------------------

OBJECTIVES = ("max_f1", "recall_at_least", "precision_at_least")


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold on one class's scores (``None``: no threshold can be tuned) and whether it meets the target."""

    threshold: float | None
    met: bool
    reason: str | None = None


def choose_threshold(
    scores: np.ndarray,
    is_positive: np.ndarray,
    *,
    objective: str,
    target: float | None = None,
    bound: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> ThresholdChoice:
    """The threshold on ``scores`` (``p`` of one class) chosen by ``objective``.

    - ``max_f1``: the class's best F1; among equal F1 the highest threshold.
    - ``recall_at_least``: among thresholds whose recall reaches ``target``, the
      one with the best precision (the highest threshold among equal precision).
    - ``precision_at_least``: among thresholds whose precision reaches
      ``target``, the one with the best recall (the highest among equal recall).

    ``bound(successes, trials)`` replaces the point estimate ``successes / trials``
    when testing the target (a confidence lower bound makes it a guarantee).
    Without a feasible threshold: the one closest to the target (the lowest
    threshold for recall, the best precision for precision), ``met=False``.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown threshold objective {objective!r}; supported: {', '.join(OBJECTIVES)}")
    if objective != "max_f1" and (target is None or not (math.isfinite(target) and 0.0 < target <= 1.0)):
        raise ValueError(f"target must be a number in (0, 1] for {objective!r}, got {target!r}")
    scores, is_positive = _checked_scores(scores, is_positive)
    n_pos = int(is_positive.sum())
    if n_pos == 0:
        return ThresholdChoice(None, False, "no samples of the class to tune a threshold on")
    thresholds, tps, fps = cut_points(scores, is_positive)
    if objective == "max_f1":
        f1 = 2.0 * tps / (tps + fps + n_pos)  # 2TP / (2TP + FP + FN) with FN = P - TP
        return ThresholdChoice(float(thresholds[int(np.argmax(f1))]), True)
    estimate = bound or (lambda successes, trials: successes / trials)
    if objective == "recall_at_least":
        reached, preference, fallback = estimate(tps, np.full_like(tps, n_pos)), tps / (tps + fps), len(tps) - 1
    else:
        reached, preference = estimate(tps, tps + fps), tps
        fallback = int(np.argmax(reached))
    feasible = np.flatnonzero(reached >= target)
    if feasible.size == 0:
        return ThresholdChoice(float(thresholds[fallback]), False, f"no threshold reaches {objective} {target}")
    best = feasible[int(np.argmax(preference[feasible]))]  # first maximum = highest threshold among ties
    return ThresholdChoice(float(thresholds[best]), True)


# --- a policy's rule on one split's probabilities ---------------------------------------------

POLICIES = ("none", "max_f1", "recall_at_least", "precision_at_least", "cost")


@dataclass(frozen=True)
class FittedRule:
    """The rule a policy picks; ``target_class`` and ``choice`` when a threshold was searched for a class."""

    rule: DecisionRule
    target_class: int | None = None
    choice: ThresholdChoice | None = None


def fit_rule(
    probs: np.ndarray,
    labels: np.ndarray,
    *,
    policy: str,
    positive_class: int | None,
    target_class: int | None = None,
    value: float | None = None,
    cost: Sequence[Sequence[float]] | None = None,
    bound: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> FittedRule:
    """The decision rule ``policy`` picks on probabilities ``(N, K)`` and true ``labels (N,)``.

    - ``none``: the arg-max.
    - ``max_f1``: with two classes and a ``positive_class``, the threshold on it
      with the best F1; otherwise the arg-max. One class's F1-best one-vs-rest
      threshold trades the other classes' F1 away unseen, and the macro-F1 best
      set of K interacting thresholds has no exact search of this kind, so
      multi-class data keeps the arg-max, which needs none.
    - ``recall_at_least`` / ``precision_at_least``: a one-vs-rest threshold on
      ``p[target_class]`` (default ``positive_class``) by :func:`choose_threshold`
      with ``value`` and ``bound``; the arg-max when no threshold can be tuned.
    - ``cost``: the Bayes decision for the ``K×K`` ``cost`` matrix.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown operating-point policy {policy!r}; supported: {', '.join(POLICIES)}")
    k = np.shape(probs)[1]
    if policy == "cost":
        if cost is None:
            raise ValueError("policy 'cost' needs a cost matrix")
        return FittedRule(DecisionRule.bayes(cost))
    if policy == "none" or (policy == "max_f1" and (k != 2 or positive_class is None)):
        return FittedRule(DecisionRule.argmax())
    c = positive_class if policy == "max_f1" or target_class is None else target_class
    if c is None or not 0 <= c < k:
        raise ValueError(f"policy {policy!r} needs a class index in [0, {k}), got {c!r}")
    choice = choose_threshold(
        np.asarray(probs, dtype=np.float64)[:, c], np.asarray(labels) == c, objective=policy, target=value, bound=bound
    )
    rule = DecisionRule.argmax() if choice.threshold is None else DecisionRule.one_vs_rest({c: choice.threshold})
    return FittedRule(rule, c, choice)


def _checked_scores(scores, is_positive) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    is_positive = np.asarray(is_positive)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array, got shape {scores.shape}")
    if is_positive.shape != scores.shape or is_positive.dtype != np.bool_:
        raise ValueError(
            f"is_positive must be a bool array of shape {scores.shape}, got {is_positive.dtype} {is_positive.shape}"
        )
    if not np.isfinite(scores).all():
        raise ValueError("scores contains NaN or infinite values")
    return scores, is_positive
