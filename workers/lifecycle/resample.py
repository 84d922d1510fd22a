"""Stage 2 of a job with ``resample``: imbalanced-learn on the stage-1 backbone's train embeddings.

imbalanced-learn is both the implementation and the oracle: this module only
builds its samplers from the spec and hands arrays to and from the training
core (``workers.training.decoupled``), which may not import it. Cleaning
methods (Tomek links, ENN) also report the train images they dropped
(``cleaned.json``): a list of suspect labels to review.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from imblearn.combine import SMOTEENN, SMOTETomek
from imblearn.over_sampling import ADASYN, SMOTE, BorderlineSMOTE, RandomOverSampler
from imblearn.under_sampling import EditedNearestNeighbours, RandomUnderSampler, TomekLinks

from service.spec import JobSpec, ResampleSpec
from workers.lifecycle.plan import TrainingPlan
from workers.training.decoupled import embed, refit_head, train_head
from workers.training.engine import FitResult
from workers.training.long_tail import posthoc_adjustment

logger = logging.getLogger(__name__)

CLEANED_FILE = "cleaned.json"
CLEANING_METHODS = ("tomek", "enn")


@dataclass(frozen=True)
class Resampled:
    features: np.ndarray
    labels: np.ndarray
    dropped: np.ndarray | None  # train indices a cleaning method removed; None for the others


def make_sampler(method: str, *, k_neighbors: int, sampling_strategy: str | float, seed: int) -> Any:
    """The imbalanced-learn sampler for ``method`` (the spec's names)."""
    strategy, state = sampling_strategy, seed
    builders = {
        "smote": lambda: SMOTE(sampling_strategy=strategy, k_neighbors=k_neighbors, random_state=state),
        "adasyn": lambda: ADASYN(sampling_strategy=strategy, n_neighbors=k_neighbors, random_state=state),
        "borderline_smote": lambda: BorderlineSMOTE(
            sampling_strategy=strategy, k_neighbors=k_neighbors, random_state=state
        ),
        "random_over": lambda: RandomOverSampler(sampling_strategy=strategy, random_state=state),
        "random_under": lambda: RandomUnderSampler(sampling_strategy=strategy, random_state=state),
        "tomek": lambda: TomekLinks(sampling_strategy=strategy),
        "enn": lambda: EditedNearestNeighbours(sampling_strategy=strategy),
        "smote_tomek": lambda: SMOTETomek(
            sampling_strategy=strategy, smote=SMOTE(k_neighbors=k_neighbors, random_state=state), random_state=state
        ),
        "smote_enn": lambda: SMOTEENN(
            sampling_strategy=strategy, smote=SMOTE(k_neighbors=k_neighbors, random_state=state), random_state=state
        ),
    }
    if method not in builders:
        raise ValueError(f"unknown resample method {method!r}; supported: {', '.join(builders)}")
    return builders[method]()


def resample_embeddings(features: np.ndarray, labels: np.ndarray, *, spec: ResampleSpec, seed: int) -> Resampled:
    """``fit_resample`` of the spec's sampler; raises ``ValueError`` with imbalanced-learn's reason."""
    sampler = make_sampler(
        spec.method, k_neighbors=spec.k_neighbors, sampling_strategy=spec.sampling_strategy, seed=seed
    )
    try:
        x, y = sampler.fit_resample(features, labels)
    except (ValueError, RuntimeError) as exc:  # k_neighbors above a class's size, ADASYN on separable data…
        raise ValueError(f"resample {spec.method} failed on the train embeddings: {exc}") from exc
    dropped = None
    if spec.method in CLEANING_METHODS:
        dropped = np.setdiff1d(np.arange(len(labels)), sampler.sample_indices_)
    return Resampled(features=np.asarray(x, dtype=np.float32), labels=np.asarray(y, dtype=np.int64), dropped=dropped)


def decoupled_stage(
    spec: JobSpec, *, result: FitResult, plan: TrainingPlan, device: torch.device
) -> tuple[FitResult, dict[str, Any], dict[str, Any]]:
    """Stage 2 after a finished stage 1: ``(final result, metrics.json entries, extra JSON artefacts)``."""
    resample = spec.resample
    if resample is None:
        raise ValueError("the job has no resample stage")
    train, names = plan.train, plan.class_names
    features = embed(result.model, train, batch_size=2 * spec.batch_size, device=device)
    labels = train.label_tensor.numpy()
    resampled = resample_embeddings(features, labels, spec=resample, seed=spec.seed)
    head = train_head(
        resampled.features,
        resampled.labels,
        num_classes=len(names),
        epochs=resample.head_epochs,
        batch_size=spec.batch_size,
        lr=spec.optim.lr,
        weight_decay=spec.optim.weight_decay,
        seed=spec.seed,
        device=device,
    )
    stage1 = {"best_epoch": result.best_epoch, "threshold": result.threshold, "val": result.val, "test": result.test}
    final = refit_head(
        result,
        head=head,
        train=train,
        val=plan.val,
        test=plan.test,
        class_names=names,
        selection_metric=spec.selection_metric,
        threshold_strategy=plan.threshold_strategy,  # the per-epoch form of the policy (plan.epoch_threshold)
        target_recall=plan.target_recall,
        batch_size=2 * spec.batch_size,
        device=device,
        # The head learnt the resampled set's prior, so that is the prior post-hoc adjustment removes.
        logit_adjustment=posthoc_adjustment(
            np.bincount(resampled.labels, minlength=len(names)).tolist(), tau=spec.loss.posthoc_tau
        ),
    )
    summary = {
        "method": resample.method,
        "counts_before": _counts(labels, names),
        "counts_after": _counts(resampled.labels, names),
        "head_epochs": resample.head_epochs,
    }
    logger.info(
        "resample %s: class counts %s -> %s", resample.method, summary["counts_before"], summary["counts_after"]
    )
    files = {} if resampled.dropped is None else {CLEANED_FILE: cleaned_document(resampled.dropped, labels, names)}
    return final, {"stage1": stage1, "resample": summary}, files


def cleaned_document(dropped: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """``cleaned.json``: the train-split indices a cleaning method removed, with their labels."""
    return {
        "split": "train",
        "count": int(len(dropped)),
        "dropped": [{"index": int(i), "class": names[int(labels[i])]} for i in dropped],
    }


def _counts(labels: np.ndarray, names: Sequence[str]) -> dict[str, int]:
    counts = np.bincount(labels, minlength=len(names))
    return {name: int(count) for name, count in zip(names, counts, strict=True)}
