"""Classification losses for imbalanced data: soft-target cross-entropy, focal loss, class weights.

Functional first, a thin ``nn.Module`` (:class:`Criterion`) second. Every loss
takes integer labels ``(B,)`` or dense soft targets ``(B, K)`` (MixUp/CutMix
rows summing to 1) and computes in float32 even under autocast.

Normalisation of ``reduction="mean"``: the sum of per-sample losses divided by
``Σ_i Σ_c y_ic w_c`` over the *unsmoothed* targets ``y`` (``B`` without class
weights). For hard labels this is exactly ``F.cross_entropy``'s weighted mean,
label smoothing included; for soft targets with weights it differs from
``F.cross_entropy`` (which divides by ``B``) so that a mixed sample carries the
same total weight as a pure one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

REDUCTIONS = ("none", "mean", "sum")
CRITERION_KINDS = ("cross_entropy", "focal", "sigmoid_focal")
CLASS_WEIGHT_KINDS = ("none", "balanced", "effective_number")


def soft_cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    """Cross-entropy ``-Σ_c y_c w_c log p_c`` for hard or soft targets."""
    return focal_loss(
        logits, target, gamma=0.0, alpha=None, weight=weight, label_smoothing=label_smoothing, reduction=reduction
    )


def focal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    gamma: float = 2.0,
    alpha: float | Tensor | None = None,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    """Multi-class softmax focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection").

    ``FL = -Σ_c y_c α_c w_c (1 - p_c)^γ log p_c``, linear in ``y`` so a mixed
    target ``λe_a + (1-λ)e_b`` gives ``λ FL(a) + (1-λ) FL(b)``. A scalar ``alpha``
    is a uniform factor (as in kornia), a ``(K,)`` tensor is per class.
    With ``gamma=0`` and no ``alpha`` this *is* :func:`soft_cross_entropy`.
    """
    _check_reduction(reduction)
    if gamma < 0 or not math.isfinite(gamma):
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (B, K), got {tuple(logits.shape)}")
    num_classes = logits.shape[-1]
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logp = F.log_softmax(logits.to(_compute_dtype(logits)), dim=-1)
        y = _dense_targets(target, logp)
        per_class = -logp * _smooth(y, label_smoothing)
        if gamma != 0:
            per_class = per_class * _safe_pow(-torch.expm1(logp), gamma)  # 1 - p without cancellation
        if weight is not None:
            per_class = per_class * _per_class(weight, num_classes, "weight").to(per_class)
        if isinstance(alpha, Tensor):
            per_class = per_class * _per_class(alpha, num_classes, "alpha").to(per_class)
        elif alpha is not None:
            per_class = per_class * float(alpha)
        loss = per_class.sum(dim=-1)
        return _reduce(loss, reduction, normaliser=_normaliser(y, weight))


def sigmoid_focal_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    gamma: float = 2.0,
    alpha: float = 0.25,
    reduction: str = "none",
) -> Tensor:
    """Binary sigmoid focal loss (Lin et al. 2017); the same arithmetic as ``torchvision.ops.sigmoid_focal_loss``.

    ``alpha`` in ``[0, 1]`` weighs positives by ``α`` and negatives by ``1-α``;
    ``alpha=-1`` switches the weighting off. Values are bitwise torchvision's;
    only where ``p_t`` rounds to 1 and ``0 < γ < 1`` the gradient is 0 here
    instead of torchvision's NaN.
    """
    _check_reduction(reduction)
    if not (0 <= alpha <= 1) and alpha != -1:
        raise ValueError(f"alpha must be in [0, 1] or -1 for no weighting, got {alpha!r}")
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logits = logits.to(_compute_dtype(logits))
        targets = targets.to(logits.dtype)
        p = torch.sigmoid(logits)
        ce_loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = ce_loss * _safe_pow(1 - p_t, gamma)
        if alpha >= 0:
            loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
        return _reduce(loss, reduction, normaliser=None)


def binary_logits_to_sigmoid(logits2: Tensor) -> Tensor:
    """One logit ``l1 - l0`` from 2-class logits ``(B, 2)``.

    ``softmax([l0, l1])[1] = 1 / (1 + exp(l0 - l1)) = sigmoid(l1 - l0)``, so a
    2-logit network can be trained with the sigmoid focal loss and still be
    served with a softmax.
    """
    if logits2.ndim != 2 or logits2.shape[1] != 2:
        raise ValueError(f"expected 2-class logits of shape (B, 2), got {tuple(logits2.shape)}")
    return logits2[:, 1] - logits2[:, 0]


def class_weights(kind: str | Sequence[float], *, counts: Sequence[int], beta: float = 0.999) -> Tensor | None:
    """Per-class loss weights from the training class counts, float32 ``(K,)`` (or ``None``).

    - ``"none"``: no weighting.
    - ``"balanced"``: ``n / (K · n_c)`` (as ``sklearn.utils.class_weight``).
    - ``"effective_number"``: ``(1 - β) / (1 - β^{n_c})`` normalised to sum to ``K``
      (Cui et al. 2019, "Class-Balanced Loss Based on Effective Number of Samples").
    - a list: one positive weight per class.
    """
    counts_t = _checked_counts(counts)
    k = len(counts_t)
    if isinstance(kind, str):
        if kind == "none":
            return None
        if kind == "balanced":
            return (counts_t.sum() / (k * counts_t)).float()
        if kind == "effective_number":
            if not 0.0 < beta < 1.0:
                raise ValueError(f"effective_number beta must be in (0, 1), got {beta!r}")
            raw = (1.0 - beta) / -torch.expm1(counts_t * math.log(beta))  # 1 - β^n without cancellation
            return (raw * (k / raw.sum())).float()
        raise ValueError(f"unknown class_weights {kind!r}; supported: {', '.join(CLASS_WEIGHT_KINDS)} or a list")
    values = _per_class_list(kind, k, "class_weights")
    if bool((values <= 0).any()):
        raise ValueError(f"class_weights must all be positive, got {list(kind)}")
    return values


def resolve_alpha(
    alpha: float | Sequence[float] | str | None, *, counts: Sequence[int], positive_class: int | None = None
) -> Tensor | None:
    """The focal ``alpha`` as the ``(K,)`` per-class tensor :class:`Criterion` takes (or ``None``).

    A number is Lin et al.'s α-balanced form, defined for binary data only: α
    for ``positive_class`` (default 1), ``1 - α`` for the other class, the
    weighting of ``torchvision.ops.sigmoid_focal_loss``. ``"balanced"`` gives
    the same per-class values as ``class_weights("balanced")``.
    """
    if alpha is None:
        return None
    if isinstance(alpha, bool):
        raise TypeError(f"alpha must be a number, a list, 'balanced' or None, got {alpha!r}")
    if isinstance(alpha, (int, float)):
        return _binary_alpha(float(alpha), num_classes=len(counts), positive_class=positive_class)
    if isinstance(alpha, str):
        if alpha == "balanced":
            return class_weights("balanced", counts=counts)
        raise ValueError(f"unknown alpha {alpha!r}; supported: a number, a list per class, 'balanced' or None")
    values = _per_class_list(alpha, len(counts), "alpha")
    if bool((values < 0).any()):
        raise ValueError(f"alpha values must be non-negative, got {list(alpha)}")
    return values


def _binary_alpha(alpha: float, *, num_classes: int, positive_class: int | None) -> Tensor:
    if num_classes != 2:
        raise ValueError(
            f"a single alpha {alpha!r} is defined for binary data only ({num_classes} classes here); "
            "give one value per class or 'balanced'"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"a single alpha must be in [0, 1], got {alpha!r}")
    positive = 1 if positive_class is None else int(positive_class)
    if positive not in (0, 1):
        raise ValueError(f"positive_class must be 0 or 1 for binary data, got {positive_class!r}")
    values = [1.0 - alpha, alpha] if positive == 1 else [alpha, 1.0 - alpha]
    return torch.tensor(values, dtype=torch.float32)


class Criterion(nn.Module):
    """The training loss as a module: ``forward(logits, soft_targets)`` gives the scalar mean loss.

    ``reweight_from_epoch`` defers the class weights (Cao et al. 2019, "Learning
    Imbalanced Datasets with Label-Distribution-Aware Margin Loss", DRW): they
    are inactive before that (1-based) epoch and active from it on; ``None``
    keeps them always active. Call :meth:`set_epoch` at the start of each epoch.
    ``positive_class`` is the class the ``sigmoid_focal`` kind scores (its
    single logit is ``l_pos - l_other``).
    """

    weight: Tensor | None  # buffers, declared for type checkers
    alpha_per_class: Tensor | None

    def __init__(
        self,
        *,
        kind: str,
        gamma: float = 2.0,
        alpha: float | Tensor | None = None,
        weight: Tensor | None = None,
        label_smoothing: float = 0.0,
        reweight_from_epoch: int | None = None,
        positive_class: int = 1,
    ) -> None:
        super().__init__()
        if positive_class not in (0, 1):
            raise ValueError(f"positive_class must be 0 or 1, got {positive_class!r}")
        self.positive_class = int(positive_class)
        if kind not in CRITERION_KINDS:
            raise ValueError(f"unknown loss kind {kind!r}; supported: {', '.join(CRITERION_KINDS)}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        if reweight_from_epoch is not None and reweight_from_epoch < 1:
            raise ValueError(f"reweight_from_epoch must be >= 1 or None, got {reweight_from_epoch!r}")
        if kind == "sigmoid_focal" and isinstance(alpha, (int, float)) and not (0 <= alpha <= 1 or alpha == -1):
            raise ValueError(f"sigmoid_focal alpha must be in [0, 1] or -1, got {alpha!r}")
        self.kind, self.gamma, self.label_smoothing = kind, float(gamma), float(label_smoothing)
        self.reweight_from_epoch = reweight_from_epoch
        self.register_buffer("weight", None if weight is None else weight.detach().float().clone())
        alpha_is_tensor = isinstance(alpha, Tensor)
        per_class = alpha.detach().float().clone() if isinstance(alpha, Tensor) else None
        self.register_buffer("alpha_per_class", per_class)
        self.alpha_scalar: float | None = None if alpha_is_tensor or alpha is None else float(alpha)
        self._weights_active = reweight_from_epoch is None or reweight_from_epoch <= 1

    def set_epoch(self, epoch: int) -> None:
        """Switch deferred class weights on from ``reweight_from_epoch`` (epochs are 1-based)."""
        self._weights_active = self.reweight_from_epoch is None or epoch >= self.reweight_from_epoch

    @property
    def weights_active(self) -> bool:
        return self.weight is not None and self._weights_active

    def forward(self, logits: Tensor, soft_targets: Tensor) -> Tensor:
        if soft_targets.shape != logits.shape:
            raise ValueError(
                f"soft_targets shape {tuple(soft_targets.shape)} must equal logits shape {tuple(logits.shape)}"
            )
        weight = self.weight if self.weights_active else None
        alpha = self.alpha_per_class if self.alpha_per_class is not None else self.alpha_scalar
        if self.kind == "sigmoid_focal":
            return self._sigmoid_forward(logits, soft_targets, weight=weight)
        gamma = self.gamma if self.kind == "focal" else 0.0
        alpha = alpha if self.kind == "focal" else None
        return focal_loss(
            logits, soft_targets, gamma=gamma, alpha=alpha, weight=weight, label_smoothing=self.label_smoothing
        )

    def _sigmoid_forward(self, logits: Tensor, soft_targets: Tensor, *, weight: Tensor | None) -> Tensor:
        # A per-class alpha [a0, a1] is the same weighting as torchvision's alpha=a1 when a0 = 1 - a1,
        # so it is applied as a per-sample factor with torchvision's own weighting off.
        soft_targets = soft_targets.to(_compute_dtype(logits))
        y = _smooth(soft_targets, self.label_smoothing)
        scalar_alpha = -1.0 if self.alpha_scalar is None else self.alpha_scalar
        positive = self.positive_class
        logit = binary_logits_to_sigmoid(logits) * (1.0 if positive == 1 else -1.0)  # l_pos - l_other
        loss = sigmoid_focal_loss(logit, y[:, positive], gamma=self.gamma, alpha=scalar_alpha, reduction="none")
        if self.alpha_per_class is not None:
            loss = loss * (y @ _per_class(self.alpha_per_class, 2, "alpha").to(y))
        if weight is None:
            return loss.mean()
        w = _per_class(weight, 2, "weight").to(y)
        return (loss * (y @ w)).sum() / (soft_targets @ w).sum()


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"Invalid value for reduction: {reduction!r}; supported: {', '.join(REDUCTIONS)}")


def _compute_dtype(logits: Tensor) -> torch.dtype:
    """float32, or float64 when the logits are float64 (so ``gradcheck`` can run on the real loss)."""
    return torch.promote_types(logits.dtype, torch.float32)


def _dense_targets(target: Tensor, logits: Tensor) -> Tensor:
    """Integer labels become one-hot rows, soft rows are cast, both to the logits' dtype."""
    num_classes = logits.shape[-1]
    if target.ndim == 1 and not target.dtype.is_floating_point:
        if target.shape[0] != logits.shape[0]:
            raise ValueError(f"got {target.shape[0]} labels for {logits.shape[0]} rows of logits")
        return F.one_hot(target, num_classes).to(logits.dtype)
    if target.shape != logits.shape:
        raise ValueError(f"soft targets must have the logits' shape {tuple(logits.shape)}, got {tuple(target.shape)}")
    return target.to(logits.dtype)


def _smooth(y: Tensor, label_smoothing: float) -> Tensor:
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    if label_smoothing == 0.0:
        return y
    return y * (1.0 - label_smoothing) + label_smoothing / y.shape[-1]


def _safe_pow(base: Tensor, gamma: float) -> Tensor:
    """``base^γ`` for ``base >= 0`` (the focal ``(1 - p)^γ``) with finite gradients where ``base`` is 0.

    The double ``where`` keeps ``0^(γ-1)`` (infinite for γ < 1) out of the
    backward pass when ``p`` rounds to exactly 1 at extreme logits. For γ ≥ 1
    that gradient is finite, and the plain power saves the hot loop its five
    extra kernels forward and backward.
    """
    if gamma >= 1.0:
        return base.pow(gamma)
    positive = base > 0
    safe = torch.where(positive, base, torch.ones_like(base))
    at_zero = torch.full_like(base, 1.0 if gamma == 0 else 0.0)  # 0^0 = 1
    return torch.where(positive, safe.pow(gamma), at_zero)


def _per_class(values: Tensor, num_classes: int, name: str) -> Tensor:
    if values.ndim != 1 or values.shape[0] != num_classes:
        raise ValueError(f"{name} must have one value per class ({num_classes}), got shape {tuple(values.shape)}")
    return values


def _normaliser(y: Tensor, weight: Tensor | None) -> Tensor | float:
    if weight is None:
        return float(y.shape[0])
    return (y * weight.to(y)).sum()


def _reduce(loss: Tensor, reduction: str, *, normaliser: Tensor | float | None) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.mean() if normaliser is None else loss.sum() / normaliser


def _checked_counts(counts: Sequence[int]) -> Tensor:
    values = [int(c) for c in counts]
    if not values:
        raise ValueError("counts must hold one count per class, got an empty sequence")
    for index, count in enumerate(values):
        if count <= 0:
            raise ValueError(f"class {index} has {count} training samples; every class needs at least one")
    return torch.tensor(values, dtype=torch.float64)


def _per_class_list(values: Sequence[float], num_classes: int, name: str) -> Tensor:
    values = list(values)
    if len(values) != num_classes:
        raise ValueError(f"{name} needs one value per class ({num_classes}), got {len(values)}: {values}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise ValueError(f"{name} values must be finite numbers, got {values}")
    return torch.tensor(values, dtype=torch.float32)
