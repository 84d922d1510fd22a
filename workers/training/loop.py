"""One training epoch on the device: gather → augment → mix → forward (autocast) → backward → step.

The loss is summed on the device and read once per epoch, so the host never
waits for the GPU inside the loop. ``should_stop`` is polled before every
batch; a non-``None`` reason abandons the epoch.

Batches: when the epoch has at least ``batch_size`` indices the final partial
batch is dropped (fixed shapes: no recompilation under ``torch.compile``, no
tiny BatchNorm batches); a smaller epoch is one batch of everything (it must
hold at least 2 samples, which BatchNorm needs in training mode).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim import Optimizer

from workers.training.augment import Augmenter
from workers.training.copy_paste import CopyPaste
from workers.training.data import BatchSource
from workers.training.evaluation import hard_targets
from workers.training.mixing import Mixer
from workers.training.optim import LrSchedule
from workers.training.samplers import Sampler
from workers.training.state import StopReason

logger = logging.getLogger(__name__)


def steps_per_epoch(epoch_length: int, batch_size: int) -> int:
    """Optimiser steps in an epoch of ``epoch_length`` indices (see the module docstring)."""
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2, got {batch_size}")
    if epoch_length < 2:
        raise ValueError(f"an epoch needs at least 2 samples, got {epoch_length}")
    return epoch_length // batch_size if epoch_length >= batch_size else 1


def check_schedule(scheduler: LrSchedule, sampler: Sampler, batch_size: int) -> None:
    """``ValueError`` unless ``scheduler`` was built for the sampler's steps per epoch at ``batch_size``."""
    expected = steps_per_epoch(int(sampler.epoch_length), batch_size)
    if scheduler.steps_per_epoch != expected:
        raise ValueError(
            f"scheduler was built for {scheduler.steps_per_epoch} steps per epoch, but the sampler's "
            f"{sampler.epoch_length} indices at batch_size {batch_size} give {expected}; use steps_per_epoch()"
        )


@dataclass(frozen=True)
class StepParts:
    """Everything one optimiser step needs; ``network`` may be a ``torch.compile`` wrapper."""

    network: nn.Module
    optimizer: Optimizer
    scheduler: LrSchedule
    criterion: nn.Module
    augment: Augmenter | None
    mixer: Mixer | None
    copy_paste: CopyPaste | None
    num_classes: int
    device: torch.device
    amp: bool
    channels_last: bool


@dataclass
class EpochOutcome:
    mean_loss: float
    steps: int
    images: int
    train_seconds: float
    first_step_seconds: float
    stop_reason: StopReason | None


def train_epoch(
    parts: StepParts,
    *,
    source: BatchSource,
    indices: torch.Tensor,
    batch_size: int,
    augment_generator: torch.Generator,
    mix_generator: torch.Generator,
    paste_generator: torch.Generator,
    should_stop: Callable[[], StopReason | None] | None,
    time_first_step: bool = False,
) -> EpochOutcome:
    """Run one epoch over ``indices``; ``time_first_step`` syncs around step 1 (compile time)."""
    steps_per_epoch(int(indices.shape[0]), batch_size)  # validates the epoch size
    drop_last = int(indices.shape[0]) >= batch_size
    loss_sum = torch.zeros((), device=parts.device)
    steps = images_seen = 0
    first_step_seconds = 0.0
    started = time.perf_counter()
    for images, labels in source.iter_batches(indices, batch_size, drop_last=drop_last):
        reason = should_stop() if should_stop is not None else None
        if reason is not None:
            elapsed = time.perf_counter() - started
            stop = StopReason.from_caller(reason)
            return EpochOutcome(math.nan, steps, images_seen, elapsed, first_step_seconds, stop)
        generators = (augment_generator, mix_generator, paste_generator)
        batch = (parts, source, images, labels, generators, loss_sum)
        if time_first_step and steps == 0:
            first_step_seconds = _timed(parts.device, functools.partial(_step, *batch))
        else:
            _step(*batch)
        steps += 1
        images_seen += int(labels.shape[0])
    total = float(loss_sum)  # the one host sync of the epoch
    if not math.isfinite(total):
        raise FloatingPointError(f"training loss became {total}; lower the learning rate or check the data")
    elapsed = time.perf_counter() - started
    return EpochOutcome(total / max(steps, 1), steps, images_seen, elapsed, first_step_seconds, None)


def _step(
    parts: StepParts,
    source: BatchSource,
    images: torch.Tensor,
    labels: torch.Tensor,
    generators: tuple[torch.Generator, torch.Generator, torch.Generator],
    loss_sum: torch.Tensor,
) -> None:
    augment_generator, mix_generator, paste_generator = generators
    images = _augmented(parts, images, labels, augment_generator)
    if parts.copy_paste is not None:  # after augmentation, so a pasted object keeps its own geometry
        images, labels = parts.copy_paste(images, labels, generator=paste_generator)
    if parts.mixer is not None:

        def fetch(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            partner_images, partner_labels = source.batch(indices)
            return _augmented(parts, partner_images, partner_labels, augment_generator), partner_labels

        images, targets = parts.mixer(images, labels, generator=mix_generator, fetch=fetch)
    else:
        targets = hard_targets(labels, parts.num_classes)
    memory_format = torch.channels_last if parts.channels_last else torch.contiguous_format
    images = images.contiguous(memory_format=memory_format)
    with torch.autocast(device_type=parts.device.type, dtype=torch.bfloat16, enabled=parts.amp):
        logits = parts.network(images)
    loss = parts.criterion(logits.float(), targets)
    parts.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    parts.optimizer.step()
    parts.scheduler.step_batch()
    loss_sum += loss.detach()


def _augmented(
    parts: StepParts, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    if parts.augment is None or parts.augment.is_identity:
        return images
    return parts.augment(images, labels, generator=generator)


def _timed(device: torch.device, work: Callable[[], None]) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started
