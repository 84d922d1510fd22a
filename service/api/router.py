"""All routes: probes at the root, the versioned API under ``/v1``."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.routes import datasets, events, experiments, health, jobs, metrics, models, predict, webhooks
from service.errors import problem_responses

API_PREFIX = "/v1"


def build_router() -> APIRouter:
    router = APIRouter()
    router.include_router(health.router)
    router.include_router(metrics.router)
    # Every /v1 operation can answer these; routes document their own 404/409/413/429.
    v1 = APIRouter(prefix=API_PREFIX, responses=problem_responses(401, 422, 500))
    for module in (datasets, jobs, events, experiments, models, predict, webhooks):
        v1.include_router(module.router)
    router.include_router(v1)
    return router
