"""Batch-level mixing with dense soft targets: MixUp (Zhang et al. 2018), CutMix (Yun et al. 2019),
Balanced-MixUp (Galdran et al. 2021) and ReMix (Chou et al. 2020).

As in torchvision v2 ``MixUp``/``CutMix``, random parameters are sampled
(:func:`sample_mix_params`) separately from applying them (:func:`apply_mix`),
so tests and resumes can replay a batch exactly. Targets come out as dense
``(B, K)`` probabilities; CutMix's λ is corrected to the pasted area (timm
``correct_lam``).

Generators: parameters are a handful of scalars plus a permutation. The engine
passes a **CPU** generator, so λ and the box are read on the host without a GPU
sync; the permutation is moved to the images' device with ``non_blocking=True``.
A generator on the images' device also works, at the cost of a sync per batch.

The minority-aware modes:

- ``balanced_mixup`` mixes the instance-sampled batch with a second,
  class-balanced batch (a class drawn uniformly, then one of its images):
  ``x = (1-λ)·x_instance + λ·x_balanced``, λ ~ Beta(α, 1), the weighting of
  the authors' code (small α stays close to instance sampling).
- ``remix`` mixes images as MixUp does, but a pair's label goes entirely to
  the minority image when its partner's class is at least κ times larger and
  the minority image's share ``1-λ`` is at least ``1-τ`` (the paper's
  ``n_i/n_j ≥ κ and λ < τ → λ_y = 0``, and the mirror case).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from workers.training.beta import _beta_scalars, _check_beta_alpha, beta_one_scalar

logger = logging.getLogger(__name__)

MIX_MODES = ("none", "mixup", "cutmix", "mixup_cutmix", "balanced_mixup", "remix")

Fetch = Callable[[Tensor], tuple[Tensor, Tensor]]  # dataset indices -> (images, labels) on the device


class Mixer(Protocol):
    """What the training loop calls to turn a batch's labels into (mixed) dense targets."""

    def __call__(
        self, images: Tensor, labels: Tensor, *, generator: torch.Generator, fetch: Fetch | None = None
    ) -> tuple[Tensor, Tensor]: ...


@dataclass(frozen=True)
class MixParams:
    """One batch's mixing: ``out = λ·x + (1-λ)·x[perm]`` (MixUp) or ``x`` with ``box`` from ``x[perm]`` (CutMix)."""

    mode: str
    lam: float
    perm: Tensor
    box: tuple[int, int, int, int] | None = None  # (x1, y1, x2, y2), half-open
    target_lam: Tensor | None = None  # ReMix: each row's label weight of its own target, (B,)


def sample_mix_params(
    *,
    batch_size: int,
    height: int,
    width: int,
    mode: str,
    alpha: float,
    cutmix_alpha: float,
    prob: float,
    switch_prob: float,
    generator: torch.Generator,
) -> MixParams | None:
    """Draw one batch's mixing parameters, or ``None`` when this batch is left unmixed (chance ``1 - prob``).

    ``mixup_cutmix`` picks CutMix with chance ``switch_prob``, else MixUp. The
    CutMix box follows torchvision v2 ``CutMix`` exactly (centre uniform over
    pixels, half sizes ``int(0.5·sqrt(1-λ)·W)``, clamped to the image).
    """
    _check_mode(mode)
    if mode == "balanced_mixup":
        raise ValueError("balanced_mixup draws a second batch: use sample_balanced_params")
    if not 0.0 <= prob <= 1.0 or not 0.0 <= switch_prob <= 1.0:
        raise ValueError(f"prob and switch_prob must be in [0, 1], got prob={prob!r}, switch_prob={switch_prob!r}")
    # One small draw for the batch's decisions and box centre (each tensor call
    # costs host time on the hot path): prob, switch, centre x, centre y.
    u_prob, u_switch, u_x, u_y = torch.rand(
        4, dtype=torch.float64, generator=generator, device=generator.device
    ).tolist()
    if mode == "none" or u_prob >= prob:
        return None
    if mode == "mixup_cutmix":
        mode = "cutmix" if u_switch < switch_prob else "mixup"
    lam_alpha = cutmix_alpha if mode == "cutmix" else alpha
    _check_beta_alpha(lam_alpha)
    lam = _beta_scalars(float(lam_alpha), count=1, generator=generator)[0]  # no tensor for one number
    box = None
    if mode == "cutmix":
        box, lam = _cutmix_box(lam, height=height, width=width, centre=(u_x, u_y))
    perm = torch.randperm(batch_size, generator=generator, device=generator.device)
    return MixParams(mode=mode, lam=lam, perm=perm, box=box)


def _cutmix_box(
    lam: float, *, height: int, width: int, centre: tuple[float, float]
) -> tuple[tuple[int, int, int, int], float]:
    """torchvision v2 CutMix's box for ``lam`` around a centre drawn uniformly over pixels
    (``centre`` holds two uniforms in [0, 1)); returns it and λ corrected to its area."""
    r_x, r_y = min(int(centre[0] * width), width - 1), min(int(centre[1] * height), height - 1)
    r = 0.5 * math.sqrt(1.0 - lam)
    r_w_half, r_h_half = int(r * width), int(r * height)
    x1, y1 = max(r_x - r_w_half, 0), max(r_y - r_h_half, 0)
    x2, y2 = min(r_x + r_w_half, width), min(r_y + r_h_half, height)
    return (x1, y1, x2, y2), float(1.0 - (x2 - x1) * (y2 - y1) / (width * height))


def apply_mix(images: Tensor, targets: Tensor, params: MixParams) -> tuple[Tensor, Tensor]:
    """Apply ``params`` to a batch; never modifies the inputs in place."""
    if images.shape[0] != params.perm.shape[0] or targets.shape[0] != params.perm.shape[0]:
        raise ValueError(
            f"batch of {images.shape[0]} images / {targets.shape[0]} targets does not match "
            f"a permutation of {params.perm.shape[0]}"
        )
    lam = float(params.lam)
    perm = params.perm.to(images.device, non_blocking=True)
    mixed_targets = targets.mul(lam).add_(targets.index_select(0, perm.to(targets.device)).mul_(1.0 - lam))
    if params.target_lam is not None:
        mixed_targets = _mix_rows(targets, targets.index_select(0, perm.to(targets.device)), params.target_lam)
    if params.mode in ("mixup", "remix"):
        return images.mul(lam).add_(images.index_select(0, perm).mul_(1.0 - lam)), mixed_targets
    if params.mode != "cutmix" or params.box is None:
        raise ValueError(f"MixParams mode must be 'mixup' or 'cutmix' with a box, got {params.mode!r}")
    x1, y1, x2, y2 = params.box
    out = images.clone()
    out[..., y1:y2, x1:x2] = images[..., y1:y2, x1:x2].index_select(0, perm)
    return out, mixed_targets


def _mix_rows(own: Tensor, other: Tensor, weight: Tensor) -> Tensor:
    weight = weight.to(own).unsqueeze(1)
    return own * weight + other * (1.0 - weight)


def remix_target_lam(labels: Tensor, perm: Tensor, *, lam: float, counts: Tensor, kappa: float, tau: float) -> Tensor:
    """ReMix's label weight of each row's own target when mixed ``λ·x + (1-λ)·x[perm]``, float32 ``(B,)``.

    0 where the row's class has at least ``κ`` times the partner's count and
    ``λ < τ``; 1 where the partner's class has at least ``κ`` times the row's
    and ``1-λ < τ``; ``λ`` elsewhere.
    """
    n = counts.to(labels.device, torch.float64)
    ratio = n[labels] / n[labels[perm.to(labels.device)]]
    out = torch.full(labels.shape, float(lam), dtype=torch.float32, device=labels.device)
    out = torch.where((ratio >= kappa) & (lam < tau), torch.zeros_like(out), out)
    return torch.where((ratio <= 1.0 / kappa) & (1.0 - lam < tau), torch.ones_like(out), out)


class ClassMembers:
    """Train indices grouped by class, for class-balanced draws: a present class uniformly, then a member."""

    def __init__(self, labels: Tensor) -> None:
        labels = labels.detach().to("cpu", torch.int64)
        if labels.ndim != 1 or labels.numel() == 0:
            raise ValueError(f"labels must be a non-empty 1-D tensor, got shape {tuple(labels.shape)}")
        self.counts = torch.bincount(labels)
        self.order = torch.argsort(labels, stable=True)
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.present = torch.nonzero(self.counts).flatten()

    def draw(self, size: int, *, generator: torch.Generator) -> Tensor:
        """``size`` dataset indices (CPU int64), each class equally likely."""
        pick = torch.randint(len(self.present), (size,), generator=generator, device=generator.device)
        classes = self.present[pick.cpu()]
        uniform = torch.rand(size, dtype=torch.float64, generator=generator, device=generator.device).cpu()
        offsets = torch.minimum((uniform * self.counts[classes]).long(), self.counts[classes] - 1)
        return self.order[self.starts[classes] + offsets]


def sample_balanced_params(
    *, batch_size: int, members: ClassMembers, alpha: float, prob: float, generator: torch.Generator
) -> MixParams | None:
    """Balanced-MixUp's λ ~ Beta(α, 1) and the class-balanced batch's dataset indices (in ``perm``)."""
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob!r}")
    u_prob = float(torch.rand(1, dtype=torch.float64, generator=generator, device=generator.device))
    if u_prob >= prob:
        return None
    lam = beta_one_scalar(float(alpha), generator=generator)
    return MixParams(mode="balanced_mixup", lam=lam, perm=members.draw(batch_size, generator=generator))


def apply_balanced_mix(
    images: Tensor, targets: Tensor, partner_images: Tensor, partner_targets: Tensor, *, lam: float
) -> tuple[Tensor, Tensor]:
    """``(1-λ)·instance + λ·balanced`` for images and targets; never modifies the inputs in place."""
    if partner_images.shape != images.shape or partner_targets.shape != targets.shape:
        raise ValueError(
            f"the balanced batch {tuple(partner_images.shape)} / {tuple(partner_targets.shape)} must match "
            f"the instance batch {tuple(images.shape)} / {tuple(targets.shape)}"
        )
    lam = float(lam)
    return (
        images.mul(1.0 - lam).add_(partner_images.mul(lam)),
        targets.mul(1.0 - lam).add_(partner_targets.mul(lam)),
    )


class BatchMixer:
    """Labels to (optionally smoothed) one-hot rows, then MixUp / CutMix / one of them per batch.

    ``label_smoothing`` here smooths the targets before mixing; use it *or*
    the criterion's, not both.
    """

    def __init__(
        self,
        *,
        mode: str,
        num_classes: int,
        alpha: float = 1.0,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.0,
        train_labels: Tensor | None = None,
        kappa: float = 3.0,
        tau: float = 0.5,
    ) -> None:
        _check_mode(mode)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes!r}")
        for name, value in (("alpha", alpha), ("cutmix_alpha", cutmix_alpha)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not 0.0 <= prob <= 1.0 or not 0.0 <= switch_prob <= 1.0:
            raise ValueError(f"prob and switch_prob must be in [0, 1], got {prob!r}, {switch_prob!r}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.mode, self.num_classes = mode, num_classes
        self.alpha, self.cutmix_alpha = float(alpha), float(cutmix_alpha)
        self.prob, self.switch_prob, self.label_smoothing = float(prob), float(switch_prob), float(label_smoothing)
        self.members = self._members(train_labels, kappa=kappa, tau=tau)
        self.kappa, self.tau = float(kappa), float(tau)

    def _members(self, train_labels: Tensor | None, *, kappa: float, tau: float) -> ClassMembers | None:
        if self.mode not in ("balanced_mixup", "remix"):
            return None
        if train_labels is None:
            raise ValueError(f"mixing mode {self.mode!r} needs the train labels (train_labels=...)")
        if isinstance(kappa, bool) or not (kappa >= 1.0 and math.isfinite(kappa)):
            raise ValueError(f"kappa must be a finite number >= 1, got {kappa!r}")
        if isinstance(tau, bool) or not 0.0 <= tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1], got {tau!r}")
        members = ClassMembers(train_labels)
        if len(members.counts) > self.num_classes:
            raise ValueError(f"train labels reach class {len(members.counts) - 1}, beyond {self.num_classes} classes")
        return members

    def one_hot(self, labels: Tensor) -> Tensor:
        """Float32 ``(B, K)`` targets, smoothed as ``(1-ε)·e_y + ε/K``."""
        targets = F.one_hot(labels, self.num_classes).float()
        if self.label_smoothing:
            targets = targets.mul_(1.0 - self.label_smoothing).add_(self.label_smoothing / self.num_classes)
        return targets

    def __call__(
        self, images: Tensor, labels: Tensor, *, generator: torch.Generator, fetch: Fetch | None = None
    ) -> tuple[Tensor, Tensor]:
        """Mix one batch; ``fetch`` gathers (and augments) the class-balanced batch of ``balanced_mixup``."""
        targets = self.one_hot(labels)
        if self.mode == "none":
            return images, targets
        if self.mode == "balanced_mixup":
            return self._balanced(images, targets, generator=generator, fetch=fetch)
        params = sample_mix_params(
            batch_size=images.shape[0],
            height=images.shape[-2],
            width=images.shape[-1],
            mode=self.mode,
            alpha=self.alpha,
            cutmix_alpha=self.cutmix_alpha,
            prob=self.prob,
            switch_prob=self.switch_prob,
            generator=generator,
        )
        if params is None:
            return images, targets
        if self.mode == "remix" and self.members is not None:
            weights = remix_target_lam(
                labels, params.perm, lam=params.lam, counts=self.members.counts, kappa=self.kappa, tau=self.tau
            )
            params = replace(params, target_lam=weights)
        return apply_mix(images, targets, params)

    def _balanced(
        self, images: Tensor, targets: Tensor, *, generator: torch.Generator, fetch: Fetch | None
    ) -> tuple[Tensor, Tensor]:
        if fetch is None or self.members is None:
            raise ValueError("balanced_mixup needs fetch= to gather the class-balanced batch")
        params = sample_balanced_params(
            batch_size=images.shape[0], members=self.members, alpha=self.alpha, prob=self.prob, generator=generator
        )
        if params is None:
            return images, targets
        partner_images, partner_labels = fetch(params.perm)
        return apply_balanced_mix(images, targets, partner_images, self.one_hot(partner_labels), lam=params.lam)


def _check_mode(mode: str) -> None:
    if mode not in MIX_MODES:
        raise ValueError(f"unknown mixing mode {mode!r}; supported: {', '.join(MIX_MODES)}")
