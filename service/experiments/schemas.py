"""API bodies for experiments (the request body is ``service.experiments.spec.ExperimentRequest``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.experiments import leaderboard
from service.experiments.plan import Plan
from service.models import Experiment, ExperimentTrial, Job, JobStatus
from service.schemas import UtcDatetime, WarningOut


class SummaryOut(BaseModel):
    mean: float | None
    std: float | None = Field(description="sample standard deviation over seeds (0 for one seed)")
    per_seed: list[float]


class TrialJobOut(BaseModel):
    job_id: str
    seed: int
    status: str
    model_id: str | None


class LeaderboardRowOut(BaseModel):
    rank: int | None = Field(description="1 = best mean val objective; null until the trial completes")
    trial: int
    state: str = Field(description="running | complete | pruned | failed")
    params: dict[str, Any]
    jobs: list[TrialJobOut]
    val: dict[str, SummaryOut] = Field(description="'objective' and every metric-block scalar, at the best epoch")
    test: dict[str, SummaryOut] = Field(description="the same on test: reported, never used to choose")
    seconds: SummaryOut = Field(description="wall seconds per job")
    within_noise_of_best: bool | None = Field(
        description="true when a one-sided paired t-test over shared seeds (p >= 0.05) cannot tell it from the "
        "best trial on val; null with fewer than two shared seeds"
    )
    error: str | None


class BestOut(BaseModel):
    model_config = {"protected_namespaces": ()}
    trial: int
    params: dict[str, Any]
    job_id: str | None = Field(description="the seed whose val objective is closest to the trial's mean")
    model_id: str | None
    val_objective: SummaryOut
    test_objective: SummaryOut | None


class ExperimentProgressOut(BaseModel):
    trials_done: int
    trials_total: int
    jobs_running: int
    jobs_queued: int


class ExperimentOut(BaseModel):
    id: str
    name: str
    status: str = Field(description="queued | running | succeeded | failed | cancelled")
    dataset_id: str
    request: dict[str, Any] = Field(description="the validated request, defaults filled in")
    base: dict[str, Any] = Field(description="job-spec fields every trial shares (auto: chosen for the dataset)")
    space: dict[str, Any] = Field(description="the search space (auto: chosen for the dataset)")
    reasons: list[str] = Field(description="auto: why this space fits the dataset")
    progress: ExperimentProgressOut
    leaderboard: list[LeaderboardRowOut]
    best: BestOut | None
    warnings: list[WarningOut]
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    error: str | None

    @classmethod
    def build(
        cls,
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
        return cls(
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


class ExperimentSummaryOut(BaseModel):
    """A list entry: no leaderboard (GET the experiment for it)."""

    id: str
    name: str
    status: str
    dataset_id: str
    trials_total: int
    created_at: UtcDatetime
    finished_at: UtcDatetime | None

    @classmethod
    def from_row(cls, row: Experiment) -> ExperimentSummaryOut:
        return cls(
            id=row.id,
            name=row.name,
            status=getattr(row.status, "value", row.status),
            dataset_id=row.dataset_id,
            trials_total=row.trials_total,
            created_at=row.created_at,
            finished_at=row.finished_at,
        )
