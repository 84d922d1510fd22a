"""All routes: probes at the root, the versioned API under ``/v1``."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.routes import (
    aliases,
    datasets,
    events,
    experiments,
    health,
    jobs,
    metrics,
    models,
    plots,
    predict,
    webhooks,
)
from service.errors import problem_responses

API_PREFIX = "/v1"


def build_router() -> APIRouter:
    router = APIRouter()
    router.include_router(health.router)
    router.include_router(metrics.router)
    # Every /v1 operation can answer these; routes document their own 404/409/413/429.
    v1 = APIRouter(prefix=API_PREFIX, responses=problem_responses(401, 422, 500))
    # aliases before models: GET /models/aliases is not the model with id 'aliases'.
    for module in (datasets, jobs, events, plots, experiments, aliases, models, predict, webhooks):
        v1.include_router(module.router)
    router.include_router(v1)
    return router
