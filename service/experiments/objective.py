"""The experiment objective read from a metric block (val for the search, test only for the report)."""

from __future__ import annotations

import math
from typing import Any

from service.experiments.spec import ObjectiveSpec

_INDICES = ("minority_class", "positive_class")


def objective_value(block: dict[str, Any] | None, objective: ObjectiveSpec) -> float | None:
    """The objective on one metric block; None when the block lacks it (undefined metric, no block)."""
    if not block:
        return None
    if objective.class_ is None:
        return _finite(block.get(objective.metric))
    entry = _class_entry(block, objective.class_)
    if entry is None:
        return None
    value = _finite(entry.get(objective.metric))
    if value is None or objective.constraint is None:
        return value
    precision = _finite(entry.get("precision")) or 0.0
    bound = objective.constraint.precision_at_least
    return value if precision >= bound else precision - bound - 1.0


def scalar_metrics(block: dict[str, Any] | None) -> dict[str, float]:
    """Every finite number at the top of a metric block (accuracy, auroc, threshold, ...), class indices aside."""
    if not block:
        return {}
    return {
        key: number for key, value in block.items() if key not in _INDICES and (number := _finite(value)) is not None
    }


def _class_entry(block: dict[str, Any], name: str) -> dict[str, Any] | None:
    for entry in block.get("per_class") or []:
        if isinstance(entry, dict) and str(entry.get("class")) == name:
            return entry
    return None


def _finite(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
