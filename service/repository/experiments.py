"""Experiments and their trials, scoped to one tenant where the API asks. Functions flush but never commit.

The API creates, cancels and deletes; ``service.experiments.advance`` owns
every other transition and serialises itself per experiment with ``lock``,
a conditional UPDATE that is the first statement of its transaction (a row
lock on PostgreSQL, the write lock on SQLite).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from service.models import EpochMetrics, Experiment, ExperimentStatus, ExperimentTrial, Job, JobStatus, utcnow
from service.repository import events
from service.repository import jobs as job_repo
from service.repository.ids import findable
from service.repository.rows import changed_one_row

logger = logging.getLogger(__name__)
ACTIVE = (ExperimentStatus.queued, ExperimentStatus.running)


class ExperimentConflict(Exception):
    """The requested transition is impossible from the experiment's current state."""


def create_experiment(
    session: Session,
    *,
    tenant_id: str,
    dataset_id: str,
    name: str,
    stored: dict,
    trials_total: int,
    warnings: list[dict],
) -> Experiment:
    row = Experiment(
        tenant_id=tenant_id,
        dataset_id=dataset_id,
        name=name,
        request=stored,
        status=ExperimentStatus.queued,
        trials_total=trials_total,
        warnings=warnings,
    )
    session.add(row)
    session.flush()
    state_changed(session, experiment=row)
    return row


def get_experiment(session: Session, *, tenant_id: str, experiment_id: str) -> Experiment | None:
    if not findable(experiment_id):
        return None
    return session.scalar(select(Experiment).where(Experiment.id == experiment_id, Experiment.tenant_id == tenant_id))


def list_experiments(
    session: Session, *, tenant_id: str, status: ExperimentStatus | None, limit: int, offset: int
) -> list[Experiment]:
    query = select(Experiment).where(Experiment.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Experiment.status == ExperimentStatus(status))
    query = query.order_by(Experiment.created_at.desc(), Experiment.id.desc()).limit(limit).offset(offset)
    return list(session.scalars(query))


def active_experiment_ids(session: Session, *, limit: int = 100) -> list[str]:
    query = select(Experiment.id).where(Experiment.status.in_(ACTIVE)).order_by(Experiment.created_at).limit(limit)
    return list(session.scalars(query))


def lock(session: Session, *, experiment_id: str, now: datetime) -> Experiment | None:
    """Take the experiment for one advance step (first statement of the transaction); None if gone or finished."""
    locked = changed_one_row(
        session,
        update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.status.in_(ACTIVE))
        .values(advanced_at=now)
        .execution_options(synchronize_session=False),
    )
    if not locked:
        return None
    return session.get(Experiment, experiment_id, populate_existing=True)


def set_status(session: Session, experiment: Experiment, status: ExperimentStatus, *, error: str | None = None) -> None:
    now = utcnow()
    experiment.status = status
    if status == ExperimentStatus.running and experiment.started_at is None:
        experiment.started_at = now
    if status.is_terminal:
        experiment.finished_at = now
        experiment.error_message = error
    session.flush()
    state_changed(session, experiment=experiment)


def state_changed(session: Session, *, experiment: Experiment) -> None:
    """Every experiment state change passes here, inside the transaction that makes it (after its UPDATE),
    so its event in the log exists exactly when the change commits."""
    logger.info("experiment %s is now %s", experiment.id, ExperimentStatus(experiment.status).value)
    events.experiment_changed(session, experiment=experiment)


def pruning_of(session: Session, *, experiment_id: str) -> str | None:
    """The experiment's ``pruning`` mode as stored (``none`` or ``asha``); None if it no longer exists."""
    stored = session.scalar(select(Experiment.request).where(Experiment.id == experiment_id))
    return None if stored is None else str(stored["request"]["pruning"])


def trials(session: Session, *, experiment_id: str) -> list[ExperimentTrial]:
    query = select(ExperimentTrial).where(ExperimentTrial.experiment_id == experiment_id)
    return list(session.scalars(query.order_by(ExperimentTrial.number)))


def add_trial(
    session: Session, *, experiment_id: str, number: int, params: dict, state: str, error: str | None = None
) -> ExperimentTrial:
    row = ExperimentTrial(experiment_id=experiment_id, number=number, params=params, state=state, error_message=error)
    if state != "running":
        row.finished_at = utcnow()
    session.add(row)
    session.flush()
    return row


def finish_trial(session: Session, trial: ExperimentTrial, *, state: str, value: float | None) -> None:
    trial.state, trial.value, trial.finished_at = state, value, utcnow()
    session.flush()


def experiment_jobs(session: Session, *, experiment_id: str) -> list[Job]:
    query = select(Job).where(Job.experiment_id == experiment_id).order_by(Job.trial, Job.created_at)
    return list(session.scalars(query))


def best_epoch_blocks(session: Session, *, job_ids: list[str]) -> dict[str, dict]:
    """The val metric block at each finished job's best epoch, by job id."""
    if not job_ids:
        return {}
    query = (
        select(EpochMetrics.job_id, EpochMetrics.val)
        .join(Job, Job.id == EpochMetrics.job_id)
        .where(EpochMetrics.job_id.in_(job_ids), EpochMetrics.epoch == Job.best_epoch)
    )
    return {job_id: val for job_id, val in session.execute(query) if val is not None}


def val_history(session: Session, *, job_ids: list[str]) -> dict[str, dict[int, dict]]:
    """Every recorded epoch's val block, ``{job_id: {epoch: block}}`` (pruning reads it)."""
    if not job_ids:
        return {}
    history: dict[str, dict[int, dict]] = {job_id: {} for job_id in job_ids}
    query = select(EpochMetrics.job_id, EpochMetrics.epoch, EpochMetrics.val).where(EpochMetrics.job_id.in_(job_ids))
    for job_id, epoch, val in session.execute(query):
        if val is not None:
            history[job_id][epoch] = val
    return history


def cancel_jobs(session: Session, *, tenant_id: str, jobs: list[Job]) -> None:
    """Cancel every job still queued or running (a queued one at once, a running one at its next epoch)."""
    for job in jobs:
        if not JobStatus(job.status).is_terminal:
            try:
                job_repo.request_cancel(session, tenant_id=tenant_id, job_id=job.id)
            except job_repo.JobConflict:
                continue  # finished meanwhile


def cancel_experiment(session: Session, *, tenant_id: str, experiment_id: str) -> Experiment | None:
    """Cancel the experiment and every active child; None if unknown; ExperimentConflict once finished."""
    cancelled = changed_one_row(
        session,
        update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.tenant_id == tenant_id, Experiment.status.in_(ACTIVE))
        .values(status=ExperimentStatus.cancelled, finished_at=utcnow())
        .execution_options(synchronize_session=False),
    )
    experiment = get_experiment(session, tenant_id=tenant_id, experiment_id=experiment_id)
    if experiment is None:
        return None
    session.refresh(experiment)
    if not cancelled:
        raise ExperimentConflict(f"experiment {experiment_id} is already {ExperimentStatus(experiment.status).value}")
    cancel_jobs(session, tenant_id=tenant_id, jobs=experiment_jobs(session, experiment_id=experiment_id))
    state_changed(session, experiment=experiment)
    return experiment


def delete_experiment(session: Session, *, tenant_id: str, experiment_id: str) -> bool:
    """Delete a finished experiment and its trial rows; its jobs stay as ordinary jobs. Conflict while active."""
    experiment = get_experiment(session, tenant_id=tenant_id, experiment_id=experiment_id)
    if experiment is None:
        return False
    if not ExperimentStatus(experiment.status).is_terminal:
        raise ExperimentConflict(f"experiment {experiment_id} is {experiment.status.value}; cancel it first")
    session.execute(
        update(Job)
        .where(Job.experiment_id == experiment_id, Job.tenant_id == tenant_id)
        .values(experiment_id=None, trial=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(delete(ExperimentTrial).where(ExperimentTrial.experiment_id == experiment_id))
    session.execute(delete(Experiment).where(Experiment.id == experiment_id))
    return True
