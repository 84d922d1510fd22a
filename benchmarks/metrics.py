"""Test metrics computed here from the model's probabilities, independently of ``workers.training.metrics``.

Definitions follow scikit-learn: AUROC is the Mann–Whitney statistic with
tied scores counted half (binary: the positive-class column; more classes:
the one-vs-rest macro mean); average precision is ``Σ (R_n − R_{n−1}) P_n``
over distinct thresholds (no interpolation); balanced accuracy is the mean
per-class recall; macro-F1 the unweighted mean of per-class F1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def predict_probs(model: nn.Module, images: np.ndarray, *, device: torch.device, batch_size: int = 512) -> np.ndarray:
    """Softmax probabilities ``(N, K)`` float64 for uint8 ``(N, H, W, C)`` images (the Classifier takes [0, 1])."""
    model = model.to(device).eval()
    parts = []
    for start in range(0, images.shape[0], batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
        logits = model(chunk.permute(0, 3, 1, 2).float().div_(255.0)).float()
        parts.append(torch.softmax(logits.double(), dim=1).cpu())
    model.to("cpu")
    return torch.cat(parts).numpy()


def decide(probs: np.ndarray, *, threshold: float | None, positive_class: int | None) -> np.ndarray:
    """The served decision rule: binary with a threshold ``p[positive] >= t``, otherwise argmax."""
    if threshold is None or positive_class is None or probs.shape[1] != 2:
        return probs.argmax(axis=1)
    other = 1 - positive_class
    return np.where(probs[:, positive_class] >= threshold, positive_class, other)


def binary_auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counting 1/2."""
    positive = positive.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the precision–recall curve as scikit-learn's ``average_precision_score``."""
    positive = positive.astype(bool)
    total = int(positive.sum())
    if total == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, hits = scores[order], positive[order]
    last_of_group = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]  # distinct thresholds
    tp = np.cumsum(hits)[last_of_group]
    predicted = (np.arange(len(scores)) + 1)[last_of_group]
    recall = tp / total
    precision = tp / predicted
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def summary(
    probs: np.ndarray, labels: np.ndarray, *, threshold: float | None, positive_class: int | None, minority: int
) -> dict[str, float]:
    """AUC, ACC, balanced accuracy, minority recall, macro-F1 and minority PR-AUC of one split."""
    labels = np.asarray(labels)
    num_classes = probs.shape[1]
    predicted = decide(probs, threshold=threshold, positive_class=positive_class)
    recalls, f1s = _per_class(predicted, labels, num_classes)
    if num_classes == 2:
        auc = binary_auroc(probs[:, 1], labels == 1)
    else:
        auc = float(np.nanmean([binary_auroc(probs[:, c], labels == c) for c in range(num_classes)]))
    return {
        "auc": auc,
        "acc": float(np.mean(predicted == labels)),
        "balanced_accuracy": float(np.nanmean(recalls)),
        "minority_recall": float(recalls[minority]),
        "macro_f1": float(np.mean(f1s)),
        "pr_auc_minority": average_precision(probs[:, minority], labels == minority),
    }


def _per_class(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    recalls, f1s = np.full(num_classes, np.nan), np.zeros(num_classes)
    for c in range(num_classes):
        tp = float(np.sum((predicted == c) & (labels == c)))
        support, claimed = float(np.sum(labels == c)), float(np.sum(predicted == c))
        if support:
            recalls[c] = tp / support
        f1s[c] = 2 * tp / (support + claimed) if support + claimed else 0.0
    return recalls, f1s


METRIC_COLUMNS: Sequence[tuple[str, str]] = (
    ("auc", "test AUC"),
    ("acc", "test ACC"),
    ("balanced_accuracy", "balanced acc"),
    ("minority_recall", "minority recall"),
    ("macro_f1", "macro-F1"),
    ("pr_auc_minority", "PR-AUC (minority)"),
)
