"""Datasets, always scoped to one tenant. Functions flush but never commit.

A deleted dataset keeps its row with ``status='deleted'`` (finished jobs and
models still name it, and the foreign key from ``jobs`` needs it); its blobs
are gone and every lookup here treats it as absent.
"""

from __future__ import annotations

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from service.models import Dataset, Job, JobStatus
from service.repository.ids import findable
from service.repository.rows import changed_one_row

DELETED = "deleted"
_ACTIVE = (JobStatus.queued, JobStatus.running)
_SUMMARY_KEYS = ("num_classes", "class_names", "image_shape", "pixel_bits", "splits", "imbalance_ratio")


def add_dataset(
    session: Session,
    *,
    tenant_id: str,
    dataset_id: str,
    name: str,
    format: str,
    summary: dict,
    blob_prefix: str,
    size_bytes: int,
    diagnostics: dict | None = None,
    advice: list[dict] | None = None,
) -> Dataset:
    """Record an ingested dataset; ``summary`` is the ingest summary (class counts, shapes)."""
    missing = [key for key in _SUMMARY_KEYS if key not in summary]
    if missing:
        raise ValueError(f"dataset summary lacks {missing}; it has {sorted(summary)}")
    dataset = Dataset(
        id=dataset_id,
        tenant_id=tenant_id,
        name=name,
        format=format,
        status="ready",
        num_classes=int(summary["num_classes"]),
        class_names=list(summary["class_names"]),
        image_shape=list(summary["image_shape"]),
        pixel_bits=int(summary["pixel_bits"]),
        splits=dict(summary["splits"]),
        imbalance_ratio=float(summary["imbalance_ratio"]),
        blob_prefix=blob_prefix,
        size_bytes=int(size_bytes),
        diagnostics=diagnostics,
        advice=advice,
    )
    session.add(dataset)
    session.flush()
    return dataset


def get_dataset(session: Session, *, tenant_id: str, dataset_id: str) -> Dataset | None:
    if not findable(dataset_id):
        return None
    return session.scalar(
        select(Dataset).where(Dataset.id == dataset_id, Dataset.tenant_id == tenant_id, Dataset.status != DELETED)
    )


def list_datasets(session: Session, *, tenant_id: str, limit: int, offset: int) -> list[Dataset]:
    """The tenant's datasets, newest first."""
    query = (
        select(Dataset)
        .where(Dataset.tenant_id == tenant_id, Dataset.status != DELETED)
        .order_by(Dataset.created_at.desc(), Dataset.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(query))


def dataset_in_use(session: Session, *, tenant_id: str, dataset_id: str) -> bool:
    """True while a queued or running job of the tenant trains on the dataset."""
    return bool(session.scalar(select(_active_job_exists(tenant_id, dataset_id))))


def delete_dataset(session: Session, *, tenant_id: str, dataset_id: str) -> bool:
    """Mark the dataset deleted unless it is missing or in use (one conditional UPDATE).

    Returns True when this call deleted it; the caller removes the blobs after
    committing, so a failed commit never leaves a row without its data.
    """
    return changed_one_row(
        session,
        update(Dataset)
        .where(
            Dataset.id == dataset_id,
            Dataset.tenant_id == tenant_id,
            Dataset.status != DELETED,
            ~_active_job_exists(tenant_id, dataset_id),
        )
        .values(status=DELETED)
        .execution_options(synchronize_session=False),
    )


def _active_job_exists(tenant_id: str, dataset_id: str):
    return exists().where(Job.dataset_id == dataset_id, Job.tenant_id == tenant_id, Job.status.in_(_ACTIVE))
