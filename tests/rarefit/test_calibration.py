"""Temperature scaling against a brute-force NLL grid; reliability bins against the core's ECE."""

from __future__ import annotations

import numpy as np
import pytest

from rarefit.calibration import fit_temperature, nll, reliability, softmax_at
from workers.training.metrics import expected_calibration_error


def overconfident(seed: int, *, n: int = 400, k: int = 3, scale: float = 4.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += 1.0
    return logits * scale, labels  # sharpened: the best temperature is > 1


@pytest.mark.parametrize("seed", range(4))
def test_temperature_minimises_the_nll_like_a_brute_force_grid(seed) -> None:
    logits, labels = overconfident(seed)
    fitted = fit_temperature(logits, labels)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))
    best = grid[int(np.argmin([nll(logits, labels, t) for t in grid]))]
    assert fitted == pytest.approx(best, rel=3e-3)
    assert fitted > 1 and nll(logits, labels, fitted) <= nll(logits, labels, 1.0)


def test_temperature_keeps_the_argmax_and_works_on_log_probabilities() -> None:
    logits, labels = overconfident(7)
    t = fit_temperature(logits, labels)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert fit_temperature(logp, labels) == pytest.approx(t, rel=1e-6)
    assert (softmax_at(logits, t).argmax(axis=1) == logits.argmax(axis=1)).all()


def test_reliability_bins_add_up_to_the_core_ece() -> None:
    logits, labels = overconfident(3)
    probs = softmax_at(logits, 1.0)
    diagram = reliability(probs, labels)
    assert sum(b["count"] for b in diagram["bins"]) == len(labels) and len(diagram["bins"]) == 15
    assert diagram["ece"] == pytest.approx(expected_calibration_error(probs, labels), abs=1e-12)
    after = reliability(softmax_at(logits, fit_temperature(logits, labels)), labels)
    assert after["ece"] < diagram["ece"]


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match=r"shape \(N, K\)"):
        fit_temperature(np.zeros((0, 2)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="NaN"):
        fit_temperature(np.array([[np.nan, 0.0]]), np.array([0]))
