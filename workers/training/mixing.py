"""Batch-level MixUp (Zhang et al. 2018) and CutMix (Yun et al. 2019) with dense soft targets.

As in torchvision v2 ``MixUp``/``CutMix``, random parameters are sampled
(:func:`sample_mix_params`) separately from applying them (:func:`apply_mix`),
so tests and resumes can replay a batch exactly. Targets come out as dense
``(B, K)`` probabilities; CutMix's λ is corrected to the pasted area (timm
``correct_lam``).

Generators: parameters are a handful of scalars plus a permutation. The engine
passes a **CPU** generator, so λ and the box are read on the host without a GPU
sync; the permutation is moved to the images' device with ``non_blocking=True``.
A generator on the images' device also works, at the cost of a sync per batch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

logger = logging.getLogger(__name__)

MIX_MODES = ("none", "mixup", "cutmix", "mixup_cutmix")


class Mixer(Protocol):
    """What the training loop calls to turn a batch's labels into (mixed) dense targets."""

    def __call__(self, images: Tensor, labels: Tensor, *, generator: torch.Generator) -> tuple[Tensor, Tensor]: ...


@dataclass(frozen=True)
class MixParams:
    """One batch's mixing: ``out = λ·x + (1-λ)·x[perm]`` (MixUp) or ``x`` with ``box`` from ``x[perm]`` (CutMix)."""

    mode: str
    lam: float
    perm: Tensor
    box: tuple[int, int, int, int] | None = None  # (x1, y1, x2, y2), half-open


def sample_beta(alpha: float, *, size: int, generator: torch.Generator) -> Tensor:
    """``size`` draws of Beta(α, α) as float64, driven only by ``generator``.

    ``torch.distributions.Beta`` takes no generator, so this uses
    ``G1 / (G1 + G2)`` with G ~ Gamma(α, 1) from Marsaglia & Tsang (2000),
    computed as ``sigmoid(log G1 - log G2)`` so that tiny α (G underflowing to 0)
    still gives a number in [0, 1]. The draws are exactly those
    :func:`sample_mix_params` takes for a batch's λ.
    """
    _check_beta_alpha(alpha)
    return torch.tensor(_beta_scalars(float(alpha), count=size, generator=generator), dtype=torch.float64)


def _check_beta_alpha(alpha: float) -> None:
    if not (alpha > 0 and math.isfinite(alpha)):
        raise ValueError(f"Beta alpha must be a finite number > 0, got {alpha!r}")


def _beta_scalars(alpha: float, *, count: int, generator: torch.Generator) -> list[float]:
    # A batch needs one λ: a dozen tiny tensor ops (rejection masks, boolean
    # indexing) would cost host time on every step, so the rejection runs on
    # Python floats fed by few ``torch.rand`` calls on the generator.
    logs = _log_standard_gamma_scalars(alpha, count=2 * count, generator=generator)
    return [_sigmoid(a - b) for a, b in zip(logs[:count], logs[count:], strict=True)]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _uniform_stream(generator: torch.Generator, block: int) -> Iterator[float]:
    """Endless uniforms in [0, 1) from ``generator``, ``block`` per tensor call."""
    while True:
        yield from torch.rand(block, dtype=torch.float64, generator=generator).tolist()


def _log_standard_gamma_scalars(shape: float, *, count: int, generator: torch.Generator) -> list[float]:
    """``count`` draws of log Gamma(shape, 1): Marsaglia–Tsang on floats (Box–Muller normals).

    For shape < 1 it draws Gamma(shape + 1) and multiplies by ``U^(1/shape)``
    (in log space).
    """
    uniforms = _uniform_stream(generator, block=8 * count + 8)
    a = shape + 1.0 if shape < 1.0 else shape
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    logs: list[float] = []
    while len(logs) < count:
        u1, u2, u3 = next(uniforms), next(uniforms), next(uniforms)
        x = math.sqrt(-2.0 * math.log1p(-u1)) * math.cos(2.0 * math.pi * u2)
        v = (1.0 + c * x) ** 3
        if v <= 0:
            continue
        log_v = math.log(v)
        if math.log1p(-u3) < 0.5 * x * x + d - d * v + d * log_v:
            log_g = math.log(d) + log_v
            if shape < 1.0:
                log_g += math.log1p(-next(uniforms)) / shape
            logs.append(log_g)
    return logs


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
    if params.mode == "mixup":
        return images.mul(lam).add_(images.index_select(0, perm).mul_(1.0 - lam)), mixed_targets
    if params.mode != "cutmix" or params.box is None:
        raise ValueError(f"MixParams mode must be 'mixup' or 'cutmix' with a box, got {params.mode!r}")
    x1, y1, x2, y2 = params.box
    out = images.clone()
    out[..., y1:y2, x1:x2] = images[..., y1:y2, x1:x2].index_select(0, perm)
    return out, mixed_targets


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

    def one_hot(self, labels: Tensor) -> Tensor:
        """Float32 ``(B, K)`` targets, smoothed as ``(1-ε)·e_y + ε/K``."""
        targets = F.one_hot(labels, self.num_classes).float()
        if self.label_smoothing:
            targets = targets.mul_(1.0 - self.label_smoothing).add_(self.label_smoothing / self.num_classes)
        return targets

    def __call__(self, images: Tensor, labels: Tensor, *, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        targets = self.one_hot(labels)
        if self.mode == "none":
            return images, targets
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
        return apply_mix(images, targets, params)


def _check_mode(mode: str) -> None:
    if mode not in MIX_MODES:
        raise ValueError(f"unknown mixing mode {mode!r}; supported: {', '.join(MIX_MODES)}")
