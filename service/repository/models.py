"""Registered models, scoped to one tenant; the worker registers them (``register_model``)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.jsonsafe import json_safe
from service.models import Model
from service.repository.dialect import insert_ignore
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


def register_model(
    session: Session,
    *,
    job_id: str,
    tenant_id: str,
    arch: str,
    class_names: list[str],
    input_shape: list[int],
    threshold: float | None,
    positive_class: int | None,
    metrics: dict,
    blob_prefix: str,
    size_bytes: int = 0,
    operating_point: dict | None = None,
) -> Model:
    """The job's model, inserted once: a second call returns the first model unchanged."""
    row = {
        "job_id": job_id,
        "tenant_id": tenant_id,
        "arch": arch,
        "class_names": list(class_names),
        "input_shape": [int(v) for v in input_shape],
        "threshold": json_safe(threshold),
        "positive_class": positive_class,
        "metrics": json_safe(metrics) or {},
        "blob_prefix": blob_prefix,
        "size_bytes": int(size_bytes),
        "operating_point": json_safe(operating_point),
    }
    insert_ignore(session, Model, row, keys=("job_id",))
    return session.scalars(select(Model).where(Model.job_id == job_id).execution_options(populate_existing=True)).one()


def blob_prefix_of_job(session: Session, *, tenant_id: str, job_id: str) -> str | None:
    """Where the artefacts of the model trained by the tenant's job ``job_id`` live; None without one."""
    return session.scalar(select(Model.blob_prefix).where(Model.job_id == job_id, Model.tenant_id == tenant_id))
