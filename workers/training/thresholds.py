"""Decision-threshold tuning for binary problems on validation scores.

The rule applied everywhere (metrics, model card, hosted predict) is
``predict positive when score >= threshold``. Candidate thresholds are the
distinct observed scores themselves (not midpoints), so the returned value
reproduces exactly the confusion matrix it was chosen for.
"""

from __future__ import annotations

import logging
import math
from typing import cast

import numpy as np

logger = logging.getLogger(__name__)

THRESHOLD_STRATEGIES = ("none", "max_f1", "target_recall")
NO_POSITIVES_THRESHOLD = 0.5


def choose_threshold(
    scores: np.ndarray,
    is_positive: np.ndarray,
    *,
    strategy: str,
    target_recall: float | None = None,
) -> float | None:
    """The threshold on positive-class ``scores`` chosen by ``strategy``.

    - ``"none"``: ``None`` (the caller keeps the arg-max rule).
    - ``"max_f1"``: the score maximising the positive class's F1; among equal
      F1 values the *highest* threshold, i.e. the fewest positive predictions.
    - ``"target_recall"``: the largest threshold whose recall is ``>= target_recall``,
      which keeps precision as high as the recall target allows.

    Without any positive in the validation set no threshold can be tuned
    (F1 is 0 and recall undefined everywhere), so it returns 0.5, which for
    two classes is the arg-max rule, and logs why.
    """
    if strategy not in THRESHOLD_STRATEGIES:
        raise ValueError(f"unknown threshold strategy {strategy!r}; supported: {', '.join(THRESHOLD_STRATEGIES)}")
    if strategy == "target_recall" and (
        target_recall is None or not (math.isfinite(target_recall) and 0.0 < target_recall <= 1.0)
    ):
        raise ValueError(f"target_recall must be a number in (0, 1] for 'target_recall', got {target_recall!r}")
    scores, is_positive = _validated(scores, is_positive)
    if strategy == "none":
        return None
    n_pos = int(is_positive.sum())
    if n_pos == 0:
        logger.warning("no positive samples to tune a threshold on; using %s", NO_POSITIVES_THRESHOLD)
        return NO_POSITIVES_THRESHOLD
    thresholds, tps, fps = cut_points(scores, is_positive)
    if strategy == "max_f1":
        f1 = 2.0 * tps / (tps + fps + n_pos)  # 2TP / (2TP + FP + FN) with FN = P - TP
        best = int(np.argmax(f1))  # first maximum = highest threshold among ties
    else:
        target = cast(float, target_recall)  # checked above
        best = int(np.argmax(tps / n_pos >= target))  # recall only grows as thresholds fall
    return float(thresholds[best])


def cut_points(scores: np.ndarray, is_positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each distinct score as a threshold (highest first) with the true and false positives at ``>=`` it."""
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(sorted_scores) - 1]
    tps = np.cumsum(is_positive[order], dtype=np.float64)[last_of_group]
    fps = last_of_group + 1.0 - tps
    return sorted_scores[last_of_group], tps, fps


def _validated(scores, is_positive) -> tuple[np.ndarray, np.ndarray]:
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
