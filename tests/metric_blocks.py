"""The keys every evaluation block carries: the oracle of the engine and end-to-end tests."""

from __future__ import annotations

METRIC_BLOCK_KEYS = frozenset(
    {
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "auroc",
        "average_precision",
        "per_class",
        "confusion_matrix",
        "threshold",
        "pr_curve",
        "roc_curve",
    }
)
