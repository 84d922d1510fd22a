"""The adapter from a ``JobSpec`` to the training core: the one place a spec becomes training.

``build_training`` turns the spec plus the decoded dataset into a
``TrainingPlan``: every argument of ``workers.training.engine.fit`` but the
progress callbacks and ``resume``, which the job run (``workers.lifecycle.run``)
adds; the run itself reads only what is not training: the init weights to load,
the run time limit and the architecture named on the model card. ``amp``,
``channels_last`` and ``eval_batch_size`` keep ``fit``'s defaults. Every
statistic (channel mean/std, class counts for weights, focal α, minority
classes) comes from the *train* split only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.optim import Optimizer

from rarefit.guarantees import guarantee_bound
from service.spec import JobSpec, effective_head, effective_warmup_epochs
from service.threshold_spec import ThresholdSpec, resolve_class
from workers.lifecycle.batch_transforms import make_augment, make_copy_paste, make_mixer
from workers.lifecycle.criterion import make_criterion
from workers.training.augment import BatchAugment
from workers.training.copy_paste import CopyPaste
from workers.training.data import Split, channel_stats, minority_class
from workers.training.engine import FitResult, fit
from workers.training.long_tail import posthoc_adjustment
from workers.training.loop import steps_per_epoch
from workers.training.losses import Criterion
from workers.training.mixing import BatchMixer
from workers.training.networks import Classifier, build_network, load_init_state
from workers.training.optim import LrSchedule, make_optimizer, make_scheduler
from workers.training.samplers import EpochSampler, make_sampler
from workers.training.seeding import seed_everything
from workers.training.state import EpochRecord, StopReason, TrainingState
from workers.training.thresholds import THRESHOLD_STRATEGIES, Bound
from workers.training.transfer import prepare_pretrained

logger = logging.getLogger(__name__)

SplitArrays = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class TrainingPlan:
    """One job's training, built and ready: the arguments of ``fit`` without the callbacks and ``resume``."""

    model: Classifier
    train: Split
    val: Split | None
    test: Split | None
    class_names: list[str]
    criterion: Criterion
    optimizer: Optimizer
    scheduler: LrSchedule
    sampler: EpochSampler
    mixer: BatchMixer | None
    augment: BatchAugment
    copy_paste: CopyPaste | None
    epochs: int
    batch_size: int
    seed: int
    device: torch.device
    selection_metric: str
    early_stopping_patience: int | None
    early_stopping_min_delta: float
    threshold_strategy: str
    threshold_value: float | None
    threshold_class: int | None
    threshold_bound: Bound | None
    positive_class: int | None
    freeze_backbone_epochs: int
    compile: bool
    logit_adjustment: torch.Tensor | None

    def fit_arguments(self) -> dict[str, Any]:
        """The plan as ``fit`` keyword arguments (for callers that add or override some)."""
        return {field.name: getattr(self, field.name) for field in fields(self)}

    def fit(
        self,
        *,
        on_epoch_end: Callable[[EpochRecord, TrainingState], None] | None = None,
        should_stop: Callable[[], StopReason | None] | None = None,
        resume: dict | None = None,
    ) -> FitResult:
        """Run the plan through the core's ``fit``."""
        return fit(**self.fit_arguments(), on_epoch_end=on_epoch_end, should_stop=should_stop, resume=resume)


def build_training(
    spec: JobSpec,
    *,
    dataset_arrays: Mapping[str, SplitArrays],
    class_names: Sequence[str],
    device: torch.device | str,
    init_state: Mapping[str, torch.Tensor] | None,
    adaptations: list[str] | None = None,
    masks: Mapping[str, np.ndarray] | None = None,
) -> TrainingPlan:
    """The ``TrainingPlan`` for ``spec`` and ``{split: (images uint8 or uint16 NHWC, labels int64)}``.

    Seeds every RNG with ``spec.seed`` first, so the initial weights are
    reproducible. Raises ``ValueError``/``TypeError`` for data or a spec the
    core cannot train (the job then fails with that message). ``adaptations``, when given, receives
    a line for each change made to load ``init_state`` (stem channels or kernel, a new head).
    ``masks`` (``{split: uint8 (N, H, W)}``) feeds ``augment.copy_paste``.
    """
    if not isinstance(spec, JobSpec):
        raise TypeError(f"spec must be a JobSpec, got {type(spec).__name__}")
    if "train" not in dataset_arrays:
        raise ValueError(f"the dataset has no train split (splits: {sorted(dataset_arrays)})")
    device = torch.device(device)
    splits = {
        name: _split(dataset_arrays[name]) if name in dataset_arrays else None for name in ("train", "val", "test")
    }
    train = splits["train"]
    names = [str(name) for name in class_names]
    counts = train.class_counts(len(names))
    if len(counts) != len(names):
        raise ValueError(f"train labels reach class {len(counts) - 1} but the dataset names {len(names)} classes")
    positive = positive_class_index(spec, class_names=names, counts=counts)
    seed_everything(spec.seed)
    model, adapted = _network(spec, train, num_classes=len(names), init_state=init_state)
    model = model.to(device)
    if adaptations is not None:
        adaptations.extend(adapted)
    sampler = make_sampler(spec.sampler.type, labels=train.labels, seed=spec.seed, device=device)
    optimizer, scheduler = _optimization(spec, model, epoch_length=sampler.epoch_length)
    return TrainingPlan(
        model=model,
        train=train,
        val=splits["val"],
        test=splits["test"],
        class_names=names,
        criterion=make_criterion(
            spec.loss,
            counts=counts,
            positive_class=positive,
            cosine_scale=spec.model.cosine_scale if effective_head(spec) == "cosine" else None,
        ),
        optimizer=optimizer,
        scheduler=scheduler,
        sampler=sampler,
        mixer=make_mixer(spec, num_classes=len(names), train_labels=train.labels),
        augment=make_augment(spec, counts=counts),
        copy_paste=make_copy_paste(spec, train=train, names=names, counts=counts, masks=masks, device=device),
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        seed=spec.seed,
        device=device,
        selection_metric=spec.selection_metric,
        early_stopping_patience=spec.early_stopping.patience,
        early_stopping_min_delta=spec.early_stopping.min_delta,
        positive_class=positive if len(names) == 2 else None,
        **epoch_threshold(spec.threshold, positive=positive, class_names=names),
        freeze_backbone_epochs=spec.model.freeze_backbone_epochs,
        compile=spec.compile,
        logit_adjustment=posthoc_adjustment(counts, tau=spec.loss.posthoc_tau),
    )


def _split(arrays: SplitArrays) -> Split:
    images, labels = arrays
    # Labels are small: a writable copy (torch warns on read-only memmaps); images stay memory-mapped.
    return Split(images, np.array(labels, dtype=np.int64))


def _optimization(spec: JobSpec, model: Classifier, *, epoch_length: int) -> tuple[Optimizer, LrSchedule]:
    # Built after the model is on its device, so the optimizer can pick fused CUDA kernels.
    optim = spec.optim
    params: Any = model.parameters()
    if optim.backbone_lr_scale != 1.0:  # discriminative learning rates: the pretrained backbone moves slower
        params = [
            {"params": list(model.backbone_parameters()), "lr": optim.lr * optim.backbone_lr_scale},
            {"params": list(model.head_parameters())},
        ]
    optimizer = make_optimizer(
        optim.name, params, lr=optim.lr, weight_decay=optim.weight_decay, momentum=optim.momentum
    )
    scheduler = make_scheduler(
        optim.scheduler,
        optimizer,
        epochs=spec.epochs,
        steps_per_epoch=steps_per_epoch(epoch_length, spec.batch_size),
        warmup_epochs=effective_warmup_epochs(spec),
        milestones=optim.milestones,
        step_gamma=optim.step_gamma,
    )
    return optimizer, scheduler


def _network(
    spec: JobSpec, train: Split, *, num_classes: int, init_state: Mapping[str, torch.Tensor] | None
) -> tuple[Classifier, list[str]]:
    """The network, initialised from ``init_state`` when given, and what its stem needed adapted for it."""
    height, width, channels = train.image_shape
    mean, std = channel_stats(train.images)
    model = build_network(
        spec.model.arch,
        num_classes=num_classes,
        in_channels=channels,
        input_size=(height, width),
        image_size=spec.model.image_size,
        mean=mean,
        std=std,
        head=effective_head(spec),
        cosine_scale=spec.model.cosine_scale,
    )
    if init_state is None:
        return model, []
    state, adaptations = prepare_pretrained(model, init_state)
    skipped = load_init_state(model, state, strict_backbone=True)
    logger.info("initialised %s from %s (%d keys not loaded)", spec.model.arch, spec.model.init, len(skipped))
    return model, adaptations + [f"{key}: not loaded (new head)" for key in skipped]


def positive_class_index(spec: JobSpec, *, class_names: list[str], counts: Sequence[int]) -> int:
    """``spec.positive_class`` (a name or index) as an index; by default the train split's minority class."""
    if spec.positive_class is None:
        return minority_class(counts)
    index = resolve_class(spec.positive_class, class_names)
    if index is None:
        raise ValueError(f"positive_class {spec.positive_class!r} is not one of the classes {class_names}")
    return index


def epoch_threshold(threshold: ThresholdSpec, *, positive: int, class_names: list[str]) -> dict[str, Any]:
    """The core's per-epoch form of the threshold policy, for model selection on val.

    The operating point stored with the model is fitted after training, on the
    calibrated probabilities (``workers.lifecycle.decisions``); each epoch's val
    block is decided by the same policy (strategy, class, value and, with
    ``guarantee``, the same Clopper–Pearson bound), so the selection metric
    ranks epochs by the decision the model will ship with. Temperature scaling
    keeps the order of a binary ``p[positive]``, so a binary threshold claims
    the same samples calibrated or not; a multi-class ``p[class]`` can reorder
    a little under it. ``cost`` is scored with the arg-max each epoch: its Bayes
    decision needs the calibrated probabilities.
    """
    policy = threshold.canonical()
    if policy.strategy not in THRESHOLD_STRATEGIES:
        return {"threshold_strategy": "none", "threshold_value": None, "threshold_class": None, "threshold_bound": None}
    target = positive if policy.class_ is None else resolve_class(policy.class_, class_names)
    if target is None:
        raise ValueError(f"threshold.class {policy.class_!r} is not one of the classes {class_names}")
    return {
        "threshold_strategy": policy.strategy,
        "threshold_value": policy.value,
        "threshold_class": target,
        "threshold_bound": partial(guarantee_bound, confidence=policy.confidence) if policy.guarantee else None,
    }
