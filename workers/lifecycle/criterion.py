"""A job spec's ``loss`` as the training core's criterion, with every statistic from the train class counts."""

from __future__ import annotations

from collections.abc import Sequence

from service.spec import LossSpec
from workers.training.long_tail import LONG_TAIL_KINDS, LongTailCriterion
from workers.training.losses import Criterion, class_weights, resolve_alpha


def criterion_kind(loss: LossSpec) -> str:
    """``cross_entropy``, ``focal`` or ``sigmoid_focal`` (focal with the binary sigmoid variant)."""
    if loss.type == "focal":
        return "sigmoid_focal" if loss.variant == "sigmoid" else "focal"
    return "cross_entropy"


def make_criterion(
    loss: LossSpec,
    *,
    counts: Sequence[int],
    positive_class: int | None = None,
    cosine_scale: float | None = None,
) -> Criterion:
    """The loss with class weights, focal α, margins and priors resolved from the train class ``counts``.

    Label smoothing is applied here (not in the mixer), once, to the mixed targets.
    ``positive_class`` (binary) is the class a scalar α and the sigmoid variant refer to.
    ``cosine_scale`` is the head's ``s`` when the network has a cosine head: its logits are already
    ``s·cos``, so LDAM runs at scale 1 with margins ``s·m`` (Cao et al.'s ``s·(cos − m_y e_y)`` exactly).
    """
    weight = class_weights(loss.class_weights, counts=counts, beta=loss.effective_number_beta)
    if loss.type in LONG_TAIL_KINDS:
        head_scale = cosine_scale if loss.type == "ldam" else None
        return LongTailCriterion(
            kind=loss.type,
            counts=counts,
            tau=loss.tau,
            max_margin=loss.ldam_max_margin * (1.0 if head_scale is None else head_scale),
            scale=loss.ldam_scale if head_scale is None else 1.0,
            weight=weight,
            label_smoothing=loss.label_smoothing,
            reweight_from_epoch=loss.reweight_from_epoch,
        )
    kind = criterion_kind(loss)
    binary_positive = positive_class if len(counts) == 2 and positive_class is not None else 1
    return Criterion(
        kind=kind,
        gamma=loss.gamma,
        positive_class=binary_positive,
        alpha=resolve_alpha(loss.alpha, counts=counts, positive_class=binary_positive)
        if kind != "cross_entropy"
        else None,
        weight=weight,
        label_smoothing=loss.label_smoothing,
        reweight_from_epoch=loss.reweight_from_epoch,
    )
