"""Each epoch's val block is decided by the run's threshold policy, and test by the rule tuned on val."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rarefit.decision import decide, decision_metrics
from workers.training.data import Split
from workers.training.engine import FitResult, fit, steps_per_epoch
from workers.training.losses import Criterion
from workers.training.networks import build_network
from workers.training.optim import make_optimizer, make_scheduler
from workers.training.samplers import make_sampler
from workers.training.thresholds import tune_rule

CPU = torch.device("cpu")


def _split(counts: tuple[int, ...], *, seed: int) -> Split:
    """Class ``c`` is bright in row band ``c`` (8×8, one channel, noisy enough not to separate perfectly)."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c, dtype=np.int64) for c, n in enumerate(counts)])
    images = rng.integers(0, 140, size=(len(labels), 8, 8, 1)).astype(np.uint8)
    band = 8 // len(counts)
    for c in range(len(counts)):
        images[labels == c, c * band : (c + 1) * band] += 60
    order = rng.permutation(len(labels))
    return Split(images=images[order], labels=labels[order])


def _fit(counts: tuple[int, ...], **kwargs) -> FitResult:
    train, val, test = _split(counts, seed=0), _split(counts, seed=1), _split(counts, seed=2)
    torch.manual_seed(0)
    k = len(counts)
    model = build_network("simple_cnn", num_classes=k, in_channels=1, input_size=(8, 8), mean=[0.4], std=[0.25])
    optimizer = make_optimizer("adamw", model.parameters(), lr=1e-2, weight_decay=1e-4)
    sampler = make_sampler("random", labels=train.labels, seed=0, device=CPU)
    scheduler = make_scheduler("cosine", optimizer, epochs=2, steps_per_epoch=steps_per_epoch(sampler.epoch_length, 16))
    return fit(
        model=model,
        train=train,
        val=val,
        test=test,
        class_names=[str(c) for c in range(k)],
        criterion=Criterion(kind="cross_entropy"),
        optimizer=optimizer,
        scheduler=scheduler,
        sampler=sampler,
        epochs=2,
        batch_size=16,
        seed=0,
        device=CPU,
        selection_metric="balanced_accuracy",
        **kwargs,
    )


def _decided_like(block: dict, probs: np.ndarray, labels: np.ndarray, rule) -> None:
    predictions, _ = decide(probs, rule=rule)
    k = probs.shape[1]
    assert (
        block["confusion_matrix"]
        == decision_metrics(labels, predictions, class_names=list(map(str, range(k))))["confusion_matrix"]
    )


def test_binary_precision_at_least_decides_val_and_test_with_the_val_tuned_threshold() -> None:
    result = _fit((40, 16), threshold_strategy="precision_at_least", threshold_value=0.7)
    val_labels, test_labels = _split((40, 16), seed=1).labels, _split((40, 16), seed=2).labels
    rule = tune_rule(result.val_probs, val_labels, strategy="precision_at_least", positive_class=1, value=0.7)
    assert rule is not None and result.threshold == rule.thresholds[1] == result.test["threshold"]
    _decided_like(result.val, result.val_probs, val_labels, rule)
    _decided_like(result.test, result.test_probs, test_labels, rule)


@pytest.mark.parametrize("strategy", ["recall_at_least", "precision_at_least"])
def test_multi_class_targets_decide_every_epoch_one_vs_rest(strategy: str) -> None:
    counts = (36, 24, 12)
    result = _fit(counts, threshold_strategy=strategy, threshold_value=0.9, threshold_class=2)
    val_labels, test_labels = _split(counts, seed=1).labels, _split(counts, seed=2).labels
    rule = tune_rule(result.val_probs, val_labels, strategy=strategy, positive_class=None, target_class=2, value=0.9)
    assert rule is not None and set(rule.thresholds) == {2}
    assert result.positive_class is None and result.threshold is None  # no binary threshold to report
    _decided_like(result.val, result.val_probs, val_labels, rule)
    _decided_like(result.test, result.test_probs, test_labels, rule)
    if strategy == "recall_at_least":  # always reachable (the lowest threshold claims every sample of class 2)
        assert all(record.val["per_class"][2]["recall"] >= 0.9 for record in result.history)
