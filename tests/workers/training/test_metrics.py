"""Metric block against scikit-learn, including ties, absent classes and JSON round-trips."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from workers.training.metrics import (
    SELECTION_METRICS,
    average_precision,
    binary_auroc,
    expected_calibration_error,
    metric_block,
    predict_labels,
    roc_curve,
    selection_score,
)

RTOL = 1e-9


def _random(seed: int, *, n: int = 300, k: int = 3, ties: bool = False):
    rng = np.random.default_rng(seed)
    labels = rng.choice(k, size=n, p=np.linspace(1, 3, k) / np.linspace(1, 3, k).sum())
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[labels]
    if ties:
        logits = np.clip(np.round(logits), -1, 2)  # few distinct logit rows, so many equal scores
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, labels


def _names(k: int) -> list[str]:
    return [f"c{i}" for i in range(k)]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("ties", [False, True])
def test_multiclass_block_matches_sklearn(seed, k, ties):
    probs, labels = _random(seed, k=k, ties=ties)
    block = metric_block(probs, labels, class_names=_names(k))
    pred = probs.argmax(1)
    every = list(range(k))
    assert block["accuracy"] == pytest.approx(skm.accuracy_score(labels, pred), rel=RTOL)
    assert block["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels, pred), rel=RTOL)
    macro = skm.f1_score(labels, pred, average="macro", labels=every, zero_division=0)
    assert block["macro_f1"] == pytest.approx(macro, rel=RTOL)
    p, r, f, s = skm.precision_recall_fscore_support(labels, pred, labels=every, zero_division=0)
    for row, pp, rr, ff, ss in zip(block["per_class"], p, r, f, s, strict=True):
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx((pp, rr, ff, ss), rel=RTOL)
    assert block["confusion_matrix"] == skm.confusion_matrix(labels, pred, labels=every).tolist()
    auroc = skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    assert block["auroc"] == pytest.approx(auroc, rel=RTOL)
    ap = skm.average_precision_score(np.eye(k)[labels], probs, average="macro")
    assert block["average_precision"] == pytest.approx(ap, rel=RTOL)
    assert block["log_loss"] == pytest.approx(skm.log_loss(labels, probs, labels=every), rel=1e-7)
    assert block["threshold"] is None and block["pr_curve"] is None
    json.dumps(block, allow_nan=False)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("positive", [0, 1])
@pytest.mark.parametrize("threshold", [None, 0.3, 0.5, 0.8])
def test_binary_block_matches_sklearn(seed, ties, positive, threshold):
    probs, labels = _random(seed, k=2, ties=ties)
    block = metric_block(probs, labels, class_names=["neg", "pos"], threshold=threshold, positive_class=positive)
    if threshold is None:
        pred = probs.argmax(1)
    else:
        pred = np.where(probs[:, positive] >= threshold, positive, 1 - positive)
    np.testing.assert_array_equal(predict_labels(probs, threshold=threshold, positive_class=positive), pred)
    assert block["accuracy"] == pytest.approx(skm.accuracy_score(labels, pred), rel=RTOL)
    assert block["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels, pred), rel=RTOL)
    assert block["confusion_matrix"] == skm.confusion_matrix(labels, pred, labels=[0, 1]).tolist()
    is_pos = labels == positive
    assert block["auroc"] == pytest.approx(skm.roc_auc_score(is_pos, probs[:, positive]), rel=RTOL)
    ap = skm.average_precision_score(is_pos, probs[:, positive])
    assert block["average_precision"] == pytest.approx(ap, rel=RTOL)
    assert block["threshold"] == threshold and block["positive_class"] == positive
    minority = int(np.argmin(np.bincount(labels, minlength=2)))
    recall = skm.recall_score(labels, pred, labels=[minority], average=None, zero_division=0)[0]
    assert block["minority_class"] == minority and block["minority_recall"] == pytest.approx(recall, rel=RTOL)
    json.dumps(block, allow_nan=False)


@pytest.mark.parametrize("ties", [False, True])
def test_pr_curve_is_sklearns_curve_thinned(ties):
    probs, labels = _random(9, n=2000, k=2, ties=ties)
    curve = metric_block(probs, labels, class_names=["a", "b"])["pr_curve"]
    precision, recall, thresholds = skm.precision_recall_curve(labels == 1, probs[:, 1])
    assert 2 <= len(curve) <= 101 and len(curve) == min(101, len(thresholds))
    by_threshold = {t: (p, r) for p, r, t in zip(precision, recall, thresholds, strict=False)}
    for point in curve:
        p, r = by_threshold[point["threshold"]]
        assert (point["precision"], point["recall"]) == pytest.approx((p, r), rel=RTOL)
    assert curve[0]["threshold"] == thresholds[0] and curve[-1]["threshold"] == thresholds[-1]


def _area_from_origin(curve: list[dict]) -> float:
    """The trapezoidal area under the recorded points, drawn from the origin as the curve starts."""
    return float(np.trapezoid([0.0] + [p["tpr"] for p in curve], [0.0] + [p["fpr"] for p in curve]))


@pytest.mark.parametrize(("k", "n", "ties"), [(2, 300, False), (2, 300, True), (2, 3000, False), (4, 3000, False)])
def test_roc_curve_is_sklearns_curve_thinned(k, n, ties):
    probs, labels = _random(11, n=n, k=k, ties=ties)
    block = metric_block(probs, labels, class_names=_names(k))
    curve, cls = block["roc_curve"], block["positive_class"] if k == 2 else block["minority_class"]
    assert cls == (1 if k == 2 else 0)  # binary: the positive class; multi-class: one-vs-rest for the minority
    fpr, tpr, thresholds = skm.roc_curve(labels == cls, probs[:, cls], drop_intermediate=False)
    by_threshold = {t: (f, r) for f, r, t in zip(fpr, tpr, thresholds, strict=True)}
    for point in curve:
        assert (point["fpr"], point["tpr"]) == pytest.approx(by_threshold[point["threshold"]], rel=RTOL)
    bends = skm.roc_curve(labels == cls, probs[:, cls])[2][1:]  # sklearn's corners, less its infinite origin
    if len(bends) <= 101:
        assert [p["threshold"] for p in curve] == bends.tolist()
    else:
        assert len(curve) == 101 and (curve[0]["threshold"], curve[-1]["threshold"]) == (bends[0], bends[-1])
    assert curve[-1]["fpr"] == curve[-1]["tpr"] == 1.0
    auroc = block["auroc"] if k == 2 else skm.roc_auc_score(labels == cls, probs[:, cls])
    assert _area_from_origin(curve) == pytest.approx(auroc, abs=1e-3)
    json.dumps(curve, allow_nan=False)


def test_roc_curve_needs_both_classes():
    assert roc_curve(np.array([0.2, 0.9]), np.array([True, True])) is None
    assert roc_curve(np.array([0.2, 0.9]), np.array([False, False])) is None
    assert roc_curve(np.array([0.5, 0.5]), np.array([True, False])) == [{"fpr": 1.0, "tpr": 1.0, "threshold": 0.5}]


def test_rank_statistics_with_heavy_ties():
    rng = np.random.default_rng(3)
    for _ in range(20):
        scores = rng.integers(0, 4, size=50).astype(float)
        is_pos = rng.random(50) < 0.3
        if is_pos.all() or not is_pos.any():
            continue
        assert binary_auroc(scores, is_pos) == pytest.approx(skm.roc_auc_score(is_pos, scores), rel=RTOL)
        assert average_precision(scores, is_pos) == pytest.approx(skm.average_precision_score(is_pos, scores), rel=RTOL)


def test_absent_class_gives_none_not_nan():
    probs, labels = _random(1, k=3)
    labels = np.where(labels == 2, 0, labels)  # class 2 never occurs
    block = metric_block(probs, labels, class_names=_names(3))
    assert block["auroc"] is None and block["average_precision"] is None
    assert block["per_class"][2]["support"] == 0 and block["per_class"][2]["recall"] == 0.0
    pred = probs.argmax(1)
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        expected = skm.balanced_accuracy_score(labels, pred)  # sklearn drops the absent class, as we do
    assert block["balanced_accuracy"] == pytest.approx(expected, rel=RTOL)
    json.dumps(block, allow_nan=False)
    single = metric_block(np.array([[0.2, 0.8], [0.6, 0.4]]), np.array([1, 1]), class_names=["a", "b"])
    assert single["auroc"] is None and single["average_precision"] == 1.0
    assert selection_score(single, "auroc") == -math.inf


def test_minority_recall_and_selection_score():
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1], [0.5, 0.1, 0.4]])
    labels = np.array([0, 1, 2, 0, 2])
    block = metric_block(probs, labels, class_names=_names(3))
    assert block["minority_class"] == 1 and block["minority_recall"] == 1.0
    explicit = metric_block(probs, labels, class_names=_names(3), minority_class=2)
    assert explicit["minority_recall"] == 0.5
    assert set(SELECTION_METRICS) <= set(block)
    assert selection_score(block, "accuracy") == pytest.approx(0.8)
    with pytest.raises(ValueError, match="'loss'.*accuracy, balanced_accuracy"):
        selection_score(block, "loss")


def test_expected_calibration_error():
    # perfectly calibrated within each bin: confidence 0.75, three of four right
    probs = np.array([[0.75, 0.25]] * 4)
    assert expected_calibration_error(probs, np.array([0, 0, 0, 1])) == pytest.approx(0.0, abs=1e-12)
    # always confident and always wrong: ECE is the confidence
    assert expected_calibration_error(np.array([[0.9, 0.1]] * 3), np.array([1, 1, 1])) == pytest.approx(0.9)
    probs, labels = _random(4, n=500, k=4)
    conf, correct = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0, 1, 16)
    expected = sum(
        abs(correct[m].mean() - conf[m].mean()) * m.mean()
        for lo, hi in zip(edges[:-1], edges[1:], strict=True)
        if (m := (conf > lo) & (conf <= hi)).any()
    )
    assert expected_calibration_error(probs, labels) == pytest.approx(expected, rel=1e-9)


def test_validation():
    probs, labels = _random(0, k=3)
    with pytest.raises(ValueError, match="class_names has 2 names for 3 classes"):
        metric_block(probs, labels, class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        metric_block(probs, labels + 1, class_names=_names(3))
    with pytest.raises(ValueError, match="NaN"):
        metric_block(np.full((2, 2), np.nan), np.array([0, 1]), class_names=["a", "b"])
    with pytest.raises(ValueError, match="positive_class"):
        metric_block(probs[:, :2], labels % 2, class_names=["a", "b"], positive_class=2)
    with pytest.raises(ValueError, match="threshold"):
        metric_block(probs[:, :2], labels % 2, class_names=["a", "b"], threshold=1.5)
