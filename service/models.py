"""ORM rows: the database is the truth about every tenant, dataset, job and model.

These are storage rows only; API schemas live in ``schemas.py`` and the job
spec in ``spec.py`` (three vocabularies, never mixed).
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True), dict: JSON, list: JSON}


class JobStatus(str, enum.Enum):
    """Closed set of job states; each transition has one owner (see docs/architecture.md)."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings, never enough to log in
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the key
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    format: Mapped[str] = mapped_column(String(32))  # npz | imagefolder | labels_csv
    status: Mapped[str] = mapped_column(String(16), default="ready")
    num_classes: Mapped[int] = mapped_column(Integer)
    class_names: Mapped[list] = mapped_column(JSON)
    image_shape: Mapped[list] = mapped_column(JSON)  # [H, W, C]
    pixel_bits: Mapped[int] = mapped_column(Integer, default=8)  # 8: uint8 arrays, 16: uint16
    splits: Mapped[dict] = mapped_column(JSON)  # {"train": {"count", "class_counts"}, ...}
    imbalance_ratio: Mapped[float] = mapped_column(Float)
    blob_prefix: Mapped[str] = mapped_column(String(200))  # canonical decoded arrays
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Pre-flight findings at upload (service.ingest.diagnostics); None for datasets ingested before them.
    diagnostics: Mapped[dict | None] = mapped_column(JSON, default=None)
    advice: Mapped[list | None] = mapped_column(JSON, default=None)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    spec: Mapped[dict] = mapped_column(JSON)
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, name="job_status", native_enum=False, length=16),
        default=JobStatus.queued,
        index=True,
    )
    epochs: Mapped[int] = mapped_column(Integer)
    progress_epoch: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Moves with every change a client can see (status, progress, cancel flag), never with a heartbeat.
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    error_type: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    model_id: Mapped[str | None] = mapped_column(String(32), default=None)
    best_epoch: Mapped[int | None] = mapped_column(Integer, default=None)
    test_metrics: Mapped[dict | None] = mapped_column(JSON, default=None)
    # --- idempotent creation ---
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    request_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    # --- exactly-once execution: lease, attempts, checkpoint ---
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(200), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    enqueued_at: Mapped[datetime | None] = mapped_column(default=None)
    checkpoint_key: Mapped[str | None] = mapped_column(String(300), default=None)
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    checkpoint_epoch: Mapped[int] = mapped_column(Integer, default=0)
    # --- what the user should know about a finished job (e.g. a guarantee that cannot hold) ---
    warnings: Mapped[list | None] = mapped_column(JSON, default=None)
    # --- experiments: a trial's job (no foreign key: a job outlives its deleted experiment) ---
    experiment_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    trial: Mapped[int | None] = mapped_column(Integer, default=None)


class EpochMetrics(Base):
    """One row per (job, epoch); a resumed job upserts its epochs (never duplicates), and a job
    restarted from an earlier checkpoint first deletes the rows after it."""

    __tablename__ = "epoch_metrics"
    __table_args__ = (UniqueConstraint("job_id", "epoch"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float, default=None)
    lr: Mapped[float] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)
    val: Mapped[dict | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    blob_key: Mapped[str] = mapped_column(String(300))
    size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Model(Base):
    __tablename__ = "models"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), unique=True)  # registered once
    arch: Mapped[str] = mapped_column(String(64))
    class_names: Mapped[list] = mapped_column(JSON)
    input_shape: Mapped[list] = mapped_column(JSON)  # [H, W, C] of the images it takes
    # An index of the model card (the truth): what listings show without reading the blob store.
    threshold: Mapped[float | None] = mapped_column(Float, default=None)
    positive_class: Mapped[int | None] = mapped_column(Integer, default=None)
    metrics: Mapped[dict] = mapped_column(JSON)  # summary of the test block
    blob_prefix: Mapped[str] = mapped_column(String(200))  # the artefact's files (service.model_card names them)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revision: Mapped[int] = mapped_column(Integer, default=0)  # the card revision predict must serve
    operating_point: Mapped[dict | None] = mapped_column(JSON, default=None)


class ModelRevision(Base):
    """A model's operating points over time: revision 0 is the trained one, each PATCH adds one."""

    __tablename__ = "model_revisions"
    __table_args__ = (UniqueConstraint("model_id", "revision"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    operating_point: Mapped[dict] = mapped_column(JSON)
    metrics: Mapped[dict] = mapped_column(JSON)  # the test block's decision metrics and bounds at it
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelAlias(Base):
    """A tenant's name for one of its models (``production``, ``staging``), so callers never hard-code ids."""

    __tablename__ = "model_aliases"
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


# Portable auto-increment: BIGSERIAL on PostgreSQL, the rowid alias on SQLite (which only aliases INTEGER).
EventId = BigInteger().with_variant(Integer(), "sqlite")


class Event(Base):
    """The append-only event log: one row per job state change or finished epoch.

    Written in the same transaction as the change it describes (the
    transactional outbox), so a reader never sees an event for a change that
    rolled back and never misses one that committed. ``subject`` names what
    the event is about (``job:<id>``); readers follow one subject by ``id``.
    """

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_subject_id", "subject", "id"),)
    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    subject: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(64))  # job.queued | job.running | … | job.epoch
    payload: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Webhook(Base):
    """A tenant's subscription: POST the events of ``event_types`` to ``url``, signed with ``secret``."""

    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    event_types: Mapped[list] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(100))  # kept in the clear: the server signs with it
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)


class WebhookDelivery(Base):
    """One event owed to one webhook, inserted with the event; its attempts are appended as they happen."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("webhook_id", "event_id"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id"), index=True)
    event_id: Mapped[int] = mapped_column(EventId, ForeignKey("events.id"))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | succeeded | failed
    attempts: Mapped[list] = mapped_column(JSON, default=list)  # [{"at", "status_code", "error", "seconds"}]
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=utcnow, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class ExperimentStatus(str, enum.Enum):
    """Closed set of experiment states: the API creates and cancels, ``advance_experiment`` owns the rest."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (ExperimentStatus.succeeded, ExperimentStatus.failed, ExperimentStatus.cancelled)


class Experiment(Base):
    """A search over job specs on one dataset; its trials are ordinary jobs (``Job.experiment_id``)."""

    __tablename__ = "experiments"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    request: Mapped[dict] = mapped_column(JSON)  # the validated request, defaults filled in
    status: Mapped[ExperimentStatus] = mapped_column(
        Enum(ExperimentStatus, name="experiment_status", native_enum=False, length=16),
        default=ExperimentStatus.queued,
        index=True,
    )
    trials_total: Mapped[int] = mapped_column(Integer)
    warnings: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    advanced_at: Mapped[datetime | None] = mapped_column(default=None)  # stamped by each advance (its lock)


class ExperimentTrial(Base):
    """One Optuna trial of an experiment as rarefit tracks it: params, state, and (via jobs) one job per seed."""

    __tablename__ = "experiment_trials"
    __table_args__ = (UniqueConstraint("experiment_id", "number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiments.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)  # Optuna's trial number in the experiment's study
    params: Mapped[dict] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))  # running | complete | pruned | failed | cancelled
    value: Mapped[float | None] = mapped_column(Float, default=None)  # mean val objective told to Optuna
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
