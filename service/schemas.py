"""API response bodies: a vocabulary of their own, separate from ORM rows and the job spec.

Each ``*Out`` model has a ``from_row`` constructor; routes never hand ORM rows
to FastAPI directly. The request body of ``POST /v1/jobs`` is
``service.spec.JobSpec`` itself.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from service.ingest.canonical import mask_classes
from service.model_card import PROGRAM_FILE
from service.models import Artifact, Dataset, EpochMetrics, Job, Model, ModelAlias, ModelRevision
from service.spec import JobSpec
from service.spec_warnings import spec_warnings


def _as_utc(value: datetime) -> datetime:
    # SQLite hands timestamps back naive; every timestamp we store is UTC.
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
T = TypeVar("T")

_SPLITS_EXAMPLE = {
    "train": {"count": 4708, "class_counts": [1214, 3494]},
    "val": {"count": 524, "class_counts": [135, 389]},
    "test": {"count": 624, "class_counts": [234, 390]},
}
_NOW = "2025-01-01T12:00:00Z"
_ID = "3f2b8c1d9e4a4b6f8a7c5d2e1f0a9b8c"
_JOB_ID = "7d1e2f3a4b5c4d6e8f9a0b1c2d3e4f5a"


class SplitOut(BaseModel):
    count: int
    class_counts: list[int]
    masked_class_counts: list[int] | None = Field(
        default=None, description="images per class with a non-empty segmentation mask (uploads with masks)"
    )


class AdviceOut(BaseModel):
    code: str
    message: str
    suggested: dict[str, Any] = Field(description="job-spec or experiment fields that address it ({} if the data)")


class DatasetOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": _ID,
                    "name": "pneumoniamnist",
                    "status": "ready",
                    "format": "npz",
                    "num_classes": 2,
                    "class_names": ["0", "1"],
                    "image_shape": [28, 28, 1],
                    "pixel_bits": 8,
                    "splits": _SPLITS_EXAMPLE,
                    "imbalance_ratio": 2.88,
                    "size_bytes": 4600000,
                    "created_at": _NOW,
                }
            ]
        }
    )
    id: str
    name: str
    status: str
    format: str
    num_classes: int
    class_names: list[str]
    image_shape: list[int] = Field(description="[H, W, C] of every image")
    pixel_bits: Literal[8, 16] = Field(
        description="bits per channel of the stored images: 8, or 16 when any uploaded image is 16-bit "
        "(8-bit ones are then widened by 257); a model sees x / (2^bits - 1)"
    )
    splits: dict[str, SplitOut]
    mask_classes: list[str] = Field(
        default_factory=list, description="classes with segmentation masks in train (augment.copy_paste)"
    )
    imbalance_ratio: float = Field(description="largest train class count / smallest")
    size_bytes: int
    created_at: UtcDatetime
    diagnostics: dict[str, Any] | None = Field(
        default=None,
        description="found at upload: duplicates (within/across splits, label conflicts), small val/test support, "
        "missing classes per split, constant images",
    )
    advice: list[AdviceOut] | None = Field(default=None, description="what to do about the diagnostics")

    @classmethod
    def from_row(cls, row: Dataset) -> DatasetOut:
        return cls(
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


class ProgressOut(BaseModel):
    epoch: int = Field(description="epochs finished so far")
    epochs: int = Field(description="epochs the spec asks for")


class WarningOut(BaseModel):
    code: str
    message: str
    fields: list[str] = Field(description="the dotted spec paths involved")


def _spec_warnings(spec: dict[str, Any]) -> list[WarningOut]:
    try:
        parsed = JobSpec.model_validate(spec)
    except ValidationError:  # a spec stored by another version; its warnings are not worth a 500
        return []
    return [WarningOut(**item) for item in spec_warnings(parsed)]


class ErrorOut(BaseModel):
    type: str
    message: str


class JobOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": _JOB_ID,
                    "status": "queued",
                    "dataset_id": _ID,
                    "spec": {"spec_version": 1, "dataset_id": _ID, "epochs": 20, "...": "..."},
                    "progress": {"epoch": 0, "epochs": 20},
                    "created_at": _NOW,
                    "updated_at": _NOW,
                    "started_at": None,
                    "finished_at": None,
                    "error": None,
                    "model_id": None,
                    "cancel_requested": False,
                    "attempts": 0,
                }
            ]
        }
    )
    id: str
    status: str = Field(description="queued | running | succeeded | failed | cancelled")
    dataset_id: str
    spec: dict[str, Any]
    progress: ProgressOut
    created_at: UtcDatetime
    updated_at: UtcDatetime = Field(description="last change a client can see (status, progress, cancel flag)")
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    error: ErrorOut | None
    model_id: str | None
    cancel_requested: bool = Field(description="a running job stops at its next epoch boundary")
    attempts: int = Field(description="times a worker has claimed the job")
    experiment_id: str | None = Field(default=None, description="the experiment this job is a trial of")
    trial: int | None = Field(default=None, description="its trial number in that experiment")
    warnings: list[WarningOut] = Field(
        default=[],
        description="spec combinations that are likely a mistake, and what the finished job found "
        "(e.g. a recall guarantee that cannot hold)",
    )

    @classmethod
    def from_row(cls, row: Job) -> JobOut:
        error = None
        if row.error_type is not None or row.error_message is not None:
            error = ErrorOut(type=row.error_type or "Error", message=row.error_message or "")
        return cls(
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


class EpochOut(BaseModel):
    epoch: int
    train_loss: float
    val_loss: float | None
    val: dict[str, Any] | None = Field(description="metric block on the validation split")
    lr: float
    seconds: float

    @classmethod
    def from_row(cls, row: EpochMetrics) -> EpochOut:
        return cls(
            epoch=row.epoch,
            train_loss=row.train_loss,
            val_loss=row.val_loss,
            val=row.val,
            lr=row.lr,
            seconds=row.seconds,
        )


class MetricsOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "history": [
                        {
                            "epoch": 1,
                            "train_loss": 0.41,
                            "val_loss": 0.33,
                            "val": {"accuracy": 0.88, "balanced_accuracy": 0.86},
                            "lr": 0.001,
                            "seconds": 3.2,
                        }
                    ],
                    "best_epoch": 1,
                    "test": {"accuracy": 0.86, "balanced_accuracy": 0.83, "threshold": 0.42},
                }
            ]
        }
    )
    history: list[EpochOut]
    best_epoch: int | None
    test: dict[str, Any] | None = Field(description="metric block on the test split, once finished")


class ArtifactOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": PROGRAM_FILE, "size": 45000123, "content_type": "application/octet-stream", "sha256": "0" * 64}
            ]
        }
    )
    name: str
    size: int
    content_type: str
    sha256: str

    @classmethod
    def from_row(cls, row: Artifact) -> ArtifactOut:
        return cls(name=row.name, size=row.size, content_type=row.content_type, sha256=row.sha256)


class ModelRevisionOut(BaseModel):
    revision: int
    operating_point: dict[str, Any]
    metrics: dict[str, Any] = Field(description="the test block at this operating point (with lower bounds)")
    created_at: UtcDatetime

    @classmethod
    def from_row(cls, row: ModelRevision) -> ModelRevisionOut:
        return cls(
            revision=row.revision, operating_point=row.operating_point, metrics=row.metrics, created_at=row.created_at
        )


class AliasOut(BaseModel):
    alias: str
    model_id: str
    updated_at: UtcDatetime

    @classmethod
    def from_row(cls, row: ModelAlias) -> AliasOut:
        return cls(alias=row.alias, model_id=row.model_id, updated_at=row.updated_at)


class ModelOut(BaseModel):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "id": _ID,
                    "arch": "resnet18",
                    "class_names": ["0", "1"],
                    "input_shape": [28, 28, 1],
                    "threshold": 0.42,
                    "positive_class": 0,
                    "source_job_id": _JOB_ID,
                    "metrics": {"accuracy": 0.86, "balanced_accuracy": 0.83},
                    "size_bytes": 45000123,
                    "created_at": _NOW,
                }
            ]
        },
    )
    id: str
    arch: str
    class_names: list[str]
    input_shape: list[int] = Field(description="[H, W, C] of the images the model takes")
    threshold: float | None = Field(description="binary models: tuned decision threshold")
    positive_class: int | None
    source_job_id: str
    metrics: dict[str, Any]
    size_bytes: int
    created_at: UtcDatetime
    revision: int = Field(default=0, description="model card revision; +1 for each re-fitted operating point")
    operating_point: dict[str, Any] | None = Field(
        default=None, description="the decision rule predict applies (rule, thresholds, policy, guarantee)"
    )
    history: list[ModelRevisionOut] | None = Field(
        default=None, description="every operating point the model has had, oldest first (single-model answers)"
    )

    @classmethod
    def from_row(cls, row: Model, *, history: list[ModelRevision] | None = None) -> ModelOut:
        return cls(
            revision=row.revision or 0,
            operating_point=row.operating_point,
            history=None if history is None else [ModelRevisionOut.from_row(item) for item in history],
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


class PredictionOut(BaseModel):
    label: str = Field(description="the chosen class (the model card's operating point decides)")
    class_index: int
    probabilities: dict[str, float] = Field(description="softmax per class name; sums to 1")
    scores_version: int = Field(description="the model card revision that produced this answer")
    decision: dict[str, Any] = Field(description="the rule applied, its threshold(s) and the margin")


class PredictOut(BaseModel):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "model_id": "3f2b8c1d9e4a4b6f8a7c5d2e1f0a9b8c",
                    "predictions": [{"label": "1", "class_index": 1, "probabilities": {"0": 0.08, "1": 0.92}}],
                }
            ]
        },
    )
    model_id: str
    predictions: list[PredictionOut]


class Page(BaseModel, Generic[T]):
    """One page of a list: ``next_offset`` is null on the last page."""

    items: list[T]
    limit: int
    offset: int
    next_offset: int | None

    @classmethod
    def of(cls, rows: list, *, limit: int, offset: int, convert) -> Page[T]:
        """``rows`` is fetched with ``limit + 1`` so the extra row tells whether more exist."""
        more = len(rows) > limit
        return cls(
            items=[convert(row) for row in rows[:limit]],
            limit=limit,
            offset=offset,
            next_offset=offset + limit if more else None,
        )


class HealthOut(BaseModel):
    status: str = "ok"


class ReadyOut(BaseModel):
    database: str
    broker: str
    blob_store: str


JOB_SPEC_EXAMPLES = {
    "minimal": {"summary": "only the dataset; every other field has a default", "value": {"dataset_id": _ID}},
    "focal_cutmix": {
        "summary": "focal loss, CutMix, class-balanced sampling",
        "value": {
            "dataset_id": _ID,
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
