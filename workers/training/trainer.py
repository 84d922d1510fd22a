"""The working set of one ``fit`` call: sources, compiled network, state; one method per concern.

Internal to the core: use :func:`workers.training.engine.fit`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer

from workers.training.augment import Augmenter
from workers.training.copy_paste import CopyPaste
from workers.training.data import BatchSource, Split
from workers.training.evaluation import Scored, Scoring, evaluate
from workers.training.loop import StepParts, steps_per_epoch, train_epoch
from workers.training.losses import Criterion
from workers.training.mixing import Mixer
from workers.training.networks import set_backbone_trainable
from workers.training.optim import LrSchedule
from workers.training.samplers import Sampler
from workers.training.seeding import derive_seed, make_generator
from workers.training.state import EpochRecord, TrainingState, state_copy

logger = logging.getLogger(__name__)


@dataclass
class FitResult:
    """``model``: best weights, eval mode, on the CPU. ``val``/``test``: blocks with the chosen threshold."""

    model: nn.Module
    history: list[EpochRecord]
    best_epoch: int
    best_score: float
    threshold: float | None
    positive_class: int | None
    val: dict | None
    test: dict | None
    stopped: str
    compile_seconds: float


@dataclass(frozen=True)
class TrainConfig:
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


def _check_schedule(scheduler: LrSchedule, sampler: Sampler, batch_size: int) -> None:
    expected = steps_per_epoch(int(sampler.epoch_length), batch_size)
    if scheduler.steps_per_epoch != expected:
        raise ValueError(
            f"scheduler was built for {scheduler.steps_per_epoch} steps per epoch, but the sampler's "
            f"{sampler.epoch_length} indices at batch_size {batch_size} give {expected}; use steps_per_epoch()"
        )


def _checked_adjustment(model: nn.Module, adjustment: torch.Tensor) -> torch.Tensor:
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear) or head.bias is None:
        raise ValueError("logit_adjustment needs a model whose .head is an nn.Linear with a bias (a Classifier)")
    if tuple(adjustment.shape) != (head.out_features,):
        raise ValueError(f"logit_adjustment must have shape ({head.out_features},), got {tuple(adjustment.shape)}")
    if not bool(torch.isfinite(adjustment).all()):
        raise ValueError("logit_adjustment must be finite")
    return adjustment.detach().float()


class Trainer:
    """One ``fit`` call's working set; every method stays on one concern."""

    def __init__(
        self,
        *,
        config: TrainConfig,
        scoring: Scoring,
        model: nn.Module,
        criterion: Criterion,
        optimizer: Optimizer,
        scheduler: LrSchedule,
        sampler: Sampler,
        mixer: Mixer | None,
        augment: Augmenter | None,
        copy_paste: CopyPaste | None = None,
        compile: bool,
        train: Split,
        val: Split | None,
        test: Split | None,
    ) -> None:
        _check_schedule(scheduler, sampler, config.batch_size)
        if config.freeze_backbone_epochs and not hasattr(model, "backbone"):
            raise ValueError("freeze_backbone_epochs needs a model with a .backbone (a Classifier)")
        self.config, self.scoring, self.model, self.sampler = config, scoring, model, sampler
        self.criterion = criterion
        device = config.device
        model.to(device)
        criterion.to(device)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        self.train_source = BatchSource.create(train, device=device)
        self.val_source = None if val is None else BatchSource.create(val, device=device)
        self.test_source = None if test is None else BatchSource.create(test, device=device)
        self.val_labels = None if val is None else val.label_tensor.numpy()
        self.test_labels = None if test is None else test.label_tensor.numpy()
        self.compiled = compile
        network = cast(nn.Module, torch.compile(model)) if compile else model
        self.parts = StepParts(
            network=network,
            optimizer=optimizer,
            scheduler=scheduler,
            criterion=criterion,
            augment=augment,
            mixer=mixer,
            copy_paste=copy_paste,
            num_classes=len(scoring.class_names),
            device=device,
            amp=config.amp,
            channels_last=config.channels_last,
        )
        self.state = TrainingState(model=model, optimizer=optimizer, scheduler=scheduler)
        self.compile_seconds = 0.0
        self._stop_reason = "completed"
        adjustment = config.logit_adjustment
        self.logit_adjustment = None if adjustment is None else _checked_adjustment(model, adjustment).to(device)

    def resume(self, checkpoint: dict) -> None:
        if int(checkpoint.get("epoch", -1)) > self.config.epochs:
            raise ValueError(f"checkpoint is at epoch {checkpoint.get('epoch')}, beyond epochs={self.config.epochs}")
        self.state.restore(checkpoint)

    def run(
        self,
        *,
        on_epoch_end: Callable[[EpochRecord, TrainingState], None] | None,
        should_stop: Callable[[], str | None] | None,
    ) -> str:
        for epoch in range(self.state.epoch + 1, self.config.epochs + 1):
            record = self._epoch(epoch, should_stop)
            if record is None:
                return self._stop_reason
            if on_epoch_end is not None:
                on_epoch_end(record, self.state)
            patience = self.config.patience
            if patience is not None and self.state.epochs_without_improvement >= patience:
                logger.info("early stopping after epoch %d (best epoch %d)", epoch, self.state.best_epoch)
                return "early_stopped"
        return "completed"

    def _epoch(self, epoch: int, should_stop: Callable[[], str | None] | None) -> EpochRecord | None:
        started = time.perf_counter()
        self._prepare_epoch(epoch)
        outcome = train_epoch(
            self.parts,
            source=self.train_source,
            indices=self.sampler.indices(epoch),
            batch_size=self.config.batch_size,
            should_stop=should_stop,
            augment_generator=make_generator(derive_seed(self.config.seed, "augment", epoch), self.config.device),
            mix_generator=make_generator(derive_seed(self.config.seed, "mix", epoch), "cpu"),
            paste_generator=make_generator(derive_seed(self.config.seed, "copy_paste", epoch), "cpu"),
            time_first_step=self.compiled and self.compile_seconds == 0.0,
        )
        if self.compiled and self.compile_seconds == 0.0:
            self.compile_seconds = outcome.first_step_seconds
        if outcome.stop_reason is not None:
            logger.info("stopping in epoch %d: %s (partial epoch discarded)", epoch, outcome.stop_reason)
            self._stop_reason = outcome.stop_reason
            return None
        scored = self._evaluate_val(tune=True)
        score = -outcome.mean_loss if scored is None else scored.score
        self._update_best(epoch, score)
        self.state.scheduler.step_epoch(score)
        train_seconds = max(outcome.train_seconds - outcome.first_step_seconds, 1e-9)
        record = EpochRecord(
            epoch=epoch,
            train_loss=outcome.mean_loss,
            val_loss=None if scored is None else scored.loss,
            val=None if scored is None else scored.block,
            lr=self.state.scheduler.current_lr(),
            seconds=time.perf_counter() - started,
            images_per_second=outcome.images / train_seconds,
        )
        self.state.history.append(record)
        self.state.epoch = epoch
        logger.info(
            "epoch %d: train_loss %.4f score %.4f (%.0f img/s)",
            epoch,
            record.train_loss,
            score,
            record.images_per_second,
        )
        return record

    def _prepare_epoch(self, epoch: int) -> None:
        torch.manual_seed(derive_seed(self.config.seed, "torch", epoch))  # dropout / stochastic depth
        self.criterion.set_epoch(epoch)
        frozen = epoch <= self.config.freeze_backbone_epochs
        if hasattr(self.model, "backbone"):
            set_backbone_trainable(self.model, not frozen)
        self.model.train()
        if frozen and hasattr(self.model, "backbone"):
            self.model.get_submodule("backbone").eval()  # a frozen backbone also keeps its BatchNorm statistics

    def _evaluate_val(self, *, tune: bool, threshold: float | None = None) -> Scored | None:
        return self._evaluate(self.val_source, self.val_labels, tune=tune, threshold=threshold)

    def _evaluate(
        self, source: BatchSource | None, labels: np.ndarray | None, *, tune: bool, threshold: float | None
    ) -> Scored | None:
        if source is None or labels is None:
            return None
        probs, loss = evaluate(
            self.parts.network,
            source,
            batch_size=self.config.eval_batch_size,
            device=self.config.device,
            amp=self.config.amp,
            channels_last=self.config.channels_last,
            logit_adjustment=self.logit_adjustment,
        )
        return self.scoring.score(probs, loss, labels, threshold=threshold, tune=tune)

    def _update_best(self, epoch: int, score: float) -> None:
        state = self.state
        improved = state.best_state is None or score > state.best_score + self.config.min_delta
        if improved:
            state.best_state, state.best_score, state.best_epoch = state_copy(self.model), score, epoch
            state.epochs_without_improvement = 0
        else:
            state.epochs_without_improvement += 1

    def finish(self, stopped: str) -> FitResult:
        state = self.state
        if state.best_state is not None:
            self.model.load_state_dict(state.best_state)
        val_block = threshold = test_block = None
        # Only a finished run pays for the final evaluation; a run stopped from
        # outside (cancel, deadline, shutdown, lost lease) must yield quickly.
        if stopped not in ("completed", "early_stopped") or state.best_state is None:
            best = next((r for r in state.history if r.epoch == state.best_epoch), None)
            val_block = None if best is None else best.val
            threshold = None if val_block is None else val_block.get("threshold")
        else:
            scored_val = self._evaluate_val(tune=True)
            if scored_val is not None:
                val_block, threshold = scored_val.block, scored_val.threshold
            scored_test = self._evaluate(self.test_source, self.test_labels, tune=False, threshold=threshold)
            test_block = None if scored_test is None else scored_test.block
        if hasattr(self.model, "backbone"):
            set_backbone_trainable(self.model, True)
        if self.logit_adjustment is not None:
            with torch.no_grad():  # the exported model predicts with the adjusted logits
                bias = cast(nn.Linear, self.model.get_submodule("head")).bias
                bias.sub_(self.logit_adjustment.to(bias))
        model = self.model.to("cpu").to(memory_format=torch.contiguous_format).eval()
        return FitResult(
            model=model,
            history=list(state.history),
            best_epoch=state.best_epoch,
            best_score=state.best_score if state.best_state is not None else math.nan,
            threshold=threshold,
            positive_class=self.scoring.positive_class,
            val=val_block,
            test=test_block,
            stopped=stopped,
            compile_seconds=self.compile_seconds,
        )
