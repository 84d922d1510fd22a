"""Long-tail losses: LDAM, logit-adjusted and balanced-softmax cross-entropy, and post-hoc logit adjustment.

- LDAM (Cao et al. 2019, "Learning Imbalanced Datasets with Label-Distribution-Aware
  Margin Loss"): cross-entropy on ``s·(z - m_y e_y)`` with margins ``m_c ∝ n_c^(-1/4)``,
  the largest ``max_margin``; with deferred class weights it is LDAM-DRW.
- Logit-adjusted loss (Menon et al. 2021, "Long-Tail Learning via Logit Adjustment"):
  cross-entropy on ``z + τ·log π`` with ``π`` the train class prior.
- Balanced softmax (Ren et al. 2020, "Balanced Meta-Softmax for Long-Tailed Visual
  Recognition"): cross-entropy on ``z + log n_c``.
- Post-hoc adjustment (Menon et al. 2021, eq. 6): predict with ``z - τ·log π``.

Soft targets: each loss is ``Σ_c y_c w_c ℓ_c`` with ``ℓ_c`` the loss for label
``c``, so a MixUp row ``λe_a + (1-λ)e_b`` gives ``λℓ_a + (1-λ)ℓ_b`` exactly (for
LDAM each component keeps its own class's margin). Everything is computed in
float32 with autocast off, as in :mod:`workers.training.losses`, whose
normalisation of ``reduction="mean"`` these share.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor

from workers.training.losses import (
    Criterion,
    _check_reduction,
    _checked_counts,
    _compute_dtype,
    _dense_targets,
    _normaliser,
    _per_class,
    _reduce,
    _smooth,
    soft_cross_entropy,
)

logger = logging.getLogger(__name__)

LONG_TAIL_KINDS = ("ldam", "logit_adjusted", "balanced_softmax")


def ldam_margins(counts: Sequence[int], *, max_margin: float = 0.5) -> Tensor:
    """LDAM's per-class margins ``m_c = C / n_c^(1/4)`` with ``C`` making the largest ``max_margin``, float32."""
    if not (max_margin > 0 and math.isfinite(max_margin)):
        raise ValueError(f"max_margin must be a finite number > 0, got {max_margin!r}")
    raw = _checked_counts(counts) ** -0.25
    return (raw * (max_margin / raw.max())).float()


def log_prior(counts: Sequence[int]) -> Tensor:
    """``log π_c = log(n_c / n)`` from the train class counts, float32 ``(K,)``."""
    counts_t = _checked_counts(counts)
    return torch.log(counts_t / counts_t.sum()).float()


def posthoc_adjustment(counts: Sequence[int], *, tau: float) -> Tensor | None:
    """The offset ``τ·log π`` that post-hoc logit adjustment subtracts from the logits (``None`` for τ = 0)."""
    _check_tau(tau)
    return None if tau == 0 else log_prior(counts) * float(tau)


def ldam_loss(
    logits: Tensor,
    target: Tensor,
    *,
    margins: Tensor,
    scale: float = 30.0,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    """LDAM: ``ℓ_c = -log softmax(s·(z - m_c e_c))_c``, summed over the target rows.

    ``ℓ_c = logaddexp(s(z_c - m_c), R_c) - s(z_c - m_c)`` where ``R_c`` is the
    log-sum-exp of ``s·z`` over the other classes; ``R_c`` comes from the full
    log-sum-exp where that is exact (every class but the row's largest, whose
    probability is at most 1/2) and from a masked log-sum-exp for the largest,
    so no class needs a ``(B, K, K)`` tensor and nothing cancels.
    """
    _check_reduction(reduction)
    _check_logits(logits)
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    num_classes = logits.shape[-1]
    with torch.autocast(device_type=logits.device.type, enabled=False):
        z = logits.to(_compute_dtype(logits)) * float(scale)
        y = _dense_targets(target, z)
        shifted = z - _per_class(margins, num_classes, "margins").to(z) * float(scale)
        per_class = torch.logaddexp(shifted, _logsumexp_of_others(z)) - shifted
        per_class = per_class * _smooth(y, label_smoothing)
        if weight is not None:
            per_class = per_class * _per_class(weight, num_classes, "weight").to(per_class)
        return _reduce(per_class.sum(dim=-1), reduction, normaliser=_normaliser(y, weight))


def _logsumexp_of_others(z: Tensor) -> Tensor:
    """``R[b, c] = logsumexp_{j≠c} z[b, j]``: ``lse + log(1 - p_c)`` except at each row's top class."""
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    top = z.argmax(dim=-1, keepdim=True)
    # The top class gets a placeholder before log1p (p there may round to 1: an infinite gradient),
    # then its own value from the masked log-sum-exp.
    logp = (z - lse).scatter(-1, top, -1.0)
    rest = lse + torch.log1p(-torch.exp(logp))
    rest_top = torch.logsumexp(z.scatter(-1, top, float("-inf")), dim=-1, keepdim=True)
    return rest.scatter(-1, top, rest_top)


def logit_adjusted_loss(
    logits: Tensor,
    target: Tensor,
    *,
    log_prior: Tensor,
    tau: float = 1.0,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    """Logit-adjusted cross-entropy: ``-Σ_c y_c log softmax(z + τ·log π)_c``."""
    _check_tau(tau)
    return _offset_cross_entropy(
        logits,
        target,
        offset=log_prior * float(tau),
        weight=weight,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )


def balanced_softmax_loss(
    logits: Tensor,
    target: Tensor,
    *,
    counts: Tensor,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    """Balanced softmax cross-entropy: ``-Σ_c y_c log softmax(z + log n)_c`` (``n``: train class counts)."""
    if bool((counts <= 0).any()):
        raise ValueError(f"counts must all be positive, got {counts.tolist()}")
    return _offset_cross_entropy(
        logits,
        target,
        offset=torch.log(counts.double()),
        weight=weight,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )


def _offset_cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    offset: Tensor,
    weight: Tensor | None,
    label_smoothing: float,
    reduction: str,
) -> Tensor:
    _check_logits(logits)
    num_classes = logits.shape[-1]
    with torch.autocast(device_type=logits.device.type, enabled=False):
        z = logits.to(_compute_dtype(logits))
        shifted = z + _per_class(offset, num_classes, "offset").to(z)
        return soft_cross_entropy(shifted, target, weight=weight, label_smoothing=label_smoothing, reduction=reduction)


class LongTailCriterion(Criterion):
    """:class:`~workers.training.losses.Criterion` for the long-tail losses, built from the train class counts.

    Class weights and their deferral (``reweight_from_epoch``, DRW) behave as
    in the base class; ``tau`` is the logit-adjusted loss's, ``max_margin`` and
    ``scale`` are LDAM's.
    """

    margins: Tensor | None  # buffers, declared for type checkers: LDAM's margins,
    offset: Tensor | None  # the logit-adjusted and balanced-softmax offsets

    def __init__(
        self,
        *,
        kind: str,
        counts: Sequence[int],
        tau: float = 1.0,
        max_margin: float = 0.5,
        scale: float = 30.0,
        weight: Tensor | None = None,
        label_smoothing: float = 0.0,
        reweight_from_epoch: int | None = None,
    ) -> None:
        super().__init__(
            kind="cross_entropy",
            weight=weight,
            label_smoothing=label_smoothing,
            reweight_from_epoch=reweight_from_epoch,
        )
        if kind not in LONG_TAIL_KINDS:
            raise ValueError(f"unknown long-tail loss {kind!r}; supported: {', '.join(LONG_TAIL_KINDS)}")
        _check_tau(tau)
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
        self.kind, self.tau, self.scale = kind, float(tau), float(scale)
        self.register_buffer("margins", ldam_margins(counts, max_margin=max_margin) if kind == "ldam" else None)
        offset = None
        if kind == "logit_adjusted":
            offset = log_prior(counts) * self.tau
        elif kind == "balanced_softmax":
            offset = torch.log(_checked_counts(counts)).float()
        self.register_buffer("offset", offset)

    def forward(self, logits: Tensor, soft_targets: Tensor) -> Tensor:
        if soft_targets.shape != logits.shape:
            raise ValueError(
                f"soft_targets shape {tuple(soft_targets.shape)} must equal logits shape {tuple(logits.shape)}"
            )
        weight = self.weight if self.weights_active else None
        if self.kind == "ldam":
            return ldam_loss(
                logits,
                soft_targets,
                margins=cast(Tensor, self.margins),  # set for LDAM in __init__
                scale=self.scale,
                weight=weight,
                label_smoothing=self.label_smoothing,
            )
        return _offset_cross_entropy(
            logits,
            soft_targets,
            offset=cast(Tensor, self.offset),  # set for the other kinds in __init__
            weight=weight,
            label_smoothing=self.label_smoothing,
            reduction="mean",
        )


def _check_tau(tau: float) -> None:
    if isinstance(tau, bool) or not (tau >= 0 and math.isfinite(tau)):
        raise ValueError(f"tau must be a finite number >= 0, got {tau!r}")


def _check_logits(logits: Tensor) -> None:
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (B, K), got {tuple(logits.shape)}")
