"""``GET /metrics``: Prometheus text format for the operator (a token of its own, never a tenant key)."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.deps import SettingsDep
from service.errors import ProblemError, problem_responses
from service.scrape import DatabaseCollector, render

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics (Authorization: Bearer <RAREFIT_METRICS_TOKEN>)",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "the text exposition format"},
        **problem_responses(401, 404, s404="metrics are off: RAREFIT_METRICS_TOKEN is not set"),
    },
)
async def metrics(request: Request, settings: SettingsDep) -> Response:
    if settings.metrics_token is None:
        raise ProblemError(404, "Not Found", "metrics are off; the operator sets RAREFIT_METRICS_TOKEN to serve them")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = settings.metrics_token.get_secret_value()
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.encode(), expected.encode()):
        raise ProblemError(
            401,
            "Unauthorized",
            "GET /metrics needs the operator's metrics token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    state = request.app.state
    collector = DatabaseCollector(
        session_factory=state.session_factory, celery_app=state.celery, lease_seconds=settings.lease_seconds
    )
    body = await run_in_threadpool(render, collector)  # database and broker round trips
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
