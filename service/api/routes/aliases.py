"""Model aliases (``production``, ``staging``): a tenant's names for its models, so callers never hard-code ids."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from rarefit.schemas import AliasOut
from service.api.deps import SessionDep, TenantDep
from service.errors import ProblemError, field_error, not_found, problem_responses
from service.repository import models as models_repo
from service.repository import registry
from service.schemas import alias_out

router = APIRouter(prefix="/models/aliases", tags=["models"])

ALIAS_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
AliasPath = Annotated[str, Path(pattern=ALIAS_PATTERN, description="letters, digits, '.', '_', '-' (at most 64)")]


class AliasIn(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model_id: str = Field(min_length=1, max_length=64)


@router.get("", response_model=list[AliasOut], summary="The tenant's aliases")
def list_aliases(session: SessionDep, tenant_id: TenantDep) -> list[AliasOut]:
    return [alias_out(row) for row in registry.list_aliases(session, tenant_id=tenant_id)]


@router.put(
    "/{alias}",
    response_model=AliasOut,
    summary="Point an alias at a model",
    responses=problem_responses(400, 404, 422, s400="a body that is not JSON text"),
)
def put_alias(alias: AliasPath, body: AliasIn, session: SessionDep, tenant_id: TenantDep) -> AliasOut:
    if models_repo.get_model(session, tenant_id=tenant_id, model_id=body.model_id) is None:
        raise ProblemError(
            404,
            "Not Found",
            "model_id names no model of this tenant",
            errors=[field_error(("body", "model_id"), "no such model for this tenant")],
        )
    row = registry.set_alias(session, tenant_id=tenant_id, alias=alias, model_id=body.model_id)
    if row is None:  # written in this very transaction
        raise not_found("alias", alias)
    out = alias_out(row)
    session.commit()
    return out


@router.get("/{alias}", response_model=AliasOut, summary="Which model an alias names", responses=problem_responses(404))
def get_alias(alias: str, session: SessionDep, tenant_id: TenantDep) -> AliasOut:
    row = registry.get_alias(session, tenant_id=tenant_id, alias=alias)
    if row is None:
        raise not_found("alias", alias)
    return alias_out(row)


@router.delete("/{alias}", status_code=204, summary="Remove an alias", responses=problem_responses(404))
def delete_alias(alias: str, session: SessionDep, tenant_id: TenantDep) -> Response:
    if not registry.delete_alias(session, tenant_id=tenant_id, alias=alias):
        raise not_found("alias", alias)
    session.commit()
    return Response(status_code=204)
