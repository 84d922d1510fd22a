"""API bodies built from ORM rows: the bodies themselves are ``rarefit.schemas`` (one definition, shared with
the client); routes never hand ORM rows to FastAPI directly. The request body of ``POST /v1/jobs`` is
``service.spec.JobSpec`` itself.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from rarefit.schemas import (
    EXAMPLE_ID,
    AdviceOut,
    AliasOut,
    ArtifactOut,
    DatasetOut,
    EpochOut,
    ErrorOut,
    JobOut,
    ModelOut,
    ModelRevisionOut,
    ProgressOut,
    WarningOut,
)
from service.ingest.canonical import mask_classes
from service.models import Artifact, Dataset, EpochMetrics, Job, Model, ModelAlias, ModelRevision
from service.spec import JobSpec
from service.spec_warnings import spec_warnings


def dataset_out(row: Dataset) -> DatasetOut:
    return DatasetOut(
        id=row.id,
        name=row.name,
        status=row.status,
        format=row.format,
        num_classes=row.num_classes,
        class_names=[str(n) for n in row.class_names],
        image_shape=list(row.image_shape),
        pixel_bits=row.pixel_bits,
        splits=row.splits,
        mask_classes=[str(row.class_names[i]) for i in mask_classes(row.splits)],
        imbalance_ratio=row.imbalance_ratio,
        size_bytes=row.size_bytes,
        created_at=row.created_at,
        diagnostics=row.diagnostics,
        advice=None if row.advice is None else [AdviceOut(**item) for item in row.advice],
    )


def _spec_warnings(spec: dict[str, Any]) -> list[WarningOut]:
    try:
        parsed = JobSpec.model_validate(spec)
    except ValidationError:  # a spec stored by another version; its warnings are not worth a 500
        return []
    return [WarningOut(**item) for item in spec_warnings(parsed)]


def job_out(row: Job) -> JobOut:
    error = None
    if row.error_type is not None or row.error_message is not None:
        error = ErrorOut(type=row.error_type or "Error", message=row.error_message or "")
    return JobOut(
        id=row.id,
        status=getattr(row.status, "value", row.status),
        dataset_id=row.dataset_id,
        spec=row.spec,
        progress=ProgressOut(epoch=row.progress_epoch, epochs=row.epochs),
        created_at=row.created_at,
        updated_at=row.updated_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        error=error,
        model_id=row.model_id,
        cancel_requested=bool(row.cancel_requested),
        attempts=row.attempts,
        experiment_id=row.experiment_id,
        trial=row.trial,
        warnings=_spec_warnings(row.spec) + [WarningOut(**item) for item in row.warnings or []],
    )


def epoch_out(row: EpochMetrics) -> EpochOut:
    return EpochOut(
        epoch=row.epoch,
        train_loss=row.train_loss,
        val_loss=row.val_loss,
        val=row.val,
        lr=row.lr,
        seconds=row.seconds,
    )


def artifact_out(row: Artifact) -> ArtifactOut:
    return ArtifactOut(name=row.name, size=row.size, content_type=row.content_type, sha256=row.sha256)


def model_revision_out(row: ModelRevision) -> ModelRevisionOut:
    return ModelRevisionOut(
        revision=row.revision, operating_point=row.operating_point, metrics=row.metrics, created_at=row.created_at
    )


def alias_out(row: ModelAlias) -> AliasOut:
    return AliasOut(alias=row.alias, model_id=row.model_id, updated_at=row.updated_at)


def model_out(row: Model, *, history: list[ModelRevision] | None = None) -> ModelOut:
    return ModelOut(
        revision=row.revision or 0,
        operating_point=row.operating_point,
        history=None if history is None else [model_revision_out(item) for item in history],
        id=row.id,
        arch=row.arch,
        class_names=[str(n) for n in row.class_names],
        input_shape=list(row.input_shape),
        threshold=row.threshold,
        positive_class=row.positive_class,
        source_job_id=row.job_id,
        metrics=row.metrics,
        size_bytes=row.size_bytes,
        created_at=row.created_at,
    )


JOB_SPEC_EXAMPLES = {
    "minimal": {"summary": "only the dataset; every other field has a default", "value": {"dataset_id": EXAMPLE_ID}},
    "focal_cutmix": {
        "summary": "focal loss, CutMix, class-balanced sampling",
        "value": {
            "dataset_id": EXAMPLE_ID,
            "model": {"arch": "resnet18", "init": None, "image_size": None},
            "loss": {"type": "focal", "gamma": 2.0, "alpha": 0.25, "class_weights": "none", "label_smoothing": 0.0},
            "mixing": {"mode": "cutmix", "alpha": 1.0, "prob": 1.0},
            "sampler": {"type": "weighted"},
            "augment": {"hflip": True, "rotation": 15, "scale": [0.9, 1.1]},
            "optim": {"name": "adamw", "lr": 0.001, "weight_decay": 0.0001, "scheduler": "cosine"},
            "epochs": 20,
            "batch_size": 128,
            "seed": 0,
            "early_stopping": {"patience": 5},
            "selection_metric": "balanced_accuracy",
            "threshold": {"strategy": "max_f1"},
        },
    },
}
