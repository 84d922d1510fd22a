"""Temperature scaling and reliability diagrams (Guo et al. 2017, "On Calibration of Modern Neural Networks").

One scalar ``T > 0`` divides the logits; it is fitted on the validation split
by minimising the negative log-likelihood, which leaves the arg-max (and so the
accuracy) unchanged but makes the confidences honest. The reliability diagram
uses 15 equal-width bins ``(i/15, (i+1)/15]`` of the arg-max confidence; ECE is
``Σ_b |B_b|/N · |acc(B_b) - conf(B_b)|`` over them.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

BINS = 15
TEMPERATURE_RANGE = (0.05, 20.0)


def softmax_at(logits: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(logits / T)`` in float64 (log-probabilities work too: softmax ignores a per-row shift)."""
    return np.exp(log_softmax(np.asarray(logits, dtype=np.float64) / float(temperature), axis=1))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / T)``."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64) / float(temperature), axis=1)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The ``T`` in ``TEMPERATURE_RANGE`` minimising the validation NLL (bounded search on ``log T``)."""
    logits, labels = _checked(logits, labels)
    low, high = (math.log(v) for v in TEMPERATURE_RANGE)
    result = minimize_scalar(
        lambda log_t: nll(logits, labels, math.exp(log_t)),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(math.exp(result.x))


def reliability(probs: np.ndarray, labels: np.ndarray, *, bins: int = BINS) -> dict:
    """``{"ece", "bins": [{"lower", "upper", "count", "confidence", "accuracy"}]}`` (empty bins: ``None``)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    correct_sum = np.bincount(which, weights=correct, minlength=bins)
    rows = []
    for b in range(bins):
        n = int(counts[b])
        rows.append(
            {
                "lower": b / bins,
                "upper": (b + 1) / bins,
                "count": n,
                "confidence": float(conf_sum[b] / n) if n else None,
                "accuracy": float(correct_sum[b] / n) if n else None,
            }
        )
    ece = float(np.abs(correct_sum - conf_sum).sum() / len(labels)) if len(labels) else None
    return {"ece": ece, "bins": rows}


def _checked(logits, labels) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (N, K) with N >= 1 and K >= 2, got {logits.shape}")
    if labels.shape != (logits.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be {logits.shape[0]} integers, got shape {labels.shape}")
    if not np.isfinite(logits).all():
        raise ValueError("logits contain NaN or infinite values")
    return logits, labels.astype(np.int64)
