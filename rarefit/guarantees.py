"""Exact one-sided confidence bounds for a recall or a precision: Clopper & Pearson (1934).

Recall ``x/n`` (``x`` true positives of ``n`` positives) and precision ``x/n``
(``x`` true positives of ``n`` predicted positives) are binomial proportions.
The exact one-sided lower bound at confidence ``1 - α`` is the ``α`` quantile
of ``Beta(x, n - x + 1)`` (0 when ``x = 0``; undefined, reported as ``None``,
when ``n = 0``): the smallest ``p`` with ``P(X >= x | n, p) >= α``. It never
undercovers, whatever ``n`` (C. J. Clopper and E. S. Pearson, "The use of
confidence or fiducial limits illustrated in the case of the binomial",
Biometrika 26(4), 1934). The quantile is scipy's ``betaincinv``, a maintained
implementation of the inverse regularised incomplete Beta function.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import betaincinv

DEFAULT_CONFIDENCE = 0.95


def lower_bound(successes: np.ndarray | int, trials: np.ndarray | int, *, confidence: float) -> np.ndarray:
    """Clopper–Pearson one-sided lower bounds for ``successes / trials``, element-wise (NaN where ``trials`` is 0)."""
    _check_confidence(confidence)
    x = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    if np.any(x < 0) or np.any(x > n):
        raise ValueError("successes must lie in [0, trials]")
    alpha = 1.0 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = betaincinv(np.maximum(x, 1.0), n - x + 1.0, alpha)
    bound = np.where(x == 0, 0.0, bound)
    return np.where(n == 0, np.nan, bound)


def lower_bound_or_none(successes: int, trials: int, *, confidence: float) -> float | None:
    """One bound as a JSON-ready float (``None`` without trials)."""
    value = float(lower_bound(successes, trials, confidence=confidence))
    return None if math.isnan(value) else value


def guarantee_bound(successes: np.ndarray, trials: np.ndarray, *, confidence: float) -> np.ndarray:
    """The bound a guaranteed target is tested with: :func:`lower_bound`, 0 where there are no trials."""
    return np.nan_to_num(lower_bound(successes, trials, confidence=confidence), nan=0.0)


def best_possible_bound(trials: int, *, confidence: float) -> float:
    """The bound of a perfect score ``trials / trials``: ``α^(1/n)``; a target above it cannot be guaranteed."""
    _check_confidence(confidence)
    return 0.0 if trials <= 0 else float((1.0 - confidence) ** (1.0 / trials))


def _check_confidence(confidence: float) -> None:
    if isinstance(confidence, bool) or not (isinstance(confidence, (int, float)) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
