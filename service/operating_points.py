"""A threshold policy of the job spec (or of a ``PATCH``) fitted into the model card's ``OperatingPoint``.

Web-free and shared: the worker fits the policy after training, the registry
re-fits it on the stored val scores (``scores.npz``) without retraining. The
arithmetic is ``rarefit.operating_point``; this module only translates the
spec's vocabulary (class names, the ``target_recall`` alias) into it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from rarefit.operating_point import evaluate_point, fit_operating_point
from service.model_card import OperatingPoint
from service.threshold_spec import ThresholdSpec, resolve_class


@dataclass(frozen=True)
class SplitScores:
    """Calibrated probabilities ``(N, K)`` and true labels ``(N,)`` of one split."""

    probs: np.ndarray
    labels: np.ndarray


def fit_policy(
    policy: ThresholdSpec, *, val: SplitScores, class_names: list[str], positive_class: int | None
) -> OperatingPoint:
    """The operating point ``policy`` picks on the val scores (warnings say what could not be met)."""
    canonical = policy.canonical()
    target = None if canonical.class_ is None else resolve_class(canonical.class_, class_names)
    if canonical.class_ is not None and target is None:
        raise ValueError(f"threshold.class {canonical.class_!r} is not one of the classes {class_names}")
    fitted = fit_operating_point(
        val.probs,
        val.labels,
        policy=canonical.strategy,
        positive_class=positive_class,
        target_class=target,
        value=canonical.value,
        cost=canonical.cost,
        guarantee=canonical.guarantee,
        confidence=canonical.confidence,
        class_names=class_names,
    )
    return OperatingPoint.from_rule(
        fitted.rule,
        policy=policy.model_dump(mode="json"),
        confidence=canonical.confidence,
        guarantee=canonical.guarantee,
        guarantee_met=fitted.guarantee_met,
        warnings=fitted.warnings,
    )


def point_metrics(point: OperatingPoint, scores: SplitScores, *, class_names: list[str]) -> dict:
    """The decision part of a metric block at ``point`` with per-class lower bounds at its confidence."""
    return evaluate_point(
        scores.probs, scores.labels, rule=point.decision_rule(), class_names=class_names, confidence=point.confidence
    )


def scores_npz(scores: dict[str, SplitScores]) -> bytes:
    """``scores.npz``: ``{split}_probs`` float64 and ``{split}_labels`` int64 for each split given."""
    buffer = io.BytesIO()
    arrays = {}
    for split, item in scores.items():
        arrays[f"{split}_probs"] = np.asarray(item.probs, dtype=np.float64)
        arrays[f"{split}_labels"] = np.asarray(item.labels, dtype=np.int64)
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def read_scores_npz(data: bytes) -> dict[str, SplitScores]:
    """The splits stored by :func:`scores_npz` (never unpickles)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        names = {key.rsplit("_", 1)[0] for key in archive.files}
        return {s: SplitScores(archive[f"{s}_probs"], archive[f"{s}_labels"]) for s in sorted(names)}
