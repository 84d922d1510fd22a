"""After training: calibrate on val, fit the operating point on val, verify it on test with bounds.

Order matters: the temperature (fitted on val NLL) is applied first, so the
operating point, the probabilities predict returns and the stored scores are
all calibrated ones. The final metric blocks are the core's ``metric_block``
at the fitted rule, with per-class Clopper–Pearson lower bounds, the
``calibration`` object (temperature, ECE and reliability bins before and
after) and the ``operating_point`` that produced them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from rarefit.calibration import fit_temperature, reliability, softmax_at
from rarefit.operating_point import with_bounds
from service.jsonsafe import json_safe
from service.model_card import Calibration, OperatingPoint
from service.operating_points import SplitScores, fit_policy
from service.spec import JobSpec
from service.threshold_spec import resolve_class
from workers.training.engine import FitResult
from workers.training.metrics import metric_block

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decisions:
    calibration: Calibration
    operating_point: OperatingPoint
    blocks: dict[str, dict] = field(default_factory=dict)  # final val/test metric blocks
    scores: dict[str, SplitScores] = field(default_factory=dict)  # calibrated, for scores.npz

    @property
    def warnings(self) -> list[str]:
        return list(self.operating_point.warnings)


def make_decisions(
    result: FitResult, *, spec: JobSpec, class_names: list[str], labels: dict[str, np.ndarray]
) -> Decisions:
    """Calibration, operating point and final blocks from the final model's val/test probabilities."""
    raw = {
        split: SplitScores(probs, np.asarray(labels[split], dtype=np.int64))
        for split, probs in (("val", result.val_probs), ("test", result.test_probs))
        if probs is not None and split in labels
    }
    calibration = _calibration(spec, raw.get("val"))
    scores = {split: SplitScores(_calibrated(s.probs, calibration), s.labels) for split, s in raw.items()}
    point = _operating_point(result, spec=spec, class_names=class_names, val=scores.get("val"))
    blocks = {
        split: _block(result, raw[split], scores[split], point=point, calibration=calibration, class_names=class_names)
        for split in scores
    }
    for warning in point.warnings:
        logger.warning("operating point: %s", warning)
    return Decisions(calibration=calibration, operating_point=point, blocks=blocks, scores=scores)


def _calibration(spec: JobSpec, val: SplitScores | None) -> Calibration:
    if spec.calibration.method == "none" or val is None:
        return Calibration(method="none")
    return Calibration(method="temperature", temperature=fit_temperature(_log(val.probs), val.labels))


def _calibrated(probs: np.ndarray, calibration: Calibration) -> np.ndarray:
    return softmax_at(_log(probs), calibration.temperature) if calibration.temperature != 1.0 else probs


def _log(probs: np.ndarray) -> np.ndarray:
    # log-probabilities are logits up to a per-row constant, which softmax ignores
    return np.log(np.clip(probs, np.finfo(np.float64).tiny, None))


def _operating_point(
    result: FitResult, *, spec: JobSpec, class_names: list[str], val: SplitScores | None
) -> OperatingPoint:
    if val is None:
        return OperatingPoint(policy=spec.threshold.model_dump(mode="json"), warnings=["no val split: arg-max"])
    positive = result.positive_class
    if positive is None:  # multi-class: the class a recall/precision target defaults to
        given = None if spec.positive_class is None else resolve_class(spec.positive_class, class_names)
        positive = given if given is not None else (result.val or {}).get("minority_class")
    return fit_policy(spec.threshold, val=val, class_names=class_names, positive_class=positive)


def _block(
    result: FitResult,
    raw: SplitScores,
    calibrated: SplitScores,
    *,
    point: OperatingPoint,
    calibration: Calibration,
    class_names: list[str],
) -> dict:
    block = metric_block(
        calibrated.probs,
        calibrated.labels,
        class_names=class_names,
        positive_class=result.positive_class,
        minority_class=(result.val or {}).get("minority_class"),
        rule=point.decision_rule(),
    )
    before, after = reliability(raw.probs, raw.labels), reliability(calibrated.probs, calibrated.labels)
    block = with_bounds(block, confidence=point.confidence)
    block["calibration"] = {
        "method": calibration.method,
        "temperature": calibration.temperature,
        "ece_before": before["ece"],
        "ece_after": after["ece"],
        "reliability_before": before["bins"],
        "reliability_after": after["bins"],
    }
    block["operating_point"] = point.model_dump(mode="json")
    block["warnings"] = list(point.warnings)
    return json_safe(block)
