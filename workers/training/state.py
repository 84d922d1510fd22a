"""What survives an epoch: the per-epoch record and the resumable training state.

``TrainingState.to_checkpoint()`` (or a ``snapshot()`` made into one later)
is a plain dict of tensors, numbers, strings, lists and dicts (safe for
``torch.load(weights_only=True)``);
``restore`` puts a run back exactly where it was after the last completed
epoch. Per-epoch randomness is derived from ``(seed, epoch)``, so no RNG state
needs saving.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from workers.training.optim import LrSchedule

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class EpochRecord:
    """One completed epoch (1-based ``epoch``); ``val`` is the validation metric block."""

    epoch: int
    train_loss: float
    val_loss: float | None
    val: dict | None
    lr: float
    seconds: float
    images_per_second: float

    def to_dict(self) -> dict[str, Any]:
        return plain(asdict(self))


def plain(value: Any) -> Any:
    """``value`` with NumPy scalars/arrays and tuples turned into Python numbers and lists (JSON-ready)."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def state_copy(module_or_state: nn.Module | dict[str, Tensor]) -> dict[str, Tensor]:
    """A detached copy of a state dict where it lives (never aliasing the live weights): on a GPU a
    device-to-device copy, so keeping the best weights costs the training thread no host transfer."""
    return _frozen_copy(module_or_state.state_dict() if isinstance(module_or_state, nn.Module) else module_or_state)


def _map_tensors(value: Any, leaf: Callable[[Tensor], Tensor]) -> Any:
    """``value`` rebuilt with ``leaf`` applied to each tensor; dicts, lists and tuples are new containers."""
    if torch.is_tensor(value):
        return leaf(value)
    if isinstance(value, dict):
        return {key: _map_tensors(item, leaf) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_map_tensors(item, leaf) for item in value)
    return value


def _frozen_copy(value: Any) -> Any:
    """``value`` with each tensor cloned where it lives and each dict and list copied: nothing later
    training does (in-place updates, appended lists) reaches it."""
    return _map_tensors(value, lambda tensor: tensor.detach().clone())


def _on_host(value: Any) -> Any:
    # Only for private copies: a tensor already on the CPU is used as it is.
    return _map_tensors(value, lambda tensor: tensor.to("cpu"))


@dataclass(frozen=True)
class Snapshot:
    """The training state after one epoch, taken cheaply on the training thread and made into a
    checkpoint dict later, on whichever thread writes it.

    Taking it clones tensors where they live (on a GPU, a device-to-device copy), so the training
    thread never waits for a host transfer: ``to_checkpoint`` does that and the conversion of the
    history to plain dicts.
    """

    epoch: int
    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    best_state: dict[str, Tensor] | None
    best_score: float
    best_epoch: int
    epochs_without_improvement: int
    history: tuple[EpochRecord, ...]

    def to_checkpoint(self) -> dict[str, Any]:
        """Keys: format_version, epoch, model, optimizer, scheduler, best_state, best_score,
        best_epoch, epochs_without_improvement, history (list of EpochRecord dicts)."""
        return {
            "format_version": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "model": _on_host(self.model),
            "optimizer": _on_host(self.optimizer),
            "scheduler": self.scheduler,
            "best_state": _on_host(self.best_state),
            "best_score": float(self.best_score),
            "best_epoch": self.best_epoch,
            "epochs_without_improvement": self.epochs_without_improvement,
            "history": [record.to_dict() for record in self.history],
        }


@dataclass
class TrainingState:
    """The live objects of a run plus its bookkeeping; ``epoch`` is the last completed epoch."""

    model: nn.Module
    optimizer: Optimizer
    scheduler: LrSchedule
    epoch: int = 0
    best_state: dict[str, Tensor] | None = None  # replaced, never updated in place
    best_score: float = -math.inf
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    history: list[EpochRecord] = field(default_factory=list)

    def snapshot(self) -> Snapshot:
        """The state as it is now; training on does not change it."""
        return Snapshot(
            epoch=self.epoch,
            model=state_copy(self.model),
            optimizer=_frozen_copy(self.optimizer.state_dict()),
            scheduler=_frozen_copy(self.scheduler.state_dict()),
            # Replaced, never updated in place: the snapshot can share it.
            best_state=self.best_state,
            best_score=self.best_score,
            best_epoch=self.best_epoch,
            epochs_without_improvement=self.epochs_without_improvement,
            history=tuple(self.history),
        )

    def to_checkpoint(self) -> dict[str, Any]:
        """``snapshot().to_checkpoint()``: the state as a plain dict of CPU tensors and numbers."""
        return self.snapshot().to_checkpoint()

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Load a ``to_checkpoint()`` dict into the live model, optimiser and scheduler."""
        version = checkpoint.get("format_version")
        if version != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format_version {version!r} is not supported (expected {CHECKPOINT_FORMAT})")
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        _match_param_layout(self.optimizer)
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.epoch = int(checkpoint["epoch"])
        best = checkpoint["best_state"]
        self.best_state = None if best is None else state_copy(best)
        self.best_score = float(checkpoint["best_score"])
        self.best_epoch = int(checkpoint["best_epoch"])
        self.epochs_without_improvement = int(checkpoint["epochs_without_improvement"])
        self.history = [EpochRecord(**record) for record in checkpoint["history"]]
        logger.info("resumed after epoch %d (best epoch %d)", self.epoch, self.best_epoch)


def _match_param_layout(optimizer: Optimizer) -> None:
    # Moments saved from channels_last weights (or loaded contiguous) must match the live
    # parameter's strides, or fused/foreach kernels fall back or refuse.
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    optimizer.state[param][key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
