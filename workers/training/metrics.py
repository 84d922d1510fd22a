"""Evaluation metrics for imbalanced classification, in NumPy, as one JSON-ready metric block.

Definitions follow scikit-learn (the test oracle) with ``zero_division=0``:
per-class precision/recall/F1 and the macro F1 run over *all* ``K`` classes
(``labels=range(K)``); balanced accuracy averages recall over the classes
present in ``labels``; AUROC is the Mann–Whitney rank statistic (ties get
half credit, equal to the trapezoidal ROC area); average precision is
sklearn's step-wise ``Σ (R_n - R_{n-1}) P_n``. The PR and ROC curves are
sklearn's curves evenly thinned to ``CURVE_POINTS``: the PR curve for the
positive class of a binary problem; the ROC curve for that class too, and on
multi-class data one-vs-rest for the minority class. Values that are undefined (e.g.
AUROC when a class is absent) are ``None``, never NaN, so blocks serialise.
ECE is the 15-bin equal-width expected calibration error on the arg-max
confidence (Guo et al. 2017, "On Calibration of Modern Neural Networks").
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from rarefit.decision import DecisionRule, decide, decision_metrics

logger = logging.getLogger(__name__)

SELECTION_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc", "average_precision", "minority_recall")
ECE_BINS = 15
CURVE_POINTS = 101


def predict_labels(
    probs: np.ndarray, *, threshold: float | None, positive_class: int | None, rule: DecisionRule | None = None
) -> np.ndarray:
    """``rule`` applied to ``probs`` (``rarefit.decision.decide``); without one, arg-max, or for two
    classes with a threshold: ``positive_class`` (default 1) when its probability is ``>= threshold``."""
    probs = np.asarray(probs)
    if rule is None:
        binary = threshold is not None and probs.shape[1] == 2
        positive = 1 if positive_class is None else int(positive_class)
        rule = DecisionRule.binary(positive_class=positive, threshold=threshold if binary else None)
    return decide(probs, rule=rule)[0]


def metric_block(
    probs: np.ndarray,
    labels: np.ndarray,
    *,
    class_names: Sequence[str],
    threshold: float | None = None,
    positive_class: int | None = None,
    minority_class: int | None = None,
    rule: DecisionRule | None = None,
) -> dict:
    """All evaluation metrics for probabilities ``(N, K)`` and true labels ``(N,)``.

    ``threshold`` and ``positive_class`` (default 1) apply to binary problems
    only; ``rule`` (any ``rarefit.decision.DecisionRule``) replaces ``threshold``
    when given. ``minority_class`` defaults to the class with the smallest
    non-zero support in ``labels``.
    """
    probs, labels = _validated(probs, labels, class_names=class_names)
    k = probs.shape[1]
    binary = k == 2
    positive = _positive_class(positive_class) if binary else None
    if threshold is not None and not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"threshold must be a number in [0, 1] or None, got {threshold!r}")
    predictions = predict_labels(probs, threshold=threshold if binary else None, positive_class=positive, rule=rule)
    decided = decision_metrics(labels, predictions, class_names=class_names)
    support = np.asarray([row["support"] for row in decided["per_class"]])
    minority = _minority_class(minority_class, support)
    curve_class = minority if positive is None else positive
    block = {
        **decided,
        "auroc": _auroc(probs, labels, positive=positive),
        "average_precision": _macro_average_precision(probs, labels, positive=positive),
        "ece": expected_calibration_error(probs, labels),
        "log_loss": _log_loss(probs, labels),
        "minority_class": minority,
        "minority_recall": decided["per_class"][minority]["recall"] if support[minority] > 0 else None,
        "threshold": _binary_threshold(rule, positive) if rule is not None else _given(threshold, binary),
        "positive_class": positive,
        "pr_curve": pr_curve(probs[:, positive], labels == positive) if binary else None,
        "roc_curve": roc_curve(probs[:, curve_class], labels == curve_class),
    }
    return block


def selection_score(block: dict, metric: str) -> float:
    """The block's value for ``metric`` as a float to maximise; undefined (``None``) is ``-inf``."""
    if metric not in SELECTION_METRICS:
        raise ValueError(f"unknown selection metric {metric!r}; supported: {', '.join(SELECTION_METRICS)}")
    value = block.get(metric)
    return -math.inf if value is None else float(value)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, *, bins: int = ECE_BINS) -> float:
    """``Σ_b |B_b|/N · |acc(B_b) - conf(B_b)|`` over equal-width confidence bins ``(i/bins, (i+1)/bins]``."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    gap = np.bincount(which, weights=correct - confidence, minlength=bins)
    return float(np.abs(gap).sum() / len(labels))


def binary_auroc(scores: np.ndarray, is_positive: np.ndarray) -> float | None:
    """ROC AUC as the Mann–Whitney U statistic with average ranks for ties; ``None`` without both classes."""
    n_pos = int(is_positive.sum())
    n_neg = len(is_positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average_rank = (ends - counts + 1 + ends) / 2.0  # ranks are 1-based; ties share their mean rank
    rank_sum = average_rank[inverse.reshape(-1)][is_positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(scores: np.ndarray, is_positive: np.ndarray) -> float | None:
    """sklearn's AP: ``Σ (R_n - R_{n-1}) P_n`` over distinct score thresholds; ``None`` without positives."""
    curve = _pr_points(scores, is_positive)
    if curve is None:
        return None
    precision, recall, _ = curve
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def pr_curve(scores: np.ndarray, is_positive: np.ndarray, *, points: int = CURVE_POINTS) -> list[dict] | None:
    """Precision/recall at each distinct threshold (ascending thresholds), evenly thinned to ``points``."""
    curve = _pr_points(scores, is_positive)
    if curve is None:
        return None
    precision, recall, thresholds = (a[::-1] for a in curve)
    keep = _thinned(len(thresholds), points)
    return [
        {"precision": float(precision[i]), "recall": float(recall[i]), "threshold": float(thresholds[i])} for i in keep
    ]


def roc_curve(scores: np.ndarray, is_positive: np.ndarray, *, points: int = CURVE_POINTS) -> list[dict] | None:
    """False/true positive rate at each distinct threshold where the curve bends (descending thresholds,
    as ``sklearn.metrics.roc_curve``), evenly thinned to ``points``; ``None`` without both classes.

    The curve starts at the origin, a threshold above every score: that is no threshold a decision
    can use, so it is not a point (a JSON threshold cannot be infinite) and drawings add it.
    """
    n_pos = int(is_positive.sum())
    n_neg = len(is_positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    tps, fps, thresholds = _ranked_counts(scores, is_positive)
    # A point inside a straight segment changes neither the curve nor its area (sklearn's
    # drop_intermediate): keeping only the bends spends the thinned points where the curve turns.
    bends = np.arange(len(tps))
    if len(tps) > 2:
        bends = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
    return [
        {"fpr": float(fps[i] / n_neg), "tpr": float(tps[i] / n_pos), "threshold": float(thresholds[i])}
        for i in bends[_thinned(len(bends), points)]
    ]


def _thinned(n: int, points: int) -> np.ndarray:
    """At most ``points`` evenly spaced indices into ``n`` items, the first and the last among them."""
    return np.unique(np.linspace(0, n - 1, min(points, n)).round().astype(np.int64))


def _pr_points(scores: np.ndarray, is_positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Precision, recall, threshold at each distinct score, highest threshold first."""
    n_pos = int(is_positive.sum())
    if n_pos == 0:
        return None
    tps, fps, thresholds = _ranked_counts(scores, is_positive)
    return tps / (tps + fps), tps / n_pos, thresholds


def _ranked_counts(scores: np.ndarray, is_positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives of flagging ``score >= t`` at each distinct score ``t``, highest first."""
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_pos = scores[order], is_positive[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(sorted_scores) - 1]
    tps = np.cumsum(sorted_pos, dtype=np.float64)[last_of_group]
    return tps, last_of_group + 1.0 - tps, sorted_scores[last_of_group]


def _auroc(probs: np.ndarray, labels: np.ndarray, *, positive: int | None) -> float | None:
    if positive is not None:
        return binary_auroc(probs[:, positive], labels == positive)
    return _mean_unless_undefined([binary_auroc(probs[:, c], labels == c) for c in range(probs.shape[1])])


def _macro_average_precision(probs: np.ndarray, labels: np.ndarray, *, positive: int | None) -> float | None:
    if positive is not None:
        return average_precision(probs[:, positive], labels == positive)
    return _mean_unless_undefined([average_precision(probs[:, c], labels == c) for c in range(probs.shape[1])])


def _mean_unless_undefined(per_class: list[float | None]) -> float | None:
    """The macro average, or ``None`` when any class's score is undefined."""
    defined = [v for v in per_class if v is not None]
    return float(np.mean(defined)) if len(defined) == len(per_class) else None


def _given(threshold: float | None, binary: bool) -> float | None:
    return float(threshold) if binary and threshold is not None else None


def _binary_threshold(rule: DecisionRule, positive: int | None) -> float | None:
    """The threshold on the positive class, when ``rule`` is exactly that (else ``None``)."""
    if rule.kind != "threshold" or positive is None or set(rule.thresholds) != {positive}:
        return None
    return float(rule.thresholds[positive])


def _log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    eps = np.finfo(probs.dtype).eps
    picked = np.clip(probs, eps, 1 - eps)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(picked)))


def _minority_class(minority_class: int | None, support: np.ndarray) -> int:
    if minority_class is None:
        present = np.flatnonzero(support > 0)
        return int(present[np.argmin(support[present])])
    if not 0 <= int(minority_class) < len(support):
        raise ValueError(f"minority_class must be a class index in [0, {len(support)}), got {minority_class!r}")
    return int(minority_class)


def _positive_class(positive_class: int | None) -> int:
    if positive_class is None:
        return 1
    if positive_class not in (0, 1):
        raise ValueError(f"positive_class must be 0 or 1 for a binary problem, got {positive_class!r}")
    return int(positive_class)


def _validated(probs, labels, *, class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or probs.shape[1] < 2 or probs.shape[0] == 0:
        raise ValueError(f"probs must have shape (N, K) with N >= 1 and K >= 2, got {probs.shape}")
    if labels.shape != (probs.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be {probs.shape[0]} integers, got shape {labels.shape} dtype {labels.dtype}")
    if len(class_names) != probs.shape[1]:
        raise ValueError(f"class_names has {len(class_names)} names for {probs.shape[1]} classes")
    if not np.isfinite(probs).all():
        raise ValueError("probs contains NaN or infinite values")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must be in [0, {probs.shape[1]}), got range [{labels.min()}, {labels.max()}]")
    return probs, labels.astype(np.int64)
