"""One place for configuration: every knob is an environment variable ``RAREFIT_*``.

Nothing else in the code base reads ``os.environ``; components take a
``Settings`` (or values from it) explicitly, and ``get_settings()`` caches the
process-wide instance built from the environment.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAREFIT_", extra="ignore", frozen=True)

    # --- where things live -------------------------------------------------
    data_dir: Path = Path("./rarefit-data")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default: SQLite file in data_dir")
    broker_url: str | None = Field(
        default=None, description="Celery broker URL; default: SQLite file broker in data_dir"
    )
    weights_dir: Path | None = Field(
        default=None, description="operator-provided weights for model.init 'weights:<name>'"
    )
    bootstrap_api_key: SecretStr | None = None
    storage_url: str | None = Field(
        default=None,
        description="blob store: file:///dir or s3://bucket/prefix; default: the blobs folder in data_dir",
    )
    s3_endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint (MinIO, Ceph); default AWS")
    s3_multipart_bytes: int = Field(default=8 * 1024 * 1024, ge=5 * 1024 * 1024, description="multipart part size")
    storage_retry_seconds: float = Field(
        default=30.0, ge=0.0, le=3600.0, description="how long an unreachable object store is retried"
    )
    scratch_dir: Path | None = Field(
        default=None, description="this process's own staging folder; default: the scratch folder in data_dir"
    )
    optuna_storage_url: str | None = Field(
        default=None,
        description="Optuna's RDB storage; default: SQLite file optuna.db in data_dir, or schema 'optuna' "
        "on the PostgreSQL server of database_url (its Alembic history never meets ours)",
    )

    # --- HTTP --------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = 512 * 1024 * 1024
    max_archive_entries: int = 200_000
    max_expanded_bytes: int = 4 * 1024 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    max_predict_instances: int = 256

    # --- job limits (server caps; a spec above them answers 422) -----------
    max_epochs: int = 500
    max_batch_size: int = 4096
    max_image_size: int = 512
    max_job_seconds: int = 24 * 3600
    max_concurrent_jobs_per_tenant: int = 8

    # --- reliability -------------------------------------------------------
    lease_seconds: int = 60
    heartbeat_seconds: float = 10.0
    max_attempts: int = 3
    requeue_after_seconds: int = 300
    reaper_interval_seconds: float = 15.0
    idempotency_ttl_hours: int = 48
    checkpoint_seconds: float = Field(
        default=10.0,
        ge=0.0,
        le=3600.0,
        description="at most one checkpoint write per this many seconds (0: after every epoch)",
    )
    auth_cache_seconds: float = Field(
        default=5.0,
        ge=0.0,
        le=300.0,
        description="how long an authenticated key (and a model predict looked up) skips the database; "
        "a revocation takes effect within it",
    )
    api_read_threads: int = Field(
        default=2,
        ge=1,
        le=64,
        description="threads per API process for the hot database reads (authentication, job polls)",
    )

    # --- live progress and webhooks ----------------------------------------
    events_poll_seconds: float = Field(
        default=0.5, gt=0.0, le=60.0, description="how often an event stream looks for new events"
    )
    events_ping_seconds: float = Field(
        default=15.0, gt=0.0, le=300.0, description="heartbeat comment on an idle event stream"
    )

    webhooks_allow_private: bool = Field(
        default=False, description="let webhooks target loopback, private and link-local addresses"
    )
    webhook_timeout_seconds: float = Field(default=10.0, gt=0.0, le=120.0, description="one delivery attempt")
    webhook_max_attempts: int = Field(default=10, ge=1, le=100)
    webhook_backoff_seconds: float = Field(default=5.0, gt=0.0, le=3600.0, description="wait before the 2nd attempt")
    webhook_backoff_max_seconds: float = Field(default=3600.0, gt=0.0, le=86400.0, description="longest wait")
    webhook_retry_seconds: float = Field(
        default=24 * 3600.0, gt=0.0, le=7 * 86400.0, description="after this long a delivery is given up"
    )
    webhook_dispatch_seconds: float = Field(default=1.0, gt=0.0, le=60.0, description="how often due ones are sent")

    # --- inference ---------------------------------------------------------
    model_cache_bytes: int = 512 * 1024 * 1024
    predict_max_batch: int = 64
    predict_max_wait_ms: float = 2.0
    predict_threads: int = 2
    inference_runtime: Literal["onnxruntime", "torch"] = Field(
        default="onnxruntime",
        description="'onnxruntime' serves a model's model.onnx when its card names one (else PyTorch); "
        "'torch' always runs the torch.export program",
    )

    # --- observability -----------------------------------------------------
    log_format: Literal["text", "json"] = Field(default="text", description="'text' or 'json' (one object per line)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    metrics_token: SecretStr | None = Field(
        default=None, description="operator token for GET /metrics (Bearer); unset: /metrics answers 404"
    )
    celery_task_events: bool = Field(default=False, description="workers send Celery task events (for Flower)")

    # --- worker ------------------------------------------------------------
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'")
    jobs_per_gpu: int = Field(
        default=1,
        ge=1,
        le=32,
        description="jobs a training worker runs at once per device slot (--concurrency); each is its own "
        "process with its own lease, so small jobs share a GPU; the cores are split between them",
    )

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _case_insensitive(cls, value: object, info) -> object:
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "log_level" else value.lower()

    @model_validator(mode="after")
    def _absolute_data_dir(self) -> Settings:
        object.__setattr__(self, "data_dir", self.data_dir.expanduser().resolve())
        if self.storage_url is not None:
            from service.storage import parse_storage_url  # raises ValueError naming the problem

            parse_storage_url(self.storage_url)
        return self

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'rarefit.db'}"

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.db'}"

    @property
    def optuna_url(self) -> str:
        if self.optuna_storage_url:
            return self.optuna_storage_url
        if self.sqlalchemy_url.startswith("sqlite"):
            return f"sqlite:///{self.data_dir / 'optuna.db'}"
        return self.sqlalchemy_url

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def scratch_path(self) -> Path:
        """Where this process stages files (uploads, exports, checkpoints); never shared with another host."""
        return (self.scratch_dir or self.data_dir / "scratch").expanduser().resolve()

    @property
    def operator_weights_dir(self) -> Path:
        return self.weights_dir or self.data_dir / "weights"

    @property
    def is_embedded(self) -> bool:
        """True when the broker is the SQLite file (one machine, no Redis)."""
        return self.celery_broker_url.startswith("sqla+")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
