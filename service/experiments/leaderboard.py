"""The leaderboard: one row per trial, every number as ``{mean, std, per_seed}`` on val and test.

Ranking is by the mean val objective (test is reported, never used to
choose). ``within_noise_of_best`` is a one-sided paired t-test over the seeds
the trial shares with the best trial (same seed = same initialisation and
batch order, so the pairs remove seed-to-seed variation): a trial is within
noise when the best one is not significantly better at ``ALPHA`` = 0.05.
It is None with fewer than two shared seeds (nothing to test with). The
best trial's model is the seed whose val objective is closest to the trial's
mean (a typical run, not the luckiest).
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from service.experiments.objective import objective_value, scalar_metrics
from service.experiments.spec import ObjectiveSpec
from service.models import ExperimentTrial, Job, JobStatus

ALPHA = 0.05


@dataclass(frozen=True)
class SeedResult:
    job: Job
    seed: int
    val: dict[str, float]  # objective + scalars of the val block at the best epoch
    test: dict[str, float]
    seconds: float | None


def seed_result(job: Job, *, val_block: dict | None, objective: ObjectiveSpec) -> SeedResult:
    val = scalar_metrics(val_block)
    test = scalar_metrics(job.test_metrics)
    for block, target in ((val_block, val), (job.test_metrics, test)):
        value = objective_value(block, objective)
        if value is not None:
            target["objective"] = value
    seconds = None
    if job.started_at is not None and job.finished_at is not None:
        seconds = (job.finished_at - job.started_at).total_seconds()
    return SeedResult(job=job, seed=int(job.spec.get("seed", 0)), val=val, test=test, seconds=seconds)


def summary(values: list[float]) -> dict[str, Any]:
    """``{mean, std, per_seed}``: sample standard deviation (n - 1), 0 for a single seed."""
    if not values:
        return {"mean": None, "std": None, "per_seed": []}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "per_seed": values}


def block_summary(results: list[SeedResult], split: str) -> dict[str, dict[str, Any]]:
    """Each key present in every seed's block, summarised over the seeds."""
    blocks = [getattr(result, split) for result in results]
    if not blocks:
        return {}
    keys = set.intersection(*(set(block) for block in blocks))
    return {key: summary([block[key] for block in blocks]) for key in sorted(keys)}


def within_noise(best: list[SeedResult], other: list[SeedResult]) -> bool | None:
    """Paired one-sided t-test over shared seeds: True when ``best`` is not significantly better."""
    best_by_seed = {r.seed: r.val.get("objective") for r in best}
    pairs = [
        (best_by_seed[r.seed], r.val["objective"])
        for r in other
        if r.seed in best_by_seed and best_by_seed[r.seed] is not None and "objective" in r.val
    ]
    if len(pairs) < 2:
        return None
    differences = np.array([b - o for b, o in pairs])
    if np.allclose(differences, differences[0], rtol=0.0, atol=1e-12):
        return bool(differences[0] <= 1e-12)  # no spread: better on every seed by the same margin, or equal
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        p_value = float(stats.ttest_rel([b for b, _ in pairs], [o for _, o in pairs], alternative="greater").pvalue)
    return not (math.isfinite(p_value) and p_value < ALPHA)


def closest_to_mean(results: list[SeedResult]) -> SeedResult | None:
    scored = [r for r in results if "objective" in r.val and r.job.model_id is not None]
    if not scored:
        return None
    mean = statistics.fmean(r.val["objective"] for r in scored)
    # With two seeds both are equally close: rounding keeps float noise from choosing, the lower seed does.
    return min(scored, key=lambda r: (round(abs(r.val["objective"] - mean), 9), r.seed))


def build(
    trials: list[ExperimentTrial], jobs: dict[int, list[Job]], val_blocks: dict[str, dict], objective: ObjectiveSpec
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """``(rows, best)``: complete trials ranked by mean val objective, then the rest unranked."""
    results = {
        trial.number: [
            seed_result(job, val_block=val_blocks.get(job.id), objective=objective)
            for job in jobs.get(trial.number, [])
            if job.status == JobStatus.succeeded
        ]
        for trial in trials
    }
    rows = [_row(trial, jobs.get(trial.number, []), results[trial.number]) for trial in trials]
    ranked = sorted(
        (row for row in rows if row["state"] == "complete" and row["val"].get("objective", {}).get("mean") is not None),
        key=lambda row: (-row["val"]["objective"]["mean"], row["trial"]),
    )
    for rank, row in enumerate(ranked, start=1):
        row["rank"] = rank
    if not ranked:
        return rows, None
    best_results = results[ranked[0]["trial"]]
    for row in ranked:
        row["within_noise_of_best"] = within_noise(best_results, results[row["trial"]])
    ordered = ranked + [row for row in rows if row.get("rank") is None]
    chosen = closest_to_mean(best_results)
    best = {
        "trial": ranked[0]["trial"],
        "params": ranked[0]["params"],
        "job_id": chosen.job.id if chosen else None,
        "model_id": chosen.job.model_id if chosen else None,
        "val_objective": ranked[0]["val"]["objective"],
        "test_objective": ranked[0]["test"].get("objective"),
    }
    return ordered, best


def _row(trial: ExperimentTrial, jobs: list[Job], results: list[SeedResult]) -> dict[str, Any]:
    return {
        "rank": None,
        "trial": trial.number,
        "state": trial.state,
        "params": trial.params,
        "jobs": [
            {
                "job_id": job.id,
                "seed": int(job.spec.get("seed", 0)),
                "status": JobStatus(job.status).value,
                "model_id": job.model_id,
            }
            for job in jobs
        ],
        "val": block_summary(results, "val"),
        "test": block_summary(results, "test"),
        "seconds": summary([r.seconds for r in results if r.seconds is not None]),
        "within_noise_of_best": None,
        "error": trial.error_message,
    }
