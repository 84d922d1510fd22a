"""Event streams: ``GET /v1/jobs/{id}/events`` (status changes and epochs) and
``GET /v1/experiments/{id}/events`` (the experiment's status changes), as Server-Sent Events."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse

from service.api.deps import TenantDep, read_in_session
from service.api.event_stream import SSE_RESPONSE, LastEventId, event_stream
from service.errors import not_found, problem_responses
from service.models import Experiment, ExperimentStatus, Job, JobStatus
from service.repository import events
from service.repository import experiments as experiment_repo
from service.repository import jobs as repo

router = APIRouter()


@router.get(
    "/jobs/{job_id}/events",
    tags=["jobs"],
    response_class=EventSourceResponse,
    summary="Follow a job: `status` and `epoch` events, resumable with Last-Event-ID, ends when the job ends",
    responses={**SSE_RESPONSE, **problem_responses(404)},
)
async def job_events(
    job_id: str, request: Request, tenant_id: TenantDep, last_event_id: LastEventId = None
) -> EventSourceResponse:
    found = await read_in_session(request, lambda session: repo.get_job(session, tenant_id=tenant_id, job_id=job_id))
    if found is None:
        raise not_found("job", job_id)
    return event_stream(
        request,
        subject=events.job_subject(found.id),
        after_id=last_event_id or 0,
        has_ended=lambda session: _has_ended(session, found.id),
    )


@router.get(
    "/experiments/{experiment_id}/events",
    tags=["experiments"],
    response_class=EventSourceResponse,
    summary="Follow an experiment: a `status` event per state change, resumable, ends when it ends",
    responses={**SSE_RESPONSE, **problem_responses(404)},
)
async def experiment_events(
    experiment_id: str, request: Request, tenant_id: TenantDep, last_event_id: LastEventId = None
) -> EventSourceResponse:
    found = await read_in_session(
        request,
        lambda session: experiment_repo.get_experiment(session, tenant_id=tenant_id, experiment_id=experiment_id),
    )
    if found is None:
        raise not_found("experiment", experiment_id)
    return event_stream(
        request,
        subject=events.experiment_subject(found.id),
        after_id=last_event_id or 0,
        has_ended=lambda session: _experiment_ended(session, found.id),
    )


def _has_ended(session: Session, job_id: str) -> bool:
    return JobStatus(session.scalar(select(Job.status).where(Job.id == job_id))).is_terminal


def _experiment_ended(session: Session, experiment_id: str) -> bool:
    status = session.scalar(select(Experiment.status).where(Experiment.id == experiment_id))
    return ExperimentStatus(status).is_terminal
