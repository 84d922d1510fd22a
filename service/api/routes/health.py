"""Liveness and readiness probes (no API key)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from sqlalchemy import text

from rarefit.schemas import HealthOut, ReadyOut
from service.api.deps import BlobStoreDep, CeleryDep
from service.errors import ProblemError, problem_responses
from service.queue import check_broker

logger = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut, summary="Liveness: the process answers")
def healthz() -> HealthOut:
    return HealthOut()


@router.get(
    "/readyz",
    response_model=ReadyOut,
    summary="Readiness: database, broker and blob store reachable",
    responses=problem_responses(503, s503="a dependency is down; `detail` and `checks` name it"),
)
def readyz(request: Request, store: BlobStoreDep, celery_app: CeleryDep) -> ReadyOut:
    checks = {
        "database": _probe("database", lambda: _ping_database(request)),
        "broker": _probe("broker", lambda: check_broker(celery_app)),
        "blob_store": _probe("blob_store", store.check),
    }
    down = sorted(name for name, state in checks.items() if state != "ok")
    if down:
        raise ProblemError(
            503,
            "Service Unavailable",
            f"not ready: {', '.join(down)} unreachable",
            extra={"checks": checks},
            headers={"Retry-After": "5"},
        )
    return ReadyOut(**checks)


def _ping_database(request: Request) -> None:
    with request.app.state.engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _probe(name: str, check) -> str:
    try:
        check()
    except Exception as exc:  # any failure means "not ready"; the reason goes to the log only
        logger.warning("readiness check %s failed: %s", name, type(exc).__name__)
        return "down"
    return "ok"
