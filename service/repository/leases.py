"""Worker-side job transitions: claim, heartbeat, progress, finish and reap.

Every transition is one conditional ``UPDATE … WHERE`` on the state it
expects (and, for the lease holder, on ``worker_id``), so it is atomic on
PostgreSQL and SQLite alike: two workers racing for a job both run the same
UPDATE and exactly one sees ``rowcount == 1``. Upserts use
``INSERT … ON CONFLICT`` on the unique keys. Functions flush but never
commit; wrap them in ``service.db.transaction``. Keep the conditional UPDATE
the first statement of its transaction: on SQLite a transaction that reads
first and writes later cannot upgrade its lock after a concurrent commit.
Each state change and each recorded epoch appends its event to the event
log in the same transaction (``_transition``, ``record_epoch``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from service.jsonsafe import json_safe
from service.models import Artifact, EpochMetrics, Job, JobStatus, utcnow
from service.repository import events
from service.repository.dialect import upsert
from service.repository.rows import changed_one_row

_FINAL = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


@dataclass(frozen=True)
class LeaseStatus:
    held: bool
    cancel_requested: bool


def claim_job(session: Session, *, job_id: str, worker_id: str, lease_seconds: float, now: datetime) -> Job | None:
    """Take a queued job (→ running, attempts + 1); None when it is not queued (a duplicate delivery)."""
    claimed = _transition(
        session,
        job_id,
        (Job.id == job_id, Job.status == JobStatus.queued),
        status=JobStatus.running,
        worker_id=worker_id,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
        attempts=Job.attempts + 1,
        started_at=func.coalesce(Job.started_at, now),
    )
    return session.get(Job, job_id, populate_existing=True) if claimed else None


def renew_lease(session: Session, *, job_id: str, worker_id: str, lease_seconds: float, now: datetime) -> LeaseStatus:
    """Extend the lease; ``held`` is False if another worker owns the job or it stopped running."""
    held = _update(session, _held_by(job_id, worker_id), lease_expires_at=now + timedelta(seconds=lease_seconds))
    cancel = session.scalar(select(Job.cancel_requested).where(Job.id == job_id))
    return LeaseStatus(held=held, cancel_requested=bool(cancel))


def record_epoch(session: Session, *, job_id: str, worker_id: str, record: dict[str, Any]) -> bool:
    """Upsert the epoch's metrics row and advance progress; False (nothing written) without the lease."""
    epoch = int(record["epoch"])
    if epoch < 1:
        raise ValueError(f"epoch must be >= 1, got {epoch}")
    if not _update(session, _held_by(job_id, worker_id), progress_epoch=epoch, updated_at=utcnow()):
        return False
    values = {
        "train_loss": float(record["train_loss"]),
        "val_loss": None if record.get("val_loss") is None else float(record["val_loss"]),
        "lr": float(record.get("lr") or 0.0),
        "seconds": float(record.get("seconds") or 0.0),
        "val": json_safe(record.get("val")),
    }
    upsert(session, EpochMetrics, {"job_id": job_id, "epoch": epoch, **values}, keys=("job_id", "epoch"))
    tenant_id = session.scalars(select(Job.tenant_id).where(Job.id == job_id)).one()
    events.epoch_recorded(session, tenant_id=tenant_id, job_id=job_id, values=json_safe({"epoch": epoch, **values}))
    return True


def clear_epochs_after(session: Session, *, job_id: str, worker_id: str, epoch: int) -> bool:
    """Drop metrics rows past ``epoch`` (a run starting over from an older point); False without the lease."""
    if not _update(session, _held_by(job_id, worker_id), progress_epoch=epoch, updated_at=utcnow()):
        return False
    session.execute(
        delete(EpochMetrics)
        .where(EpochMetrics.job_id == job_id, EpochMetrics.epoch > epoch)
        .execution_options(synchronize_session=False)
    )
    return True


def record_checkpoint(session: Session, *, job_id: str, worker_id: str, key: str, sha256: str, epoch: int) -> bool:
    """Point the job at its newest checkpoint; False without the lease."""
    return _update(
        session, _held_by(job_id, worker_id), checkpoint_key=key, checkpoint_sha256=sha256, checkpoint_epoch=epoch
    )


def finish_job(
    session: Session,
    *,
    job_id: str,
    worker_id: str,
    status: JobStatus,
    error_type: str | None = None,
    error_message: str | None = None,
    best_epoch: int | None = None,
    test_metrics: dict | None = None,
    model_id: str | None = None,
    warnings: list[dict] | None = None,
    now: datetime | None = None,
) -> bool:
    """Move the lease holder's running job to a final status; False without the lease."""
    status = JobStatus(status)
    if status not in _FINAL:
        raise ValueError(f"finish_job needs a final status {[s.value for s in _FINAL]}, got {status.value!r}")
    return _transition(
        session,
        job_id,
        _held_by(job_id, worker_id),
        status=status,
        finished_at=now or utcnow(),
        lease_expires_at=None,
        error_type=error_type,
        error_message=error_message,
        best_epoch=best_epoch,
        test_metrics=json_safe(test_metrics),
        model_id=model_id,
        warnings=list(warnings) if warnings else None,
    )


def release_job(session: Session, *, job_id: str, worker_id: str, now: datetime | None = None) -> bool:
    """Give a running job back (graceful shutdown): queued again, checkpoint kept, attempt not counted."""
    return _transition(
        session,
        job_id,
        _held_by(job_id, worker_id),
        status=JobStatus.queued,
        worker_id=None,
        lease_expires_at=None,
        attempts=Job.attempts - 1,
        enqueued_at=now or utcnow(),
    )


def succeeded_by(session: Session, *, job_id: str, worker_id: str) -> bool:
    """Whether ``worker_id`` already finished the job as succeeded (a retried commit that went through)."""
    job = session.get(Job, job_id)
    return job is not None and job.status == JobStatus.succeeded and job.worker_id == worker_id


def register_artifact(
    session: Session, *, job_id: str, name: str, blob_key: str, size: int, content_type: str, sha256: str
) -> None:
    """Record (or replace) the job's artefact ``name``."""
    values = {"blob_key": blob_key, "size": int(size), "content_type": content_type, "sha256": sha256}
    upsert(session, Artifact, {"job_id": job_id, "name": name, **values}, keys=("job_id", "name"))


def expired_running_jobs(session: Session, *, now: datetime, limit: int = 100) -> list[str]:
    """Ids of running jobs whose lease ran out (their worker died or lost the database)."""
    query = select(Job.id).where(
        Job.status == JobStatus.running, or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now)
    )
    return list(session.scalars(query.order_by(Job.lease_expires_at).limit(limit)))


def stale_queued_jobs(session: Session, *, now: datetime, older_than_seconds: float, limit: int = 100) -> list[str]:
    """Ids of jobs queued (or last re-sent) more than ``older_than_seconds`` ago: their message may be lost."""
    cutoff = now - timedelta(seconds=older_than_seconds)
    query = select(Job.id).where(
        Job.status == JobStatus.queued,
        or_(Job.enqueued_at < cutoff, and_(Job.enqueued_at.is_(None), Job.created_at < cutoff)),
    )
    return list(session.scalars(query.order_by(Job.created_at).limit(limit)))


def requeue_expired(
    session: Session, *, job_id: str, now: datetime, max_attempts: int
) -> Literal["requeued", "failed", "cancelled"] | None:
    """Recover a running job whose lease expired; None when it is not (or no longer) expired.

    A cancel request wins (cancelled); otherwise the job is queued again while
    ``attempts < max_attempts`` and fails with ``WorkerLost`` after that.
    """
    expired = (
        Job.id == job_id,
        Job.status == JobStatus.running,
        or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now),
    )
    done = {"finished_at": now, "lease_expires_at": None}
    if _transition(session, job_id, (*expired, Job.cancel_requested.is_(True)), status=JobStatus.cancelled, **done):
        return "cancelled"
    requeue = {"status": JobStatus.queued, "worker_id": None, "lease_expires_at": None, "enqueued_at": now}
    if _transition(session, job_id, (*expired, Job.attempts < max_attempts), **requeue):
        return "requeued"
    message = (
        f"the worker running this job stopped responding {max_attempts} time(s) "
        "(crashed, was killed, or lost the database); giving up"
    )
    lost = {"status": JobStatus.failed, "error_type": "WorkerLost", "error_message": message}
    if _transition(session, job_id, expired, **lost, **done):
        return "failed"
    return None


def _held_by(job_id: str, worker_id: str) -> tuple:
    return (Job.id == job_id, Job.worker_id == worker_id, Job.status == JobStatus.running)


def _update(session: Session, where: tuple, **values: Any) -> bool:
    return changed_one_row(
        session, update(Job).where(*where).values(**values).execution_options(synchronize_session=False)
    )


def _transition(session: Session, job_id: str, where: tuple, **values: Any) -> bool:
    """A conditional status change that, when it happens, stamps ``updated_at`` and appends its event."""
    changed = _update(session, where, updated_at=utcnow(), **values)
    if changed:
        events.job_changed(session, job_id=job_id)
    return changed
