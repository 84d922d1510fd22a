"""Decision-threshold tuning for binary problems on validation scores, each epoch.

The search itself is ``rarefit.decision.choose_threshold`` (the one rule every
part of rarefit decides with); this module maps the core's strategy names onto
it. Candidate thresholds are the distinct observed scores themselves, so the
returned value reproduces exactly the confusion matrix it was chosen for.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from rarefit.decision import choose_threshold as search_threshold

logger = logging.getLogger(__name__)

THRESHOLD_STRATEGIES = ("none", "max_f1", "target_recall")


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
    - ``"target_recall"``: among the thresholds whose recall is ``>= target_recall``,
      the one with the best precision (the highest among equal precision).

    Without any positive in the validation set no threshold can be tuned, so it
    returns ``None`` (the arg-max rule) and logs why.
    """
    if strategy not in THRESHOLD_STRATEGIES:
        raise ValueError(f"unknown threshold strategy {strategy!r}; supported: {', '.join(THRESHOLD_STRATEGIES)}")
    if strategy == "target_recall" and (
        target_recall is None or not (math.isfinite(target_recall) and 0.0 < target_recall <= 1.0)
    ):
        raise ValueError(f"target_recall must be a number in (0, 1] for 'target_recall', got {target_recall!r}")
    if strategy == "none":
        search_threshold(scores, is_positive, objective="max_f1")  # same input checks for every strategy
        return None
    objective = "max_f1" if strategy == "max_f1" else "recall_at_least"
    choice = search_threshold(scores, is_positive, objective=objective, target=target_recall)
    if choice.threshold is None:
        logger.warning("%s; keeping the arg-max rule", choice.reason)
    return choice.threshold
