"""The public bodies of the rarefit HTTP API: what the API answers and what ``rarefit.client`` returns.

Web-free and free of the service (pydantic only), so a user's client needs
nothing but this package; the service builds these from its ORM rows in
``service.schemas`` and ``service.experiments.schemas``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _as_utc(value: datetime) -> datetime:
    # SQLite hands timestamps back naive; every timestamp we store is UTC.
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
T = TypeVar("T")

_SPLITS_EXAMPLE: dict[str, Any] = {
    "train": {"count": 4708, "class_counts": [1214, 3494]},
    "val": {"count": 524, "class_counts": [135, 389]},
    "test": {"count": 624, "class_counts": [234, 390]},
}
_NOW = "2025-01-01T12:00:00Z"
EXAMPLE_ID = "3f2b8c1d9e4a4b6f8a7c5d2e1f0a9b8c"
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
                    "id": EXAMPLE_ID,
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
        default=8,
        description="bits per channel of the stored images: 8, or 16 when any uploaded image is 16-bit "
        "(8-bit ones are then widened by 257); a model sees x / (2^bits - 1)",
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


class ProgressOut(BaseModel):
    epoch: int = Field(description="epochs finished so far")
    epochs: int = Field(description="epochs the spec asks for")


class WarningOut(BaseModel):
    code: str
    message: str
    fields: list[str] = Field(description="the dotted spec paths involved")


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
                    "dataset_id": EXAMPLE_ID,
                    "spec": {"spec_version": 1, "dataset_id": EXAMPLE_ID, "epochs": 20, "...": "..."},
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


class EpochOut(BaseModel):
    epoch: int
    train_loss: float
    val_loss: float | None
    val: dict[str, Any] | None = Field(description="metric block on the validation split")
    lr: float
    seconds: float


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
                {"name": "model.pt2", "size": 45000123, "content_type": "application/octet-stream", "sha256": "0" * 64}
            ]
        }
    )
    name: str
    size: int
    content_type: str
    sha256: str


class ModelRevisionOut(BaseModel):
    revision: int
    operating_point: dict[str, Any]
    metrics: dict[str, Any] = Field(description="the test block at this operating point (with lower bounds)")
    created_at: UtcDatetime


class AliasOut(BaseModel):
    alias: str
    model_id: str
    updated_at: UtcDatetime


class ModelOut(BaseModel):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "id": EXAMPLE_ID,
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
    def of(cls, rows: list[Any], *, limit: int, offset: int, convert: Callable[[Any], T]) -> Page[T]:
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


# --- experiments (the request body is the service's ExperimentRequest) ---------------------------------


class SummaryOut(BaseModel):
    mean: float | None
    std: float | None = Field(description="sample standard deviation over seeds (0 for one seed)")
    per_seed: list[float]


class TrialJobOut(BaseModel):
    job_id: str
    seed: int
    status: str
    model_id: str | None


class LeaderboardRowOut(BaseModel):
    rank: int | None = Field(description="1 = best mean val objective; null until the trial completes")
    trial: int
    state: str = Field(description="running | complete | pruned | failed")
    params: dict[str, Any]
    jobs: list[TrialJobOut]
    val: dict[str, SummaryOut] = Field(description="'objective' and every metric-block scalar, at the best epoch")
    test: dict[str, SummaryOut] = Field(description="the same on test: reported, never used to choose")
    seconds: SummaryOut = Field(description="wall seconds per job")
    within_noise_of_best: bool | None = Field(
        description="true when a one-sided paired t-test over shared seeds (p >= 0.05) cannot tell it from the "
        "best trial on val; null with fewer than two shared seeds"
    )
    error: str | None


class BestOut(BaseModel):
    model_config = {"protected_namespaces": ()}
    trial: int
    params: dict[str, Any]
    job_id: str | None = Field(description="the seed whose val objective is closest to the trial's mean")
    model_id: str | None
    val_objective: SummaryOut
    test_objective: SummaryOut | None


class ExperimentProgressOut(BaseModel):
    trials_done: int
    trials_total: int
    jobs_running: int
    jobs_queued: int


class ExperimentOut(BaseModel):
    id: str
    name: str
    status: str = Field(description="queued | running | succeeded | failed | cancelled")
    dataset_id: str
    request: dict[str, Any] = Field(description="the validated request, defaults filled in")
    base: dict[str, Any] = Field(description="job-spec fields every trial shares (auto: chosen for the dataset)")
    space: dict[str, Any] = Field(description="the search space (auto: chosen for the dataset)")
    reasons: list[str] = Field(description="auto: why this space fits the dataset")
    progress: ExperimentProgressOut
    leaderboard: list[LeaderboardRowOut]
    best: BestOut | None
    warnings: list[WarningOut]
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    error: str | None


class ExperimentSummaryOut(BaseModel):
    """A list entry: no leaderboard (GET the experiment for it)."""

    id: str
    name: str
    status: str
    dataset_id: str
    trials_total: int
    created_at: UtcDatetime
    finished_at: UtcDatetime | None
