"""The model registry's rows: operating-point revisions and aliases, scoped to one tenant.

A model's row is an index of its card; ``advance_revision`` moves it to a new
card revision with one conditional ``UPDATE … WHERE revision = expected``, so
two concurrent re-fits cannot both win. Functions flush but never commit.
"""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from service.jsonsafe import json_safe
from service.models import Job, Model, ModelAlias, ModelRevision, utcnow
from service.repository.dialect import insert_ignore, upsert
from service.repository.ids import findable
from service.repository.rows import changed_one_row


def advance_revision(
    session: Session,
    *,
    model: Model,
    expected: int,
    threshold: float | None,
    operating_point: dict,
    metrics: dict,
) -> bool:
    """Point ``model`` at card revision ``expected + 1``; False when another re-fit got there first."""
    return changed_one_row(
        session,
        update(Model)
        .where(Model.id == model.id, Model.revision == expected)
        .values(
            revision=expected + 1,
            threshold=json_safe(threshold),
            operating_point=json_safe(operating_point),
            metrics=json_safe(metrics),
        )
        .execution_options(synchronize_session=False),
    )


def record_revision(session: Session, *, model_id: str, revision: int, operating_point: dict, metrics: dict) -> None:
    """Keep ``revision`` in the model's history (once: a repeat changes nothing)."""
    row = {
        "model_id": model_id,
        "revision": revision,
        "operating_point": json_safe(operating_point),
        "metrics": json_safe(metrics),
        "created_at": utcnow(),
    }
    insert_ignore(session, ModelRevision, row, keys=("model_id", "revision"))


def revisions(session: Session, *, model_id: str) -> list[ModelRevision]:
    query = select(ModelRevision).where(ModelRevision.model_id == model_id).order_by(ModelRevision.revision)
    return list(session.scalars(query))


def set_alias(session: Session, *, tenant_id: str, alias: str, model_id: str) -> ModelAlias | None:
    """Point the tenant's ``alias`` at ``model_id`` (which the caller checked is the tenant's)."""
    upsert(
        session,
        ModelAlias,
        {"tenant_id": tenant_id, "alias": alias, "model_id": model_id, "updated_at": utcnow()},
        keys=("tenant_id", "alias"),
    )
    return session.get(ModelAlias, (tenant_id, alias), populate_existing=True)


def get_alias(session: Session, *, tenant_id: str, alias: str) -> ModelAlias | None:
    if not findable(alias):
        return None
    return session.scalar(select(ModelAlias).where(ModelAlias.tenant_id == tenant_id, ModelAlias.alias == alias))


def list_aliases(session: Session, *, tenant_id: str) -> list[ModelAlias]:
    return list(session.scalars(select(ModelAlias).where(ModelAlias.tenant_id == tenant_id).order_by(ModelAlias.alias)))


def delete_alias(session: Session, *, tenant_id: str, alias: str) -> bool:
    if not findable(alias):
        return False
    return changed_one_row(
        session, delete(ModelAlias).where(ModelAlias.tenant_id == tenant_id, ModelAlias.alias == alias)
    )


def aliases_of(session: Session, *, tenant_id: str, model_id: str) -> list[str]:
    query = select(ModelAlias.alias).where(ModelAlias.tenant_id == tenant_id, ModelAlias.model_id == model_id)
    return sorted(session.scalars(query))


def delete_model(session: Session, *, model: Model) -> None:
    """Remove the model and its history; its job stays (with its artefacts) but no longer names it."""
    session.execute(delete(ModelRevision).where(ModelRevision.model_id == model.id))
    session.execute(update(Job).where(Job.model_id == model.id).values(model_id=None))
    session.delete(model)
    session.flush()
