"""Experiment bodies built from rows (the bodies are ``rarefit.schemas``; the request body is
``service.experiments.spec.ExperimentRequest``)."""

from __future__ import annotations

from rarefit.schemas import (
    BestOut,
    ExperimentOut,
    ExperimentProgressOut,
    ExperimentSummaryOut,
    LeaderboardRowOut,
    WarningOut,
)
from service.experiments import leaderboard
from service.experiments.plan import Plan
from service.models import Experiment, ExperimentTrial, Job, JobStatus


def experiment_out(
    row: Experiment,
    *,
    trials: list[ExperimentTrial],
    jobs: list[Job],
    val_blocks: dict[str, dict],
) -> ExperimentOut:
    plan = Plan.from_stored(row.request)
    by_trial: dict[int, list[Job]] = {}
    for job in jobs:
        by_trial.setdefault(int(job.trial or 0), []).append(job)
    rows, best = leaderboard.build(trials, by_trial, val_blocks, plan.request.objective)
    stored = plan.to_stored()
    return ExperimentOut(
        id=row.id,
        name=row.name,
        status=getattr(row.status, "value", row.status),
        dataset_id=row.dataset_id,
        request=stored["request"],
        base=stored["base"],
        space=stored["space"],
        reasons=stored["reasons"],
        progress=ExperimentProgressOut(
            trials_done=sum(trial.state != "running" for trial in trials),
            trials_total=row.trials_total,
            jobs_running=sum(job.status == JobStatus.running for job in jobs),
            jobs_queued=sum(job.status == JobStatus.queued for job in jobs),
        ),
        leaderboard=[LeaderboardRowOut(**item) for item in rows],
        best=BestOut(**best) if best else None,
        warnings=[WarningOut(**item) for item in row.warnings or []],
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        error=row.error_message,
    )


def experiment_summary_out(row: Experiment) -> ExperimentSummaryOut:
    return ExperimentSummaryOut(
        id=row.id,
        name=row.name,
        status=getattr(row.status, "value", row.status),
        dataset_id=row.dataset_id,
        trials_total=row.trials_total,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )
