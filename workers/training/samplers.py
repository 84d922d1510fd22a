"""Epoch index samplers for class imbalance: random, class-balanced, square-root, over- and under-sampling.

Every sampler is a pure function of ``(seed, epoch)``: :meth:`EpochSampler.indices`
seeds a fresh CPU ``torch.Generator`` with
``sha256(repr((seed, "sampler", epoch)))[:8] mod (2^63 - 1)`` (the same
derivation as ``seeding.derive_seed(seed, "sampler", epoch)``), so resuming at
epoch ``e`` needs no saved sampler state (like ``RASampler.set_epoch``).
Sampling runs on the CPU, so the order does not depend on the device, and the
indices are then moved to ``device``.

Epoch lengths: ``random`` N (a permutation), ``weighted`` and ``sqrt`` N draws
with replacement, ``oversample`` K·max n_c, ``undersample`` K·min n_c.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Protocol

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

SAMPLER_KINDS = ("random", "weighted", "sqrt", "oversample", "undersample")
_SEED_MODULUS = 2**63 - 1


def epoch_seed(seed: int, epoch: int) -> int:
    """The generator seed for one epoch; stable across processes and machines."""
    digest = hashlib.sha256(repr((int(seed), "sampler", int(epoch))).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % _SEED_MODULUS


class Sampler(Protocol):
    """What training asks of a sampler: its epoch length and each epoch's dataset indices."""

    @property
    def epoch_length(self) -> int: ...

    def indices(self, epoch: int) -> Tensor: ...


class EpochSampler:
    """Base class: ``indices(epoch)`` gives the epoch's dataset indices (int64, on ``device``)."""

    kind = "random"

    def __init__(self, *, labels: Tensor, seed: int, device: torch.device | str = "cpu") -> None:
        self.labels = labels.detach().to("cpu", torch.int64)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.counts = torch.bincount(self.labels)

    @property
    def epoch_length(self) -> int:
        return int(self.labels.numel())

    def indices(self, epoch: int) -> Tensor:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        return self._sample(generator).to(self.device)

    def _sample(self, generator: torch.Generator) -> Tensor:
        return torch.randperm(self.labels.numel(), generator=generator)

    def _grouped(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """All indices grouped by class in a random order within each class, and each one's rank in its class."""
        perm = torch.randperm(self.labels.numel(), generator=generator)
        order = perm[torch.argsort(self.labels[perm], stable=True)]
        starts = torch.cumsum(self.counts, 0) - self.counts
        rank = torch.arange(order.numel()) - starts[self.labels[order]]
        return order, rank

    @staticmethod
    def _shuffle(indices: Tensor, generator: torch.Generator) -> Tensor:
        return indices[torch.randperm(indices.numel(), generator=generator)]


class ClassWeightedSampler(EpochSampler):
    """N draws with replacement, class ``c`` drawn with probability ∝ ``n_c^(1-power)``.

    ``power=1`` is per-sample weight ``1/n_y`` (every class equally often in
    expectation); ``power=0.5`` is ``n_y^(-1/2)`` (class frequency ∝ sqrt(n_c)).
    It draws a class, then a uniform sample of that class, which has exactly
    the distribution of per-sample weights and avoids ``torch.multinomial``'s
    2^24-category limit.
    """

    def __init__(self, *, labels: Tensor, seed: int, device: torch.device | str = "cpu", power: float) -> None:
        super().__init__(labels=labels, seed=seed, device=device)
        self.kind = "weighted" if power == 1.0 else "sqrt"
        counts = self.counts.double()
        self.class_probs = counts.pow(1.0 - power) / counts.pow(1.0 - power).sum()
        self.order = torch.argsort(self.labels, stable=True)
        self.starts = torch.cumsum(self.counts, 0) - self.counts

    def _sample(self, generator: torch.Generator) -> Tensor:
        n = self.labels.numel()
        classes = torch.multinomial(self.class_probs, n, replacement=True, generator=generator)
        sizes = self.counts[classes]
        within = (torch.rand(n, generator=generator, dtype=torch.float64) * sizes).long()
        within = torch.minimum(within, sizes - 1)
        return self.order[self.starts[classes] + within]


class OverSampler(EpochSampler):
    """Each class to the largest class's count: ⌊max/n_c⌋ full copies plus a random top-up, shuffled."""

    kind = "oversample"

    @property
    def epoch_length(self) -> int:
        return int(self.counts.numel() * self.counts.max())

    def _sample(self, generator: torch.Generator) -> Tensor:
        order, rank = self._grouped(generator)
        target = self.counts.max()
        copies, top_up = target // self.counts, target % self.counts
        classes = self.labels[order]
        full = torch.repeat_interleave(order, copies[classes])
        extra = order[rank < top_up[classes]]
        return self._shuffle(torch.cat([full, extra]), generator)


class UnderSampler(EpochSampler):
    """Each class down to the smallest class's count: a fresh random subset per epoch, shuffled."""

    kind = "undersample"

    @property
    def epoch_length(self) -> int:
        return int(self.counts.numel() * self.counts.min())

    def _sample(self, generator: torch.Generator) -> Tensor:
        order, rank = self._grouped(generator)
        return self._shuffle(order[rank < self.counts.min()], generator)


def make_sampler(kind: str, *, labels: Tensor, seed: int, device: torch.device | str = "cpu") -> EpochSampler:
    """The epoch sampler ``kind`` (one of :data:`SAMPLER_KINDS`) over training ``labels`` ``(N,)``."""
    if kind not in SAMPLER_KINDS:
        raise ValueError(f"unknown sampler {kind!r}; supported: {', '.join(SAMPLER_KINDS)}")
    _check_labels(labels, class_aware=kind != "random")
    if kind == "random":
        return EpochSampler(labels=labels, seed=seed, device=device)
    if kind in ("weighted", "sqrt"):
        power = 1.0 if kind == "weighted" else 0.5
        return ClassWeightedSampler(labels=labels, seed=seed, device=device, power=power)
    cls = OverSampler if kind == "oversample" else UnderSampler
    return cls(labels=labels, seed=seed, device=device)


def _check_labels(labels: Tensor, *, class_aware: bool) -> None:
    if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.dtype.is_floating_point:
        raise TypeError(f"labels must be a 1-D integer tensor, got {type(labels).__name__}")
    if labels.numel() == 0:
        raise ValueError("labels is empty: there is nothing to sample")
    labels = labels.cpu()
    if int(labels.min()) < 0:
        raise ValueError(f"labels must be non-negative class indices, got minimum {int(labels.min())}")
    if class_aware:
        empty = torch.nonzero(torch.bincount(labels) == 0).flatten().tolist()
        if empty:
            raise ValueError(f"classes {empty} have no samples; class-aware samplers need every class present")
