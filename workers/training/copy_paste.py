"""Copy-paste oversampling from segmentation masks (Ghiasi et al., CVPR 2021, "Simple Copy-Paste is a
Strong Data Augmentation Method for Instance Segmentation"), for classification of rare findings.

A pool holds the train images of the chosen (minority) classes that have a
non-empty mask. Per batch, each row is picked with chance ``prob``; a picked
row receives the masked object of a random pool image, randomly scaled and
flipped, and placed so that the object's centre (its mask's centroid) lands
on a uniformly random point of the image: an object is never pasted wholly
out of frame, so a row whose label becomes the pasted object's class shows it.

As in :mod:`workers.training.mixing`, parameters are sampled on the host from
a CPU generator (:meth:`CopyPaste.sample`, a fixed number of draws per batch,
so the stream never depends on the data) and applied on the device in one
batched ``affine_grid``/``grid_sample`` (:meth:`CopyPaste.apply`): no
per-sample Python. Warping is nearest-neighbour, so an unscaled paste at an
integer offset copies pixels exactly. ``blend="gaussian"`` softens the mask
edge with a 5×5 Gaussian (σ = 1) before compositing, as the paper's blending.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from workers.training.data import pixel_scale

logger = logging.getLogger(__name__)

BLENDS = ("none", "gaussian")


@dataclass(frozen=True)
class PasteParams:
    """One batch's pastes: ``rows`` receive pool objects ``sources`` with ``scale``, ``flip`` and ``shift``.

    ``shift`` ``(P, 2)`` is the displacement ``(dx, dy)`` in pixels applied after scaling and flipping
    about the image centre.
    """

    rows: Tensor
    sources: Tensor
    scale: Tensor
    flip: Tensor
    shift: Tensor


class CopyPaste:
    """Pastes masked pool objects onto batch rows; ``pool_images`` uint8 or uint16 ``(M, H, W, C)`` (the
    dataset's dtype, normalised as its batches are), ``pool_masks`` 0/1."""

    def __init__(
        self,
        *,
        pool_images: Tensor,
        pool_masks: Tensor,
        pool_labels: Tensor,
        prob: float = 0.5,
        scale: tuple[float, float] = (0.8, 1.2),
        blend: str = "gaussian",
        device: torch.device | str = "cpu",
    ) -> None:
        if pool_images.ndim != 4 or pool_masks.shape != pool_images.shape[:3] or pool_images.shape[0] == 0:
            raise ValueError(
                f"need a non-empty pool of images (M, H, W, C) and masks (M, H, W), got "
                f"{tuple(pool_images.shape)} and {tuple(pool_masks.shape)}"
            )
        if pool_labels.shape != (pool_images.shape[0],):
            raise ValueError(f"need one label per pool image, got shape {tuple(pool_labels.shape)}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob!r}")
        if not 0.0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be [low, high] with 0 < low <= high, got {list(scale)}")
        if blend not in BLENDS:
            raise ValueError(f"unknown blend {blend!r}; supported: {', '.join(BLENDS)}")
        device = torch.device(device)
        self.pixel_scale = pixel_scale(pool_images.dtype)
        self.images = pool_images.to(device).permute(0, 3, 1, 2).contiguous()  # (M, C, H, W)
        self.masks = (pool_masks.to(device) > 0).unsqueeze(1).float()
        self.labels = pool_labels.to(device, torch.int64)
        self.centres = _centroids(pool_masks)
        self.prob, self.scale, self.blend = float(prob), (float(scale[0]), float(scale[1])), blend

    @property
    def is_identity(self) -> bool:
        return self.prob == 0.0

    def sample(self, batch_size: int, *, generator: torch.Generator) -> PasteParams:
        """Six uniforms per row, always, from ``generator``; rows with ``u < prob`` are pasted."""
        u = torch.rand(batch_size, 6, dtype=torch.float64, generator=generator, device=generator.device).cpu()
        rows = torch.nonzero(u[:, 0] < self.prob).flatten()
        picked = u[rows]
        height, width = self.images.shape[-2:]
        low, high = self.scale
        sources = torch.clamp((picked[:, 1] * len(self.labels)).long(), max=len(self.labels) - 1)
        scale = low + (high - low) * picked[:, 2]
        flip = picked[:, 3] < 0.5
        size = torch.tensor([width, height], dtype=torch.float64)
        # Where the object's centre goes: half a pixel in from the edges, so that after the shift is
        # rounded to whole pixels it is still inside the frame.
        target = 0.5 + picked[:, 4:6] * (size - 1)
        # Scaling and flipping act about the image centre; the shift then moves the transformed centre to target.
        sign = torch.stack([torch.where(flip, -1.0, 1.0).double(), torch.ones_like(scale)], dim=1)
        moved = sign * scale.unsqueeze(1) * (self.centres.index_select(0, sources) - size / 2)
        return PasteParams(
            rows=rows,
            sources=sources,
            scale=scale.float(),
            flip=flip,
            shift=(target - size / 2 - moved).round().float(),
        )

    def apply(self, images01: Tensor, labels: Tensor, params: PasteParams) -> tuple[Tensor, Tensor]:
        """The batch with the pastes of ``params``; never modifies the inputs in place."""
        if params.rows.numel() == 0:
            return images01, labels
        device = images01.device
        rows, sources = params.rows.to(device), params.sources.to(device)
        theta = _inverse_affine(params, height=images01.shape[-2], width=images01.shape[-1]).to(device)
        objects = self.images.index_select(0, sources).float().div_(self.pixel_scale)
        masks = self.masks.index_select(0, sources)
        grid = F.affine_grid(theta, [len(rows), 1, *images01.shape[-2:]], align_corners=False)
        objects = F.grid_sample(objects, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        masks = F.grid_sample(masks, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        if self.blend == "gaussian":
            masks = _gaussian_blur(masks)
        target = images01.index_select(0, rows)
        pasted = target * (1.0 - masks) + objects.to(target.dtype) * masks
        out = images01.clone()
        out[rows] = pasted
        new_labels = labels.clone()
        new_labels[rows] = self.labels.index_select(0, sources)
        return out, new_labels

    def __call__(self, images01: Tensor, labels: Tensor, *, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return self.apply(images01, labels, self.sample(images01.shape[0], generator=generator))


def _centroids(masks: Tensor) -> Tensor:
    """Each mask's centre of mass ``(x, y)`` in pixel units (pixel ``j`` spans ``[j, j + 1)``), float64 on the host."""
    inside = masks.cpu() > 0  # a byte per pixel: the marginals below are summed from it without a float copy
    columns, rows = inside.sum(dim=1, dtype=torch.float64), inside.sum(dim=2, dtype=torch.float64)
    total = columns.sum(dim=1)
    xs = torch.arange(masks.shape[2], dtype=torch.float64) + 0.5
    ys = torch.arange(masks.shape[1], dtype=torch.float64) + 0.5
    return torch.stack([(columns * xs).sum(dim=1) / total, (rows * ys).sum(dim=1) / total], dim=1)


def _inverse_affine(params: PasteParams, *, height: int, width: int) -> Tensor:
    """``affine_grid`` matrices mapping output to source: ``x_src = f·(x_out - t)/s`` in normalised units."""
    f = torch.where(params.flip, -1.0, 1.0)
    s = params.scale.double()
    tx = 2.0 * params.shift[:, 0].double() / width
    ty = 2.0 * params.shift[:, 1].double() / height
    theta = torch.zeros(len(s), 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 2] = f / s, -f * tx / s
    theta[:, 1, 1], theta[:, 1, 2] = 1.0 / s, -ty / s
    return theta.float()


def _gaussian_blur(masks: Tensor) -> Tensor:
    x = torch.arange(5, dtype=masks.dtype, device=masks.device) - 2.0
    kernel = torch.exp(-0.5 * x**2)
    kernel = kernel / kernel.sum()
    blurred = F.conv2d(masks, kernel.view(1, 1, 1, 5), padding=(0, 2))
    return F.conv2d(blurred, kernel.view(1, 1, 5, 1), padding=(2, 0))
