"""Evaluation: softmax probabilities and mean loss over a split, then the metric block.

Logits stay on the device until the end of the pass (one host copy per
split). The decision rule of the run's threshold policy is tuned on the
validation split and the *same* rule is applied to the test split.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rarefit.decision import DecisionRule
from workers.training.data import BatchSource, Split, minority_class
from workers.training.losses import soft_cross_entropy
from workers.training.metrics import SELECTION_METRICS, metric_block, selection_score
from workers.training.state import plain
from workers.training.thresholds import Bound, check_strategy, tune_rule

logger = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    source: BatchSource,
    *,
    batch_size: int,
    device: torch.device,
    amp: bool = False,
    channels_last: bool = False,
    logit_adjustment: torch.Tensor | None = None,
) -> tuple[np.ndarray, float]:
    """``(probs float64 (N, K) softmax, mean cross-entropy on the hard labels)`` in eval mode.

    ``logit_adjustment`` (``(K,)``, e.g. ``τ·log π``) is subtracted from the logits first: post-hoc
    logit adjustment (Menon et al. 2021).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    order = torch.arange(len(source), device=source.device)
    logits_parts: list[torch.Tensor] = []
    label_parts: list[torch.Tensor] = []
    for images, labels in source.iter_batches(order, batch_size):
        images = images.contiguous(memory_format=memory_format)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            logits_parts.append(model(images).float())
        label_parts.append(labels)
    if not logits_parts:
        raise ValueError("cannot evaluate an empty split")
    logits = torch.cat(logits_parts)
    if logit_adjustment is not None:
        logits = logits - logit_adjustment.to(logits)
    # One loss over the whole split, not one per batch: fewer kernel launches on the epoch's hot path.
    loss = soft_cross_entropy(logits, torch.cat(label_parts), reduction="mean")
    probs = torch.softmax(logits.double(), dim=1).cpu().numpy()
    return probs, float(loss)


@dataclass(frozen=True)
class Scored:
    """A split's evaluation: probabilities, loss, the decision rule used (``None``: arg-max), the metric block
    and the score."""

    probs: np.ndarray
    loss: float
    rule: DecisionRule | None
    block: dict
    score: float


@dataclass(frozen=True)
class Scoring:
    """How to turn probabilities into a metric block (fixed for a run).

    ``threshold_strategy`` with ``threshold_value``, ``threshold_class`` and
    ``threshold_bound`` is the per-epoch form of the run's threshold policy
    (``workers.training.thresholds``), tuned on val and applied to test.
    """

    class_names: Sequence[str]
    positive_class: int | None
    minority_class: int
    selection_metric: str
    threshold_strategy: str
    threshold_value: float | None
    threshold_class: int
    threshold_bound: Bound | None

    @classmethod
    def create(
        cls,
        train: Split,
        class_names: Sequence[str],
        *,
        selection_metric: str,
        threshold_strategy: str,
        threshold_value: float | None = None,
        threshold_class: int | None = None,
        threshold_bound: Bound | None = None,
        positive_class: int | None = None,
    ) -> Scoring:
        """The run's scoring: choices checked, the minority class from ``train``, the positive class
        (binary) ``positive_class`` or by default that minority, the class a recall or precision target
        is for ``threshold_class`` or by default the positive class (multi-class: the minority)."""
        if selection_metric not in SELECTION_METRICS:
            raise ValueError(
                f"unknown selection_metric {selection_metric!r}; supported: {', '.join(SELECTION_METRICS)}"
            )
        check_strategy(threshold_strategy, value=threshold_value)
        num_classes = len(class_names)
        if num_classes < 2:
            raise ValueError(f"class_names must name at least 2 classes, got {list(class_names)}")
        if int(train.labels.max()) >= num_classes:
            raise ValueError(f"train label {int(train.labels.max())} out of range for {num_classes} classes")
        minority = minority_class(train.class_counts(num_classes))
        if positive_class is not None and not (num_classes == 2 and positive_class in (0, 1)):
            raise ValueError(f"positive_class must be 0 or 1 for a binary task (or None), got {positive_class!r}")
        if threshold_class is not None and not 0 <= threshold_class < num_classes:
            raise ValueError(f"threshold_class must be a class index in [0, {num_classes}), got {threshold_class!r}")
        positive = minority if positive_class is None else positive_class
        return cls(
            class_names=list(class_names),
            positive_class=positive if num_classes == 2 else None,
            minority_class=minority,
            selection_metric=selection_metric,
            threshold_strategy=threshold_strategy,
            threshold_value=threshold_value,
            threshold_class=positive if threshold_class is None else threshold_class,
            threshold_bound=threshold_bound,
        )

    def tune_rule(self, probs: np.ndarray, labels: np.ndarray) -> DecisionRule | None:
        """The decision rule the threshold policy picks on these labels; ``None`` = arg-max."""
        return tune_rule(
            probs,
            labels,
            strategy=self.threshold_strategy,
            positive_class=self.positive_class,
            target_class=self.threshold_class,
            value=self.threshold_value,
            bound=self.threshold_bound,
        )

    def score(
        self, probs: np.ndarray, loss: float, labels: np.ndarray, *, rule: DecisionRule | None, tune: bool
    ) -> Scored:
        """Metric block decided by ``rule``, or by a rule tuned on these labels when ``tune``."""
        if tune:
            rule = self.tune_rule(probs, labels)
        block = plain(
            metric_block(
                probs,
                labels,
                class_names=list(self.class_names),
                positive_class=self.positive_class,
                minority_class=self.minority_class,
                rule=rule,
            )
        )
        return Scored(probs, loss, rule, block, float(selection_score(block, self.selection_metric)))


def hard_targets(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot float32 ``(B, K)`` rows: the criterion's target form when no mixer is used."""
    return F.one_hot(labels, num_classes).float()
