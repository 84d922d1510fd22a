"""``benchmarks.guarantees`` on synthetic stored scores: the coverage section is written and sane."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks import common
from benchmarks.guarantees import resplit_coverage
from service.operating_points import SplitScores, scores_npz

REPO_ROOT = Path(__file__).resolve().parents[2]


def synthetic(seed: int = 0) -> dict[str, SplitScores]:
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("val", 524), ("test", 624)):
        labels = (rng.random(n) < 0.7).astype(np.int64)
        p1 = 1 / (1 + np.exp(-(rng.normal(size=n) * 1.5 + 3.0 * labels - 1.0)))
        out[split] = SplitScores(np.stack([1 - p1, p1], axis=1), labels)
    return out


def test_the_guarantee_covers_on_exchangeable_scores() -> None:
    found = resplit_coverage(synthetic(), resplits=100, target=0.9, confidence=0.95, positive=1, seed=1)
    assert found["guarantee_unmet"] == 0.0 and found["population_below_target"] <= 0.1
    assert found["population_below_val_bound"] <= 0.1 and found["fixed_population_below_val_bound"] <= 0.1
    assert found["below_target"] <= 0.1  # at most ~5 % expected; room for 100 resplits' noise
    assert found["median_val_bound"] >= 0.9 and found["median_test_recall"] >= found["median_val_bound"] - 0.05


def test_quick_run_writes_its_section(tmp_path: Path) -> None:
    scores = tmp_path / "scores.npz"
    scores.write_bytes(scores_npz(synthetic()))
    results = tmp_path / "RESULTS.md"
    command = [
        sys.executable,
        "-m",
        "benchmarks.guarantees",
        "--quick",
        "--scores",
        str(scores),
        "--results",
        str(results),
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    body = common.read_section("guarantees-cpu", path=results)
    assert body is not None and "| resplits whose test recall < target 0.95 |" in body
    assert "| fixed threshold (fitted once on the pool): test recall < its val lower bound |" in body
