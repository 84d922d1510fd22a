"""``fit``: the training loop of the core, with model selection, early stopping, resume and cancel.

Per epoch (1-based): ``criterion.set_epoch``, the sampler's indices, one pass
of :func:`~workers.training.loop.train_epoch`, evaluation on ``val``, the
threshold (binary: tuned on ``val`` for ``positive_class``, default the train minority), the
metric block and the selection score, best-weights bookkeeping, early
stopping, ``scheduler.step_epoch(score)`` and ``on_epoch_end(record, state)``
(where the caller checkpoints with ``state.to_checkpoint()``).

Without a ``val`` split the model is selected on the lowest training loss
(score = ``-train_loss``) and no threshold is tuned.

Randomness: augmentation and mixing use generators seeded by
``derive_seed(seed, "augment"|"mix", epoch)`` and the global torch RNG
(dropout, stochastic depth) is re-seeded from ``derive_seed(seed, "torch",
epoch)`` at each epoch start, so a resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import cast

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer

from workers.training.augment import Augmenter
from workers.training.copy_paste import CopyPaste
from workers.training.data import BatchSource, Split
from workers.training.evaluation import Scored, Scoring, evaluate
from workers.training.loop import StepParts, check_schedule, steps_per_epoch, train_epoch
from workers.training.losses import Criterion
from workers.training.mixing import Mixer
from workers.training.networks import set_backbone_trainable
from workers.training.optim import LrSchedule
from workers.training.samplers import Sampler
from workers.training.seeding import derive_seed, make_generator
from workers.training.state import EpochRecord, FitResult, StopReason, TrainConfig, TrainingState, state_copy

logger = logging.getLogger(__name__)

__all__ = ["EpochRecord", "FitResult", "StopReason", "TrainingState", "evaluate", "fit", "steps_per_epoch"]


def fit(
    *,
    model: nn.Module,
    train: Split,
    val: Split | None,
    test: Split | None,
    class_names: Sequence[str],
    criterion: Criterion,
    optimizer: Optimizer,
    scheduler: LrSchedule,
    sampler: Sampler,
    mixer: Mixer | None = None,
    augment: Augmenter | None = None,
    copy_paste: CopyPaste | None = None,
    epochs: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    selection_metric: str = "balanced_accuracy",
    early_stopping_patience: int | None = None,
    early_stopping_min_delta: float = 0.0,
    threshold_strategy: str = "none",
    target_recall: float | None = None,
    positive_class: int | None = None,
    freeze_backbone_epochs: int = 0,
    compile: bool = False,
    amp: bool | None = None,
    channels_last: bool = True,
    on_epoch_end: Callable[[EpochRecord, TrainingState], None] | None = None,
    should_stop: Callable[[], StopReason | None] | None = None,
    resume: dict | None = None,
    eval_batch_size: int | None = None,
    logit_adjustment: torch.Tensor | None = None,
) -> FitResult:
    """Train ``model`` on ``train`` and return the best model and its metrics (see the module docstring).

    ``should_stop`` is polled before every batch; a non-``None`` reason
    (a ``StopReason`` other than ``completed``/``early_stopped``, or its value)
    discards the partial epoch and returns the best model so far with
    ``stopped=reason``; after such a stop no final evaluation runs (``test`` is
    ``None``, ``val`` is the best epoch's block).
    ``channels_last`` (default on) runs the network in NHWC memory, which the
    batches already are: faster convolutions on CUDA and on CPU (oneDNN).
    ``resume`` is a ``TrainingState.to_checkpoint()`` dict; training continues
    at its epoch + 1. ``scheduler`` must be built with
    ``steps_per_epoch(sampler.epoch_length, batch_size)``.
    ``logit_adjustment`` ``(K,)`` is subtracted from the logits in every evaluation (post-hoc logit
    adjustment, e.g. ``long_tail.posthoc_adjustment``) and folded into the returned model's head bias,
    so the exported model predicts with the adjusted logits.
    """
    device = torch.device(device)
    config = TrainConfig.create(
        epochs=epochs,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        seed=seed,
        device=device,
        amp=amp,
        channels_last=channels_last,
        patience=early_stopping_patience,
        min_delta=early_stopping_min_delta,
        freeze_backbone_epochs=freeze_backbone_epochs,
        logit_adjustment=logit_adjustment,
    )
    scoring = Scoring.create(
        train,
        class_names,
        selection_metric=selection_metric,
        threshold_strategy=threshold_strategy,
        target_recall=target_recall,
        positive_class=positive_class,
    )
    trainer = Trainer(
        config=config,
        scoring=scoring,
        model=model,
        criterion=criterion,
        optimizer=optimizer,
        scheduler=scheduler,
        sampler=sampler,
        mixer=mixer,
        copy_paste=copy_paste,
        augment=augment,
        compile=compile,
        train=train,
        val=val,
        test=test,
    )
    if resume is not None:
        trainer.resume(resume)
    stopped = trainer.run(on_epoch_end=on_epoch_end, should_stop=should_stop)
    return trainer.finish(stopped)


def fold_logit_adjustment(model: nn.Module, adjustment: torch.Tensor) -> None:
    """Subtract ``adjustment`` ``(K,)`` from ``model.head``'s bias: the model then predicts ``z − adjustment``."""
    checked = _checked_adjustment(model, adjustment)
    with torch.no_grad():
        bias = cast(nn.Linear, model.get_submodule("head")).bias
        bias.sub_(checked.to(bias))


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
    """One ``fit`` call's working set (sources, compiled network, state); one method per concern."""

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
        check_schedule(scheduler, sampler, config.batch_size)
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
        self._stop_reason = StopReason.completed
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
        should_stop: Callable[[], StopReason | None] | None,
    ) -> StopReason:
        for epoch in range(self.state.epoch + 1, self.config.epochs + 1):
            record = self._epoch(epoch, should_stop)
            if record is None:
                return self._stop_reason
            if on_epoch_end is not None:
                on_epoch_end(record, self.state)
            patience = self.config.patience
            if patience is not None and self.state.epochs_without_improvement >= patience:
                logger.info("early stopping after epoch %d (best epoch %d)", epoch, self.state.best_epoch)
                return StopReason.early_stopped
        return StopReason.completed

    def _epoch(self, epoch: int, should_stop: Callable[[], StopReason | None] | None) -> EpochRecord | None:
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

    def finish(self, stopped: StopReason) -> FitResult:
        state = self.state
        if state.best_state is not None:
            self.model.load_state_dict(state.best_state)
        val_block = threshold = test_block = val_probs = test_probs = None
        # Only a finished run pays for the final evaluation; a run stopped from
        # outside (cancel, deadline, shutdown, lost lease) must yield quickly.
        if not stopped.finished or state.best_state is None:
            best = next((r for r in state.history if r.epoch == state.best_epoch), None)
            val_block = None if best is None else best.val
            threshold = None if val_block is None else val_block.get("threshold")
        else:
            scored_val = self._evaluate_val(tune=True)
            if scored_val is not None:
                val_block, threshold, val_probs = scored_val.block, scored_val.threshold, scored_val.probs
            scored_test = self._evaluate(self.test_source, self.test_labels, tune=False, threshold=threshold)
            if scored_test is not None:
                test_block, test_probs = scored_test.block, scored_test.probs
        if hasattr(self.model, "backbone"):
            set_backbone_trainable(self.model, True)
        if self.logit_adjustment is not None:  # the exported model predicts with the adjusted logits
            fold_logit_adjustment(self.model, self.logit_adjustment)
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
            val_probs=val_probs,
            test_probs=test_probs,
        )
