"""``fit``: the training loop of the core, with model selection, early stopping, resume and cancel.

Per epoch (1-based): ``criterion.set_epoch``, the sampler's indices, one pass
of :func:`~workers.training.loop.train_epoch`, evaluation on ``val``, the
threshold (binary: tuned on ``val`` for the train split's minority class), the
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
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer

from workers.training.augment import Augmenter
from workers.training.copy_paste import CopyPaste
from workers.training.data import Split
from workers.training.evaluation import Scoring, evaluate
from workers.training.loop import steps_per_epoch
from workers.training.losses import Criterion
from workers.training.metrics import SELECTION_METRICS
from workers.training.mixing import Mixer
from workers.training.optim import LrSchedule
from workers.training.samplers import Sampler
from workers.training.state import EpochRecord, TrainingState
from workers.training.thresholds import THRESHOLD_STRATEGIES
from workers.training.trainer import FitResult, TrainConfig, Trainer

logger = logging.getLogger(__name__)

STOP_REASONS = ("completed", "early_stopped", "cancelled", "deadline")

__all__ = ["EpochRecord", "FitResult", "TrainingState", "evaluate", "fit", "steps_per_epoch"]


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
    freeze_backbone_epochs: int = 0,
    compile: bool = False,
    amp: bool | None = None,
    channels_last: bool = True,
    on_epoch_end: Callable[[EpochRecord, TrainingState], None] | None = None,
    should_stop: Callable[[], str | None] | None = None,
    resume: dict | None = None,
    eval_batch_size: int | None = None,
    logit_adjustment: torch.Tensor | None = None,
) -> FitResult:
    """Train ``model`` on ``train`` and return the best model and its metrics (see the module docstring).

    ``should_stop`` is polled before every batch; a non-``None`` reason
    (``"cancelled"``, ``"deadline"`` or any string) discards the partial epoch
    and returns the best model so far with ``stopped=reason``; after such a
    stop no final evaluation runs (``test`` is ``None``, ``val`` is the best
    epoch's block).
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
    config = _config(
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
    _check_choices(
        selection_metric=selection_metric, threshold_strategy=threshold_strategy, target_recall=target_recall
    )
    scoring = _scoring(train, class_names, selection_metric, threshold_strategy, target_recall)
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


def _config(
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
    return TrainConfig(
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


def _check_choices(*, selection_metric: str, threshold_strategy: str, target_recall: float | None) -> None:
    if selection_metric not in SELECTION_METRICS:
        raise ValueError(f"unknown selection_metric {selection_metric!r}; supported: {', '.join(SELECTION_METRICS)}")
    if threshold_strategy not in THRESHOLD_STRATEGIES:
        raise ValueError(
            f"unknown threshold_strategy {threshold_strategy!r}; supported: {', '.join(THRESHOLD_STRATEGIES)}"
        )
    if threshold_strategy == "target_recall" and target_recall is None:
        raise ValueError("threshold_strategy 'target_recall' needs target_recall")


def _scoring(train: Split, class_names: Sequence[str], metric: str, strategy: str, recall: float | None) -> Scoring:
    num_classes = len(class_names)
    if num_classes < 2:
        raise ValueError(f"class_names must name at least 2 classes, got {list(class_names)}")
    if int(train.labels.max()) >= num_classes:
        raise ValueError(f"train label {int(train.labels.max())} out of range for {num_classes} classes")
    counts = np.asarray(train.class_counts(num_classes))
    # The rarest class; ties go to the higher index (class 1 in a balanced binary task).
    minority = int(num_classes - 1 - np.argmin(counts[::-1]))
    return Scoring(
        class_names=list(class_names),
        positive_class=minority if num_classes == 2 else None,
        minority_class=minority,
        selection_metric=metric,
        threshold_strategy=strategy,
        target_recall=recall,
    )
