"""The reference: the plainest fast PyTorch training loop for the same work a rarefit job does.

Written independently of ``workers.training`` (nothing is imported from it) so
that ``throughput.py`` compares the job path against what a strong engineer
would hand-write for the same model, batch size, loss, mixing and
augmentation:

- the whole uint8 data set is one tensor on the device; a batch is one gather
  by an index tensor, seen as NCHW (channels_last) and scaled to [0, 1];
- class-balanced sampling is ``torch.multinomial`` over per-sample weights
  ``1/n_y`` on the device (N draws with replacement per epoch);
- augmentation is one batched ``affine_grid``/``grid_sample`` per batch, the
  horizontal flip folded into the affine matrix; CutMix (Yun et al. 2019) takes
  λ and the box from a host NumPy generator (no device sync) and λ is the
  pasted area; the focal loss (Lin et al. 2017) is written inline;
- channels_last, bf16 autocast on CUDA, fused AdamW on CUDA, and no host sync
  inside an epoch (the loss is summed on the device and read once per epoch);
- after each training epoch a forward pass over the validation split (a job
  validates every epoch too), so both sides count the same work.

The networks mirror ``workers.training.networks``: ``simple_cnn`` layer for
layer, torchvision ResNets with the 3×3 stride-1 stem and no max-pool below
64 px, normalisation inside the model.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

logger = logging.getLogger(__name__)

SMALL_INPUT = 64
BARE_ARCHS = ("simple_cnn", "resnet18", "resnet50")


class Normalised(nn.Module):
    """``net((x - mean) / std)``; the same place rarefit's Classifier normalises."""

    def __init__(self, net: nn.Module, *, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) / self.std)


def simple_cnn(*, in_channels: int, num_classes: int) -> nn.Sequential:
    """Three conv-BN-ReLU blocks (32, 64, 128 channels), two 2×2 max-pools, global average pool, dropout 0.2."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *block(in_channels, 32),
        nn.MaxPool2d(2),
        *block(32, 64),
        nn.MaxPool2d(2),
        *block(64, 128),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(128, num_classes),
    )


def resnet(name: str, *, in_channels: int, num_classes: int, input_size: int) -> nn.Module:
    """torchvision ResNet; CIFAR-style stem (3×3 stride 1, no max-pool) below 64 px."""
    net = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    if input_size < SMALL_INPUT:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net


def bare_network(
    arch: str, *, in_channels: int, num_classes: int, input_size: int, mean: Sequence[float], std: Sequence[float]
) -> nn.Module:
    if arch == "simple_cnn":
        net = simple_cnn(in_channels=in_channels, num_classes=num_classes)
    elif arch in ("resnet18", "resnet50"):
        net = resnet(arch, in_channels=in_channels, num_classes=num_classes, input_size=input_size)
    else:
        raise ValueError(f"unknown arch {arch!r}; the bare loop supports: {', '.join(BARE_ARCHS)}")
    return Normalised(net, mean=mean, std=std)


def affine_augment(
    x: Tensor, *, generator: torch.Generator, hflip: bool, rotation: float, scale: tuple[float, float] | None
) -> Tensor:
    """Random flip × rotation × zoom per image, one ``grid_sample`` for the batch."""
    n, dev = x.shape[0], x.device
    angle = (torch.rand(n, device=dev, generator=generator) * 2 - 1) * math.radians(rotation)
    low, high = scale if scale is not None else (1.0, 1.0)
    zoom = low + (high - low) * torch.rand(n, device=dev, generator=generator)
    flip = torch.ones(n, device=dev)
    if hflip:
        flip = torch.where(torch.rand(n, device=dev, generator=generator) < 0.5, -flip, flip)
    cos, sin, zero = torch.cos(angle) / zoom, torch.sin(angle) / zoom, torch.zeros(n, device=dev)
    theta = torch.stack([cos * flip, -sin, zero, sin * flip, cos, zero], dim=1).view(n, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def cutmix(
    x: Tensor, y: Tensor, *, rng: np.random.Generator, generator: torch.Generator, alpha: float
) -> tuple[Tensor, Tensor]:
    """CutMix with λ corrected to the pasted area; ``y`` is one-hot ``(B, K)``. Modifies ``x`` in place."""
    height, width = x.shape[-2:]
    lam = float(rng.beta(alpha, alpha))
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    half_h, half_w = int(0.5 * math.sqrt(1 - lam) * height), int(0.5 * math.sqrt(1 - lam) * width)
    y1, y2 = max(cy - half_h, 0), min(cy + half_h, height)
    x1, x2 = max(cx - half_w, 0), min(cx + half_w, width)
    lam = 1.0 - (y2 - y1) * (x2 - x1) / (height * width)
    perm = torch.randperm(x.shape[0], device=x.device, generator=generator)
    x[..., y1:y2, x1:x2] = x[perm][..., y1:y2, x1:x2]
    return x, y * lam + y[perm] * (1.0 - lam)


def focal(logits: Tensor, target: Tensor, *, gamma: float) -> Tensor:
    """Softmax focal loss ``-Σ y (1-p)^γ log p`` in float32, mean over the batch (γ=0: cross-entropy)."""
    logp = F.log_softmax(logits.float(), dim=1)
    weight = (1.0 - logp.exp()).pow(gamma) if gamma else 1.0
    return -(target * weight * logp).sum(dim=1).mean()


class BareTrainer:
    """One model, optimiser and device-resident data set; :meth:`run_epoch` trains one epoch and times it."""

    def __init__(
        self,
        *,
        arch: str,
        train: tuple[np.ndarray, np.ndarray],
        val_images: np.ndarray | None,
        num_classes: int,
        device: torch.device | str,
        batch_size: int = 128,
        seed: int = 0,
        gamma: float = 2.0,
        cutmix_alpha: float | None = 1.0,
        balanced: bool = True,
        hflip: bool = True,
        rotation: float = 15.0,
        scale: tuple[float, float] | None = (0.9, 1.1),
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        compile: bool = False,
        drop_last: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.batch_size, self.gamma, self.cutmix_alpha, self.drop_last = batch_size, gamma, cutmix_alpha, drop_last
        self.augment_args = {"hflip": hflip, "rotation": rotation, "scale": scale}
        self.num_classes, self.amp = num_classes, self.device.type == "cuda"
        images, labels = train
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)  # (N, H, W, C) uint8
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(self.device)
        self.val = None if val_images is None else torch.from_numpy(np.ascontiguousarray(val_images)).to(self.device)
        counts = torch.bincount(self.labels, minlength=num_classes).clamp_min(1).float()
        self.weights = (1.0 / counts)[self.labels] if balanced else None
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.model = _model(arch, images, num_classes=num_classes, device=self.device)
        self.forward = torch.compile(self.model) if compile else self.model
        fused = True if self.device.type == "cuda" else None  # one kernel for the whole update
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=weight_decay, fused=fused)

    def _batch(self, idx: Tensor) -> Tensor:
        # NHWC uint8 seen as NCHW is channels_last; float() keeps those strides.
        return self.images.index_select(0, idx).permute(0, 3, 1, 2).float().div_(255.0)

    def _epoch_indices(self) -> Tensor:
        n = self.labels.shape[0]
        if self.weights is None:
            return torch.randperm(n, device=self.device, generator=self.generator)
        return torch.multinomial(self.weights, n, replacement=True, generator=self.generator)

    def _train_step(self, idx: Tensor) -> Tensor:
        x = affine_augment(self._batch(idx), generator=self.generator, **self.augment_args)
        y = F.one_hot(self.labels.index_select(0, idx), self.num_classes).float()
        if self.cutmix_alpha is not None:
            x, y = cutmix(x, y, rng=self.rng, generator=self.generator, alpha=self.cutmix_alpha)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.forward(x.contiguous(memory_format=torch.channels_last))
        loss = focal(logits, y, gamma=self.gamma)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    @torch.no_grad()
    def _validate(self) -> np.ndarray | None:
        if self.val is None:
            return None
        self.model.eval()
        parts, step = [], 2 * self.batch_size  # no activations kept for backward: twice the batch fits
        for start in range(0, self.val.shape[0], step):
            x = self.val[start : start + step].permute(0, 3, 1, 2).float().div_(255.0)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                parts.append(self.forward(x).float())
        self.model.train()
        return torch.softmax(torch.cat(parts), dim=1).cpu().numpy()  # the one host copy of the pass

    def run_epoch(self) -> float:
        """Train one epoch (N samples) plus one validation pass; training images per second."""
        self._sync()
        start = time.perf_counter()
        self.model.train()
        chunks = torch.split(self._epoch_indices(), self.batch_size)
        if self.drop_last and chunks and chunks[-1].shape[0] < self.batch_size:
            chunks = chunks[:-1]
        loss_sum = torch.zeros((), device=self.device)
        for idx in chunks:
            loss_sum += self._train_step(idx)
        mean_loss = float(loss_sum) / max(1, len(chunks))  # first host sync of the epoch
        self._validate()
        self._sync()
        seconds = time.perf_counter() - start
        if not math.isfinite(mean_loss):
            raise RuntimeError(f"bare loop diverged: mean loss {mean_loss}")
        return sum(int(c.shape[0]) for c in chunks) / seconds

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _model(arch: str, images: np.ndarray, *, num_classes: int, device: torch.device) -> nn.Module:
    mean, std = _stats(images)
    model = bare_network(
        arch,
        in_channels=images.shape[3],
        num_classes=num_classes,
        input_size=min(images.shape[1:3]),
        mean=mean,
        std=std,
    )
    return model.to(device, memory_format=torch.channels_last)


def _stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    sample = images[:: max(1, images.shape[0] // 2000)].astype(np.float64) / 255.0
    mean = sample.mean(axis=(0, 1, 2))
    std = np.maximum(sample.std(axis=(0, 1, 2)), 1e-3)
    return mean.tolist(), std.tolist()


def run_epochs(*, epochs: int, **trainer_args: object) -> list[float]:
    """Build a :class:`BareTrainer` and run ``epochs`` epochs; images/s of each (the first is warm-up)."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    trainer = BareTrainer(**trainer_args)  # type: ignore[arg-type]
    return [trainer.run_epoch() for _ in range(epochs)]
