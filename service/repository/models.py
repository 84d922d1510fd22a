"""Registered models, scoped to one tenant (rows are written by the worker)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import Model
from service.repository.ids import findable


def get_model(session: Session, *, tenant_id: str, model_id: str) -> Model | None:
    if not findable(model_id):
        return None
    return session.scalar(select(Model).where(Model.id == model_id, Model.tenant_id == tenant_id))


def list_models(session: Session, *, tenant_id: str, limit: int, offset: int) -> list[Model]:
    """The tenant's models, newest first."""
    query = (
        select(Model)
        .where(Model.tenant_id == tenant_id)
        .order_by(Model.created_at.desc(), Model.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(query))
