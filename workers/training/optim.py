"""Optimisers and learning-rate schedules: linear warm-up, then cosine, one-cycle, step or plateau.

:class:`LrSchedule` is stepped twice: ``step_batch()`` after every optimiser
step and ``step_epoch(score)`` after every epoch, and its whole state is plain
numbers, so a checkpoint resumes it exactly. Cosine annealing follows
Loshchilov & Hutter 2017 ("SGDR", without restarts); one-cycle follows
Smith & Topin 2019 ("Super-Convergence") via ``torch.optim.lr_scheduler.OneCycleLR``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import OneCycleLR, ReduceLROnPlateau

logger = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("none", "cosine", "onecycle", "plateau", "step")
PLATEAU_FACTOR = 0.1
PLATEAU_PATIENCE = 3


def make_optimizer(
    name: str, params: Iterable[Any], *, lr: float, weight_decay: float = 0.0, momentum: float = 0.9
) -> Optimizer:
    """``adamw`` (decoupled decay, Loshchilov & Hutter 2019), ``adam`` (L2 decay) or ``sgd`` (momentum)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; supported: {', '.join(OPTIMIZERS)}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    params = list(params)
    if not params:
        raise ValueError("make_optimizer got no parameters")
    # The fused CUDA kernels update every tensor in one launch; only valid when all live on CUDA.
    fused = all(p.is_cuda for p in _flat_params(params)) or None
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=False)


def _flat_params(params: list[Any]) -> list[torch.Tensor]:
    flat: list[torch.Tensor] = []
    for item in params:
        flat.extend(item["params"] if isinstance(item, dict) else [item])
    return flat


def make_scheduler(
    name: str,
    optimizer: Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: int = 0,
    milestones: Sequence[float] = (0.5, 0.75),
    step_gamma: float = 0.1,
) -> LrSchedule:
    """A schedule over ``epochs × steps_per_epoch`` optimiser steps (see :class:`LrSchedule`)."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; supported: {', '.join(SCHEDULERS)}")
    for label, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive int, got {value!r}")
    if not 0 <= warmup_epochs <= epochs:
        raise ValueError(f"warmup_epochs must be in [0, epochs={epochs}], got {warmup_epochs!r}")
    if any(not 0 < m < 1 for m in milestones):
        raise ValueError(f"milestones must be fractions of the epochs in (0, 1), got {list(milestones)}")
    if not 0 < step_gamma <= 1:
        raise ValueError(f"step_gamma must be in (0, 1], got {step_gamma!r}")
    return LrSchedule(
        name,
        optimizer,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        warmup_epochs=warmup_epochs,
        milestones=milestones,
        step_gamma=step_gamma,
    )


class LrSchedule:
    """Linear warm-up over ``warmup_epochs`` then the named schedule.

    - ``none``: constant.  ``cosine``: per step from the base lr to 0.
    - ``step``: × ``step_gamma`` at each milestone epoch (``round(fraction × epochs)``).
    - ``onecycle``: ``OneCycleLR``; its warm-up fraction is ``warmup_epochs / epochs``
      (torch's default 0.3 when 0).
    - ``plateau``: ``ReduceLROnPlateau(mode="max", factor=0.1, patience=3)`` on the
      score given to ``step_epoch``, fed only after the warm-up.

    The warm-up lr of step ``s`` (0-based) is ``base · (s + 1) / warmup_steps``.
    """

    def __init__(
        self,
        name: str,
        optimizer: Optimizer,
        *,
        epochs: int,
        steps_per_epoch: int,
        warmup_epochs: int,
        milestones: Sequence[float],
        step_gamma: float,
    ) -> None:
        self.name, self.optimizer = name, optimizer
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = epochs * steps_per_epoch
        self.warmup_steps = warmup_epochs * steps_per_epoch
        self.milestone_epochs = sorted({max(1, round(m * epochs)) for m in milestones})
        self.step_gamma = step_gamma
        self.base_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        self.step_count = 0
        self.epoch_count = 0
        self.inner: OneCycleLR | ReduceLROnPlateau | None = None
        if name == "onecycle":
            pct = warmup_epochs / epochs if warmup_epochs else 0.3
            self.inner = OneCycleLR(
                optimizer, max_lr=self.base_lrs, total_steps=self.total_steps, pct_start=min(max(pct, 1e-6), 0.99)
            )
        else:
            if name == "plateau":
                self.inner = ReduceLROnPlateau(optimizer, mode="max", factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE)
            self._apply()

    def _factor(self, step: int) -> float:
        """The multiplier of the base lr for 0-based optimiser step ``step`` (not onecycle/plateau)."""
        warm = (step + 1) / self.warmup_steps if step < self.warmup_steps else 1.0
        if self.name == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            t = min(max(step - self.warmup_steps, 0), span)
            return warm * 0.5 * (1.0 + math.cos(math.pi * t / span))
        if self.name == "step":
            epoch = step // self.steps_per_epoch
            return warm * self.step_gamma ** sum(epoch >= m for m in self.milestone_epochs)
        return warm

    def _apply(self) -> None:
        if self.name == "plateau" and self.step_count >= self.warmup_steps:
            return  # after the warm-up ReduceLROnPlateau owns the lr
        factor = self._factor(self.step_count)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor

    def step_batch(self) -> None:
        """Call after every optimiser step."""
        self.step_count += 1
        if isinstance(self.inner, OneCycleLR):
            if self.step_count < self.total_steps:  # OneCycleLR refuses to step past its end
                self.inner.step()
            return
        self._apply()

    def step_epoch(self, score: float | None = None) -> None:
        """Call after every epoch with the validation selection score (higher is better)."""
        self.epoch_count += 1
        if isinstance(self.inner, ReduceLROnPlateau) and self.step_count >= self.warmup_steps:
            if score is None or not math.isfinite(score):
                logger.debug("plateau scheduler skipped epoch %d: score %r", self.epoch_count, score)
                return
            self.inner.step(score)

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "step_count": self.step_count,
            "epoch_count": self.epoch_count,
            "base_lrs": list(self.base_lrs),
            "inner": None if self.inner is None else self.inner.state_dict(),
            "lrs": [float(group["lr"]) for group in self.optimizer.param_groups],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"scheduler state is for {state.get('name')!r}, this schedule is {self.name!r}")
        self.step_count = int(state["step_count"])
        self.epoch_count = int(state["epoch_count"])
        self.base_lrs = [float(lr) for lr in state["base_lrs"]]
        if self.inner is not None and state["inner"] is not None:
            self.inner.load_state_dict(state["inner"])
        for group, lr in zip(self.optimizer.param_groups, state["lrs"], strict=True):
            group["lr"] = float(lr)
