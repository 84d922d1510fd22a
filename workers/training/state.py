"""What a run carries and leaves: its settings, per-epoch records, resumable state, why it stopped, its result.

``TrainingState.to_checkpoint()`` (or a ``snapshot()`` made into one later)
is a plain dict of tensors, numbers, strings, lists and dicts (safe for
``torch.load(weights_only=True)``);
``restore`` puts a run back exactly where it was after the last completed
epoch. Per-epoch randomness is derived from ``(seed, epoch)``, so no RNG state
needs saving.
"""

from __future__ import annotations

import enum
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


class StopReason(str, enum.Enum):
    """Why ``fit`` returned: ``completed`` and ``early_stopped`` are its own; the others are the reasons
    a caller's ``should_stop`` may give (the run stopped from outside, before its final evaluation)."""

    completed = "completed"
    early_stopped = "early_stopped"
    cancelled = "cancelled"
    deadline = "deadline"
    shutdown = "shutdown"
    lease_lost = "lease_lost"

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        """True when the run ended on its own (so it gets the final evaluation)."""
        return self in (StopReason.completed, StopReason.early_stopped)

    @classmethod
    def from_caller(cls, reason: object) -> StopReason:
        """``reason`` from ``should_stop`` as a member; ``ValueError`` naming the supported ones otherwise."""
        outside = [member.value for member in cls if not member.finished]
        if isinstance(reason, str) and reason in outside:
            return cls(reason)
        shown = reason.value if isinstance(reason, StopReason) else reason
        raise ValueError(f"should_stop returned {shown!r}; supported stop reasons: {', '.join(outside)}")


@dataclass
class FitResult:
    """``model``: best weights, eval mode, on the CPU. ``val``/``test``: blocks decided by the rule tuned on
    val; ``threshold``: that rule's threshold on the binary positive class (``None`` for the arg-max or a
    rule on another class).

    ``val_probs``/``test_probs``: the final model's softmax ``(N, K)`` on each split (``None`` when not
    evaluated), for fitting calibration and operating points after training.
    """

    model: nn.Module
    history: list[EpochRecord]
    best_epoch: int
    best_score: float
    threshold: float | None
    positive_class: int | None
    val: dict | None
    test: dict | None
    stopped: StopReason
    compile_seconds: float
    val_probs: np.ndarray | None = None
    test_probs: np.ndarray | None = None


@dataclass(frozen=True)
class TrainConfig:
    """The fixed settings of one ``fit`` call."""

    epochs: int
    batch_size: int
    eval_batch_size: int
    seed: int
    device: torch.device
    amp: bool
    channels_last: bool
    patience: int | None
    min_delta: float
    freeze_backbone_epochs: int
    logit_adjustment: torch.Tensor | None = None

    @classmethod
    def create(
        cls,
        *,
        epochs: int,
        batch_size: int,
        eval_batch_size: int | None,
        seed: int,
        device: torch.device,
        amp: bool | None,
        channels_last: bool,
        patience: int | None,
        min_delta: float,
        freeze_backbone_epochs: int,
        logit_adjustment: torch.Tensor | None,
    ) -> TrainConfig:
        """The run's settings from ``fit``'s arguments; ``ValueError`` naming a bad one."""
        for name, value in (("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (BatchNorm needs 2 samples), got {batch_size}")
        if patience is not None and patience < 1:
            raise ValueError(f"early_stopping_patience must be >= 1 or None, got {patience!r}")
        if min_delta < 0 or freeze_backbone_epochs < 0:
            raise ValueError(
                f"early_stopping_min_delta and freeze_backbone_epochs must be >= 0, "
                f"got {min_delta!r} and {freeze_backbone_epochs!r}"
            )
        cuda = device.type == "cuda"
        return cls(
            epochs=epochs,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size or 2 * batch_size,
            seed=seed,
            device=device,
            amp=cuda if amp is None else bool(amp),
            channels_last=bool(channels_last),
            patience=patience,
            min_delta=float(min_delta),
            freeze_backbone_epochs=freeze_backbone_epochs,
            logit_adjustment=logit_adjustment,
        )


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
