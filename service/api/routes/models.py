"""Registered models (a succeeded job registers one): read, re-fit the operating point, delete.

Predict lives in ``predict.py``, aliases in ``aliases.py``; the re-fit use case in ``service.registry``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from rarefit.schemas import ModelOut, Page
from service.api.deps import BlobStoreDep, LimitQuery, OffsetQuery, SessionDep, TenantDep
from service.errors import ProblemError, field_error, not_found, problem_responses
from service.inference import ArtifactError
from service.registry import PolicyError, RegistryConflict, refit
from service.repository import models as repo
from service.repository import registry
from service.schemas import model_out
from service.threshold_spec import ThresholdSpec

router = APIRouter(prefix="/models", tags=["models"])


class ModelPatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"threshold": {"strategy": "precision_at_least", "value": 0.9, "guarantee": True}}]
        },
    )
    threshold: ThresholdSpec = Field(description="the new operating-point policy (and its confidence level)")


@router.get("", response_model=Page[ModelOut], summary="List models, newest first")
def list_models(
    session: SessionDep, tenant_id: TenantDep, limit: LimitQuery = 50, offset: OffsetQuery = 0
) -> Page[ModelOut]:
    rows = repo.list_models(session, tenant_id=tenant_id, limit=limit + 1, offset=offset)
    return Page[ModelOut].of(rows, limit=limit, offset=offset, convert=model_out)


@router.get(
    "/{model_id}",
    response_model=ModelOut,
    summary="One model: classes, input shape, operating point and its history, metrics",
    responses=problem_responses(404),
)
def get_model(model_id: str, session: SessionDep, tenant_id: TenantDep) -> ModelOut:
    row = repo.get_model(session, tenant_id=tenant_id, model_id=model_id)
    if row is None:
        raise not_found("model", model_id)
    return model_out(row, history=registry.revisions(session, model_id=row.id))


@router.patch(
    "/{model_id}",
    response_model=ModelOut,
    summary="Re-fit the operating point on the stored val scores (no retraining)",
    description="Fits `threshold` on the model's stored validation scores, verifies it on the test scores "
    "(metrics and per-class lower bounds in `metrics`), and makes it the operating point predict applies. "
    "The previous one stays in `history`.",
    responses=problem_responses(400, 404, 409, 422, 503, s400="a body that is not JSON text"),
)
def patch_model(
    model_id: str, body: ModelPatch, request: Request, session: SessionDep, tenant_id: TenantDep, store: BlobStoreDep
) -> ModelOut:
    row = repo.get_model(session, tenant_id=tenant_id, model_id=model_id)
    if row is None:
        raise not_found("model", model_id)
    try:
        refit(session, store, model=row, policy=body.threshold)
    except PolicyError as exc:
        loc = ("body", *exc.field)
        raise ProblemError(422, "Validation failed", str(exc), errors=[field_error(loc, str(exc))]) from exc
    except RegistryConflict as exc:
        raise ProblemError(409, "Conflict", str(exc)) from exc
    except ArtifactError as exc:
        raise ProblemError(503, "Model Unavailable", f"model {model_id} cannot be read; retry later") from exc
    session.commit()
    request.app.state.model_refs.forget((tenant_id, model_id))  # predict here serves the new revision at once
    session.refresh(row)
    return model_out(row, history=registry.revisions(session, model_id=row.id))


@router.delete(
    "/{model_id}",
    status_code=204,
    summary="Delete a model (its job and artefacts stay)",
    responses=problem_responses(404, 409),
)
def delete_model(model_id: str, request: Request, session: SessionDep, tenant_id: TenantDep) -> Response:
    row = repo.get_model(session, tenant_id=tenant_id, model_id=model_id)
    if row is None:
        raise not_found("model", model_id)
    aliases = registry.aliases_of(session, tenant_id=tenant_id, model_id=row.id)
    if aliases:
        raise ProblemError(409, "Conflict", f"model {model_id} is aliased as {', '.join(aliases)}; move those first")
    registry.delete_model(session, model=row)
    session.commit()
    request.app.state.model_refs.forget((tenant_id, model_id))
    return Response(status_code=204)
