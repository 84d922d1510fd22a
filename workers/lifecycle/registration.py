"""A succeeded job's record: its artefacts, its model row and the job's end, in the caller's transaction."""

from __future__ import annotations

from sqlalchemy.orm import Session

from service.model_card import WEIGHTS_FILE, artifacts_prefix
from service.models import JobStatus
from service.repository import leases, models
from workers.lifecycle.artifacts import ExportedModel


def register_success(
    session: Session,
    *,
    job_id: str,
    tenant_id: str,
    worker_id: str,
    best_epoch: int,
    exported: ExportedModel,
    arch: str,
    image_shape: tuple[int, int, int],
) -> bool:
    """Register the exported model and finish the job; False when ``worker_id`` no longer holds the lease.

    A retried transaction whose first commit went through finds the job
    already succeeded by this worker and writes nothing again.
    """
    if leases.succeeded_by(session, job_id=job_id, worker_id=worker_id):
        return True
    card = exported.card
    for item in exported.stored:
        leases.register_artifact(
            session,
            job_id=job_id,
            name=item.name,
            blob_key=item.blob_key,
            size=item.size,
            content_type=item.content_type,
            sha256=item.sha256,
        )
    weights = next(item for item in exported.stored if item.name == WEIGHTS_FILE)
    model = models.register_model(
        session,
        job_id=job_id,
        tenant_id=tenant_id,
        arch=arch,
        class_names=card.class_names,
        input_shape=list(image_shape),
        threshold=card.threshold,
        positive_class=card.positive_class,
        operating_point=card.operating_point.model_dump(mode="json"),
        metrics={k: v for k, v in card.metrics.items() if isinstance(v, (int, float))},
        blob_prefix=artifacts_prefix(job_id),
        size_bytes=weights.size,
    )
    return leases.finish_job(
        session,
        job_id=job_id,
        worker_id=worker_id,
        status=JobStatus.succeeded,
        best_epoch=best_epoch,
        test_metrics=card.metrics or None,
        model_id=model.id,
        warnings=[
            {"code": "operating_point", "message": message, "fields": ["threshold"]}
            for message in card.operating_point.warnings
        ],
    )
