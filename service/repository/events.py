"""The event log: appended in the transaction of the change it describes, read by SSE and webhooks.

Ordering: every job event is inserted after an UPDATE of that job's row in
the same transaction (or with the row's INSERT), so the row lock orders the
job's transactions and its events commit in ``id`` order. A reader following
one subject by ``id > last`` therefore never skips an event that commits
late with a smaller id. Functions flush but never commit.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import Event, Experiment, ExperimentStatus, Job, JobStatus
from service.repository import webhooks

EPOCH = "job.epoch"
# Every type the log writes.
TYPES = (
    *(f"job.{status.value}" for status in JobStatus),
    EPOCH,
    *(f"experiment.{status.value}" for status in ExperimentStatus),
)


def job_subject(job_id: str) -> str:
    return f"job:{job_id}"


def experiment_subject(experiment_id: str) -> str:
    return f"experiment:{experiment_id}"


def status_type(status: JobStatus) -> str:
    return f"job.{JobStatus(status).value}"


def append(session: Session, *, tenant_id: str, subject: str, type: str, payload: dict[str, Any]) -> Event:
    """Add one event and the webhook deliveries it owes."""
    event = Event(tenant_id=tenant_id, subject=subject, type=type, payload=payload)
    session.add(event)
    session.flush()
    webhooks.owe_deliveries(session, event=event)
    return event


def job_changed(session: Session, *, job_id: str) -> Event:
    """Append the job's current status (call it right after the UPDATE that changed it)."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise ValueError(f"job {job_id} does not exist")
    status = JobStatus(job.status)
    return append(
        session,
        tenant_id=job.tenant_id,
        subject=job_subject(job.id),
        type=status_type(status),
        payload=job_payload(job),
    )


def experiment_changed(session: Session, *, experiment: Experiment) -> Event:
    """Append the experiment's current status (right after the UPDATE that changed it)."""
    status = ExperimentStatus(experiment.status)
    payload = {
        "experiment_id": experiment.id,
        "status": status.value,
        "trials_total": experiment.trials_total,
        "error": experiment.error_message,
    }
    return append(
        session,
        tenant_id=experiment.tenant_id,
        subject=experiment_subject(experiment.id),
        type=f"experiment.{status.value}",
        payload=payload,
    )


def epoch_recorded(session: Session, *, tenant_id: str, job_id: str, values: dict[str, Any]) -> Event:
    return append(session, tenant_id=tenant_id, subject=job_subject(job_id), type=EPOCH, payload=values)


def job_payload(job: Job) -> dict[str, Any]:
    """What a status event says about the job: enough to act on without a second request."""
    error = None
    if job.error_type is not None or job.error_message is not None:
        error = {"type": job.error_type or "Error", "message": job.error_message or ""}
    return {
        "job_id": job.id,
        "status": JobStatus(job.status).value,
        "progress": {"epoch": job.progress_epoch, "epochs": job.epochs},
        "error": error,
        "model_id": job.model_id,
        "attempts": job.attempts,
    }


def after(session: Session, *, subject: str, after_id: int, limit: int) -> list[Event]:
    """The subject's events with ``id > after_id``, oldest first."""
    query = select(Event).where(Event.subject == subject, Event.id > after_id).order_by(Event.id).limit(limit)
    return list(session.scalars(query))
