"""Resampling of embeddings: imbalanced-learn is the oracle (same sampler, same seed, same output)."""

from __future__ import annotations

import numpy as np
import pytest
from imblearn.combine import SMOTEENN, SMOTETomek
from imblearn.over_sampling import ADASYN, SMOTE, BorderlineSMOTE, RandomOverSampler
from imblearn.under_sampling import EditedNearestNeighbours, RandomUnderSampler, TomekLinks

from service.spec import RESAMPLE_METHODS, ResampleSpec
from workers.lifecycle.resample import cleaned_document, resample_embeddings

COUNTS = (120, 30, 12)
SEED = 7


def _embeddings():
    """Three overlapping Gaussian classes in 6-D (float32, as the backbone gives them)."""
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(COUNTS)]).astype(np.int64)
    centres = np.array([[0.0] * 6, [1.2] * 6, [-1.0, 1.0] * 3])
    features = centres[labels] + rng.normal(size=(len(labels), 6))
    return features.astype(np.float32), labels


def _oracle(method: str):
    k = 4
    return {
        "smote": SMOTE(k_neighbors=k, random_state=SEED),
        "adasyn": ADASYN(n_neighbors=k, random_state=SEED),
        "borderline_smote": BorderlineSMOTE(k_neighbors=k, random_state=SEED),
        "random_over": RandomOverSampler(random_state=SEED),
        "random_under": RandomUnderSampler(random_state=SEED),
        "tomek": TomekLinks(),
        "enn": EditedNearestNeighbours(),
        "smote_tomek": SMOTETomek(smote=SMOTE(k_neighbors=k, random_state=SEED), random_state=SEED),
        "smote_enn": SMOTEENN(smote=SMOTE(k_neighbors=k, random_state=SEED), random_state=SEED),
    }[method]


@pytest.mark.parametrize("method", RESAMPLE_METHODS)
def test_resampled_sets_are_imbalanced_learns_own_output(method):
    features, labels = _embeddings()
    ours = resample_embeddings(features, labels, spec=ResampleSpec(method=method, k_neighbors=4), seed=SEED)
    x, y = _oracle(method).fit_resample(features, labels)
    np.testing.assert_array_equal(ours.labels, y)
    np.testing.assert_array_equal(ours.features, x.astype(np.float32))


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("smote", lambda c: c.tolist() == [120, 120, 120]),  # 'auto': every class up to the majority
        ("borderline_smote", lambda c: c.tolist() == [120, 120, 120]),
        ("random_over", lambda c: c.tolist() == [120, 120, 120]),
        ("random_under", lambda c: c.tolist() == [12, 12, 12]),  # every class down to the minority
        ("adasyn", lambda c: c[0] == 120 and all(abs(n - 120) <= 0.2 * 120 for n in c[1:])),  # about balanced
        ("tomek", lambda c: c[0] < 120 and c[1] <= 30 and c[2] == 12),  # 'auto' cleans all but the minority
        ("enn", lambda c: c[0] < 120 and c[2] == 12),
        ("smote_tomek", lambda c: all(n <= 120 for n in c) and c[2] > 12),
        ("smote_enn", lambda c: all(n <= 120 for n in c) and c[2] > 12),
    ],
)
def test_class_counts_after_each_method_are_as_documented(method, expected):
    features, labels = _embeddings()
    counts = np.bincount(resample_embeddings(features, labels, spec=ResampleSpec(method=method), seed=SEED).labels)
    assert expected(counts), counts.tolist()


def test_a_ratio_strategy_is_passed_through():
    features, labels = _embeddings()
    binary = labels[labels < 2], features[labels < 2]
    out = resample_embeddings(binary[1], binary[0], spec=ResampleSpec(method="smote", sampling_strategy=0.5), seed=0)
    assert np.bincount(out.labels).tolist() == [120, 60]


@pytest.mark.parametrize("method", ["tomek", "enn"])
def test_cleaning_methods_report_the_dropped_train_indices(method):
    features, labels = _embeddings()
    out = resample_embeddings(features, labels, spec=ResampleSpec(method=method), seed=SEED)
    oracle = _oracle(method)
    oracle.fit_resample(features, labels)
    kept = set(oracle.sample_indices_.tolist())
    assert set(out.dropped.tolist()) == set(range(len(labels))) - kept and len(out.dropped) > 0
    assert not np.isin(out.dropped, np.flatnonzero(labels == 2)).any()  # the minority is never cleaned
    document = cleaned_document(out.dropped, labels, ["a", "b", "c"])
    assert document["count"] == len(labels) - len(out.labels)
    assert document["dropped"][0] == {"index": int(out.dropped[0]), "class": "abc"[labels[out.dropped[0]]]}


def test_other_methods_drop_nothing_by_index():
    features, labels = _embeddings()
    assert resample_embeddings(features, labels, spec=ResampleSpec(method="smote"), seed=SEED).dropped is None


def test_imbalanced_learns_refusal_becomes_a_readable_value_error():
    features, labels = _embeddings()
    with pytest.raises(ValueError, match="resample smote failed on the train embeddings"):
        resample_embeddings(features, labels, spec=ResampleSpec(method="smote", k_neighbors=50), seed=SEED)
