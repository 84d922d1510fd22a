"""Batched, on-device image augmentation: one affine warp plus brightness/contrast per sample.

Parameters for the whole batch are drawn in one shot from an explicit
generator on the images' device (:meth:`BatchAugment.sample_params`) and applied
separately (:meth:`BatchAugment.apply`), as in torchvision v2's
``make_params``/``transform``. Flips, rotation, scale and translation fold into
one ``(B, 2, 3)`` matrix, so the batch costs one ``affine_grid`` + one
``grid_sample``; with flips alone no resampling happens (exact ``torch.flip``).
Oversampling the minority classes repeats their images, so augmenting only
them (``augment_classes``) is the usual companion (Shorten & Khoshgoftaar 2019).
No host syncs: the class mask is applied with ``torch.where``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

logger = logging.getLogger(__name__)

PADDING_MODES = ("zeros", "border", "reflection")


class Augmenter(Protocol):
    """What the training loop calls to augment a batch; :class:`BatchAugment` is the built-in one."""

    @property
    def is_identity(self) -> bool: ...

    def __call__(self, images01: Tensor, labels: Tensor, *, generator: torch.Generator) -> Tensor: ...


@dataclass(frozen=True)
class AugmentParams:
    """Per-sample parameters, each ``(B,)``: flips (bool), angle (radians, positive = counter-clockwise),
    scale (> 1 zooms in), shift_x/shift_y (fraction of width/height), brightness and contrast factors.

    ``None`` marks an operation that is not configured: it costs nothing (on a
    GPU the loop is bound by kernel launches, so unused parameters are not drawn
    into tensors at all)."""

    flip_x: Tensor | None
    flip_y: Tensor | None
    angle: Tensor | None
    scale: Tensor | None
    shift_x: Tensor | None
    shift_y: Tensor | None
    brightness: Tensor | None
    contrast: Tensor | None


class BatchAugment:
    """Random flips, rotation (±``rotation`` degrees), scale, translation, brightness and contrast."""

    def __init__(
        self,
        *,
        hflip: bool = False,
        vflip: bool = False,
        rotation: float = 0.0,
        scale: tuple[float, float] | None = None,
        translate: float = 0.0,
        brightness: float = 0.0,
        contrast: float = 0.0,
        augment_classes: Tensor | None = None,
        padding_mode: str = "zeros",
    ) -> None:
        _check_range("rotation", rotation, 0.0, 360.0)
        _check_range("translate", translate, 0.0, 1.0)
        _check_range("brightness", brightness, 0.0, 1.0)
        _check_range("contrast", contrast, 0.0, 1.0)
        if scale is not None and not (len(scale) == 2 and 0 < scale[0] <= scale[1] and math.isfinite(scale[1])):
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale!r}")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"unknown padding_mode {padding_mode!r}; supported: {', '.join(PADDING_MODES)}")
        if augment_classes is not None and (augment_classes.ndim != 1 or augment_classes.dtype != torch.bool):
            raise TypeError(f"augment_classes must be a 1-D bool tensor (one per class), got {augment_classes!r}")
        self.hflip, self.vflip = bool(hflip), bool(vflip)
        self.rotation, self.translate = float(rotation), float(translate)
        self.scale = None if scale is None or scale[0] == scale[1] == 1.0 else (float(scale[0]), float(scale[1]))
        self.brightness, self.contrast = float(brightness), float(contrast)
        self.augment_classes = None if augment_classes is None else augment_classes.detach().cpu()
        self._masks: dict[torch.device, Tensor] = {}
        self.padding_mode = padding_mode

    @property
    def geometric(self) -> bool:
        """Whether resampling is needed (rotation, scale or translation configured)."""
        return self.rotation > 0 or self.scale is not None or self.translate > 0

    @property
    def is_identity(self) -> bool:
        """No operation configured: the engine can skip the call."""
        nothing = not (self.geometric or self.hflip or self.vflip or self.brightness or self.contrast)
        return nothing or (self.augment_classes is not None and not bool(self.augment_classes.any()))

    def sample_params(self, batch_size: int, *, generator: torch.Generator) -> AugmentParams:
        """Draw every sample's parameters at once on the generator's device (always 8 uniforms per sample,
        so the stream does not depend on which operations are configured)."""
        u = torch.rand(8, batch_size, generator=generator, device=generator.device, dtype=torch.float32).unbind(0)
        low, high = self.scale if self.scale is not None else (1.0, 1.0)
        return AugmentParams(
            flip_x=u[0] < 0.5 if self.hflip else None,
            flip_y=u[1] < 0.5 if self.vflip else None,
            angle=_symmetric(u[2], math.radians(self.rotation)),
            scale=u[3].mul(high - low).add_(low) if self.scale is not None else None,
            shift_x=_symmetric(u[4], self.translate),
            shift_y=_symmetric(u[5], self.translate),
            brightness=_symmetric(u[6], self.brightness, centre=1.0),
            contrast=_symmetric(u[7], self.contrast, centre=1.0),
        )

    def __call__(self, images01: Tensor, labels: Tensor, *, generator: torch.Generator) -> Tensor:
        if self.is_identity:
            return images01
        params = self.sample_params(images01.shape[0], generator=generator)
        return self.apply(images01, labels, params)

    def apply(self, images01: Tensor, labels: Tensor, params: AugmentParams) -> Tensor:
        """Augment ``images01`` ``(B, C, H, W)`` in [0, 1]; samples whose class is not selected pass unchanged."""
        if images01.ndim != 4:
            raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images01.shape)}")
        channels_last = images01.is_contiguous(memory_format=torch.channels_last) and not images01.is_contiguous()
        out = self._geometry(images01, params)
        out = self._photometric(out, params)
        if self.augment_classes is not None:
            selected = self._class_mask(images01.device)[labels]
            out = torch.where(selected.view(-1, 1, 1, 1), out, images01)
        if channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def _class_mask(self, device: torch.device) -> Tensor:
        # one host-to-device copy per device, not per batch
        if device not in self._masks:
            if self.augment_classes is None:
                raise RuntimeError("no augment_classes: every sample is augmented, there is no class mask")
            self._masks[device] = self.augment_classes.to(device)
        return self._masks[device]

    def _geometry(self, images: Tensor, params: AugmentParams) -> Tensor:
        if self.geometric:
            theta = affine_matrices(params, height=images.shape[-2], width=images.shape[-1])
            grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
            return F.grid_sample(images, grid, mode="bilinear", padding_mode=self.padding_mode, align_corners=False)
        if params.flip_x is not None:
            images = torch.where(params.flip_x.view(-1, 1, 1, 1), images.flip(-1), images)
        if params.flip_y is not None:
            images = torch.where(params.flip_y.view(-1, 1, 1, 1), images.flip(-2), images)
        return images

    def _photometric(self, images: Tensor, params: AugmentParams) -> Tensor:
        if params.brightness is None and params.contrast is None:
            return images
        if params.brightness is not None:
            images = images * params.brightness.to(images.dtype).view(-1, 1, 1, 1)
        if params.contrast is not None:
            mean = images.mean(dim=(1, 2, 3), keepdim=True)
            images = torch.lerp(mean, images, params.contrast.to(images.dtype).view(-1, 1, 1, 1))
        return images.clamp(0.0, 1.0)


def affine_matrices(params: AugmentParams, *, height: int, width: int) -> Tensor:
    """``(B, 2, 3)`` matrices for ``F.affine_grid``: output → input coordinates, normalised to [-1, 1].

    θ = [[c·fx, −s·fy·a, 2·tx], [s·fx/a, c·fy, 2·ty]] with c, s the cosine and
    sine divided by the scale, f the flip signs and a = H/W: the rotation is
    built in pixel units (``D⁻¹ R D`` with ``D = diag(W, H)``) so it stays a
    rotation on non-square images. Built column by column in few kernels.
    """
    present = [t for t in (params.angle, params.scale, params.shift_x, params.flip_x, params.flip_y) if t is not None]
    if not present:
        raise ValueError("affine_matrices needs at least one geometric parameter")
    like = present[0].float()
    if params.angle is not None:
        cos, sin = params.angle.cos(), params.angle.sin()
    else:
        cos, sin = torch.ones_like(like), torch.zeros_like(like)
    if params.scale is not None:
        inv_scale = params.scale.reciprocal()
        cos, sin = cos * inv_scale, sin * inv_scale
    aspect = height / width
    col0 = torch.stack([cos, sin * (1.0 / aspect)], dim=-1)
    col1 = torch.stack([sin * -aspect, cos], dim=-1)
    if params.flip_x is not None:
        col0 = torch.where(params.flip_x.view(-1, 1), -col0, col0)
    if params.flip_y is not None:
        col1 = torch.where(params.flip_y.view(-1, 1), -col1, col1)
    if params.shift_x is not None and params.shift_y is not None:
        col2 = torch.stack([params.shift_x, params.shift_y], dim=-1) * 2.0
    else:
        col2 = torch.zeros_like(col0)
    return torch.stack([col0, col1, col2.to(col0.dtype)], dim=-1)


def _symmetric(u: Tensor, half_width: float, *, centre: float = 0.0) -> Tensor | None:
    """Uniform in ``centre ± half_width`` from uniforms in [0, 1); ``None`` when the width is 0."""
    if not half_width:
        return None
    return u.mul(2.0 * half_width).add_(centre - half_width)


def minority_class_mask(counts: Sequence[int], *, threshold: float) -> Tensor:
    """``(K,)`` bool: class ``c`` is a minority class when ``n_c < threshold · max(n)``."""
    if not counts:
        raise ValueError("counts must hold one count per class, got an empty sequence")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    values = torch.tensor([int(c) for c in counts], dtype=torch.float64)
    return values < threshold * values.max()


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not (isinstance(value, (int, float)) and low <= value <= high):
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
