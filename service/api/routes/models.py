"""Registered models (a succeeded job registers one); predict lives in ``predict.py``."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import LimitQuery, OffsetQuery, SessionDep, TenantDep
from service.errors import not_found, problem_responses
from service.repository import models as repo
from service.schemas import ModelOut, Page

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=Page[ModelOut], summary="List models, newest first")
def list_models(
    session: SessionDep, tenant_id: TenantDep, limit: LimitQuery = 50, offset: OffsetQuery = 0
) -> Page[ModelOut]:
    rows = repo.list_models(session, tenant_id=tenant_id, limit=limit + 1, offset=offset)
    return Page[ModelOut].of(rows, limit=limit, offset=offset, convert=ModelOut.from_row)


@router.get(
    "/{model_id}",
    response_model=ModelOut,
    summary="One model: classes, input shape, threshold, metrics",
    responses=problem_responses(404),
)
def get_model(model_id: str, session: SessionDep, tenant_id: TenantDep) -> ModelOut:
    row = repo.get_model(session, tenant_id=tenant_id, model_id=model_id)
    if row is None:
        raise not_found("model", model_id)
    return ModelOut.from_row(row)
