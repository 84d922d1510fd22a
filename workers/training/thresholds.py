"""The per-epoch decision rule on validation scores: the threshold policy the run is scored with.

Each epoch's val block is decided the way the operating point stored with the
model will be (``rarefit.decision.fit_rule``, the same search and the same
rule), so the selection metric ranks epochs by the decision the model will
ship with. Candidate thresholds are the distinct observed scores themselves,
so a chosen value reproduces exactly the confusion matrix it was chosen for.

Strategies: ``none`` (arg-max), ``max_f1`` (binary: the positive class's
best-F1 threshold; multi-class: arg-max, see ``fit_rule``),
``recall_at_least`` / ``precision_at_least`` (a one-vs-rest threshold on
``p[target_class]`` reaching ``value``; ``bound(successes, trials)``, e.g. a
confidence lower bound, replaces the point estimate when given). ``cost`` is
not among them: a Bayes decision needs the calibrated probabilities, fitted
after training, so epochs are scored with the arg-max under it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np

from rarefit.decision import DecisionRule, fit_rule

logger = logging.getLogger(__name__)

THRESHOLD_STRATEGIES = ("none", "max_f1", "recall_at_least", "precision_at_least")
TARGETED = ("recall_at_least", "precision_at_least")
Bound = Callable[[np.ndarray, np.ndarray], np.ndarray]


def check_strategy(strategy: str, *, value: float | None) -> None:
    """``ValueError`` for an unknown strategy or a target strategy without a ``value`` in (0, 1]."""
    if strategy not in THRESHOLD_STRATEGIES:
        raise ValueError(f"unknown threshold_strategy {strategy!r}; supported: {', '.join(THRESHOLD_STRATEGIES)}")
    if strategy in TARGETED and (value is None or not (math.isfinite(value) and 0.0 < value <= 1.0)):
        raise ValueError(f"threshold_strategy {strategy!r} needs threshold_value in (0, 1], got {value!r}")


def tune_rule(
    probs: np.ndarray,
    labels: np.ndarray,
    *,
    strategy: str,
    positive_class: int | None,
    target_class: int | None = None,
    value: float | None = None,
    bound: Bound | None = None,
) -> DecisionRule | None:
    """The rule ``strategy`` picks on ``probs (N, K)`` and ``labels (N,)``; ``None`` = the arg-max.

    ``target_class`` (default ``positive_class``) is the class a recall or
    precision target is for. Without any sample of that class no threshold can
    be tuned: the arg-max, with a log line saying why.
    """
    check_strategy(strategy, value=value)
    if strategy == "none":
        return None
    fitted = fit_rule(
        probs,
        labels,
        policy=strategy,
        positive_class=positive_class,
        target_class=target_class,
        value=value,
        bound=bound,
    )
    if fitted.choice is not None and fitted.choice.threshold is None:
        logger.warning("class %s: %s; keeping the arg-max rule", fitted.target_class, fitted.choice.reason)
    return None if fitted.rule.kind == "argmax" else fitted.rule
