"""Training jobs as the API sees them, scoped to one tenant. Functions flush but never commit.

The worker-side transitions (claim, heartbeat, epochs, finish, reap) live in
``leases.py``; here are only the API's: create, enqueue stamp and cancel.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.models import Artifact, EpochMetrics, Job, JobStatus, utcnow
from service.repository import events
from service.repository.ids import MAX_NAME_CHARS, findable
from service.repository.rows import changed_one_row
from service.spec import JobSpec

_ACTIVE = (JobStatus.queued, JobStatus.running)


class JobConflict(Exception):
    """The requested transition is impossible from the job's current state."""

    def __init__(self, job: Job, message: str) -> None:
        super().__init__(message)
        self.job = job


def create_job(
    session: Session,
    *,
    tenant_id: str,
    spec: JobSpec,
    idempotency_key: str | None,
    request_hash: str | None,
    experiment_id: str | None = None,
    trial: int | None = None,
) -> Job:
    """Insert a queued job (of an experiment's ``trial`` if given) and its first event.

    Raises IntegrityError when the idempotency key is taken.
    """
    job = Job(
        tenant_id=tenant_id,
        dataset_id=spec.dataset_id,
        spec=spec.model_dump(mode="json"),
        status=JobStatus.queued,
        epochs=spec.epochs,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        experiment_id=experiment_id,
        trial=trial,
    )
    session.add(job)
    session.flush()
    events.job_changed(session, job_id=job.id)
    return job


def find_by_idempotency_key(session: Session, *, tenant_id: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key))


def expire_idempotency_key(session: Session, *, tenant_id: str, key: str, older_than: datetime) -> None:
    """Forget ``key`` on a job created before ``older_than``, so the key can be used again."""
    session.execute(
        update(Job)
        .where(Job.tenant_id == tenant_id, Job.idempotency_key == key, Job.created_at < older_than)
        .values(idempotency_key=None, request_hash=None)
        .execution_options(synchronize_session=False)
    )


def count_active_jobs(session: Session, *, tenant_id: str) -> int:
    query = select(func.count()).select_from(Job).where(Job.tenant_id == tenant_id, Job.status.in_(_ACTIVE))
    return int(session.scalar(query) or 0)


def get_job(session: Session, *, tenant_id: str, job_id: str) -> Job | None:
    if not findable(job_id):
        return None
    return session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))


def list_jobs(
    session: Session,
    *,
    tenant_id: str,
    status: JobStatus | None,
    limit: int,
    offset: int,
    experiment_id: str | None = None,
) -> list[Job]:
    """The tenant's jobs, newest first, optionally of one status and of one experiment."""
    if experiment_id is not None and not findable(experiment_id):
        return []
    query = select(Job).where(Job.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Job.status == JobStatus(status))
    if experiment_id is not None:
        query = query.where(Job.experiment_id == experiment_id)
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit).offset(offset)
    return list(session.scalars(query))


def mark_enqueued(session: Session, *, job_id: str, now: datetime) -> None:
    """Stamp the time the broker accepted the job's message (the reaper re-sends stale ones)."""
    session.execute(
        update(Job).where(Job.id == job_id).values(enqueued_at=now).execution_options(synchronize_session=False)
    )


def request_cancel(session: Session, *, tenant_id: str, job_id: str) -> Job | None:
    """Cancel a job: a queued one at once, a running one at its next epoch boundary.

    Each step is a conditional UPDATE on the status it expects, so a worker
    claiming the job at the same moment either sees it cancelled or gets
    ``cancel_requested``. Returns None for an unknown job; raises JobConflict
    for a job that already finished.
    """
    job = get_job(session, tenant_id=tenant_id, job_id=job_id)
    if job is None:
        return None
    now = utcnow()
    if _conditional(session, job_id, JobStatus.queued, status=JobStatus.cancelled, finished_at=now, updated_at=now):
        events.job_changed(session, job_id=job_id)
        return job
    if _conditional(session, job_id, JobStatus.running, cancel_requested=True, updated_at=now):
        session.refresh(job)
        return job
    session.refresh(job)
    if JobStatus(job.status).is_terminal:
        raise JobConflict(job, f"job {job_id} is already {JobStatus(job.status).value}")
    return job


def list_epoch_metrics(session: Session, *, job_id: str, since_epoch: int = 0) -> list[EpochMetrics]:
    """The job's epochs after ``since_epoch``, in order."""
    query = select(EpochMetrics).where(EpochMetrics.job_id == job_id, EpochMetrics.epoch > since_epoch)
    query = query.order_by(EpochMetrics.epoch)
    return list(session.scalars(query))


def list_artifacts(session: Session, *, job_id: str) -> list[Artifact]:
    query = select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)
    return list(session.scalars(query))


def get_artifact(session: Session, *, job_id: str, name: str) -> Artifact | None:
    if not findable(name, max_chars=MAX_NAME_CHARS):
        return None
    return session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name))


def _conditional(session: Session, job_id: str, expected: JobStatus, **values) -> bool:
    return changed_one_row(
        session,
        update(Job)
        .where(Job.id == job_id, Job.status == expected)
        .values(**values)
        .execution_options(synchronize_session=False),
    )
