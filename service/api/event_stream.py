"""Server-Sent Events read from the event log: resumable, heartbeating, closed when the subject ends.

The stream is a loop of database reads (``id > last``), so any API process
can serve any client and a reconnect with ``Last-Event-ID`` continues exactly
after the last event the client saw. Each event's ``id`` is its row id.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated

import anyio
from fastapi import Header, Request
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse, ServerSentEvent

from service.api.deps import read_in_session
from service.db import aware
from service.models import Event
from service.repository import events

LastEventId = Annotated[
    int | None,
    Header(ge=0, description="resume after this event id (the `id:` of the last event received)"),
]
SSE_RESPONSE = {200: {"content": {"text/event-stream": {}}, "description": "a stream of Server-Sent Events"}}
_BATCH = 200


def sse_name(event_type: str) -> str:
    """The SSE ``event:`` name: ``epoch`` for a finished epoch, ``status`` for every state change."""
    return "epoch" if event_type == events.EPOCH else "status"


def event_stream(
    request: Request,
    *,
    subject: str,
    after_id: int,
    has_ended: Callable[[Session], bool],
) -> EventSourceResponse:
    """Stream ``subject``'s events after ``after_id`` until ``has_ended`` and all its events are sent."""
    settings = request.app.state.settings
    content = _events(request, subject=subject, after_id=after_id, has_ended=has_ended)
    return EventSourceResponse(
        content,
        ping=settings.events_ping_seconds,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _events(
    request: Request, *, subject: str, after_id: int, has_ended: Callable[[Session], bool]
) -> AsyncIterator[ServerSentEvent]:
    poll = request.app.state.settings.events_poll_seconds
    last = after_id
    while True:
        ended, batch = await read_in_session(
            request, lambda session, after=last: _read(session, subject, after, has_ended)
        )
        for event in batch:
            last = event.id
            yield _as_sse(event)
        if ended and len(batch) < _BATCH:
            return
        if not batch:
            await anyio.sleep(poll)


def _read(session: Session, subject: str, after_id: int, has_ended: Callable[[Session], bool]) -> tuple[bool, list]:
    # The end is read first: once it holds, every event of the subject has committed,
    # so the batch read after it holds the last one.
    ended = has_ended(session)
    return ended, events.after(session, subject=subject, after_id=after_id, limit=_BATCH)


def _as_sse(event: Event) -> ServerSentEvent:
    data = {"type": event.type, "created_at": aware(event.created_at).isoformat(), **event.payload}
    return ServerSentEvent(data=json.dumps(data, separators=(",", ":")), event=sse_name(event.type), id=str(event.id))
