"""``GET /v1/jobs/{id}/events``: a job's status changes and epochs as Server-Sent Events."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse

from service.api.deps import TenantDep, read_in_session
from service.api.event_stream import SSE_RESPONSE, LastEventId, event_stream
from service.errors import not_found, problem_responses
from service.models import Job, JobStatus
from service.repository import events
from service.repository import jobs as repo

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get(
    "/{job_id}/events",
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


def _has_ended(session: Session, job_id: str) -> bool:
    return JobStatus(session.scalar(select(Job.status).where(Job.id == job_id))).is_terminal
