"""Initial schema: tenants, API keys, datasets, jobs, epoch metrics, artefacts, models.

Hand-written to mirror ``service.models`` exactly (a test compares it with the
ORM metadata through alembic's autogenerate and expects no differences).
Portable between SQLite and PostgreSQL: no dialect-specific types.

Revision ID: 0001_initial
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def _id(name: str = "id") -> sa.Column:
    return sa.Column(name, sa.String(32), primary_key=True, nullable=False)


def _created() -> sa.Column:
    return sa.Column("created_at", TZ, nullable=False)


def _tenant_fk() -> sa.Column:
    return sa.Column("tenant_id", sa.String(32), sa.ForeignKey("tenants.id"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "tenants",
        _id(),
        sa.Column("name", sa.String(200), nullable=False),
        _created(),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "api_keys",
        _id(),
        _tenant_fk(),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        _created(),
        sa.Column("revoked_at", TZ, nullable=True),
        sa.UniqueConstraint("key_hash"),
    )
    op.create_index("ix_api_keys_tenant_id", "api_keys", ["tenant_id"])
    _create_datasets()
    _create_jobs()
    _create_job_children()
    _create_models()


def _create_datasets() -> None:
    op.create_table(
        "datasets",
        _id(),
        _tenant_fk(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("num_classes", sa.Integer(), nullable=False),
        sa.Column("class_names", sa.JSON(), nullable=False),
        sa.Column("image_shape", sa.JSON(), nullable=False),
        sa.Column("splits", sa.JSON(), nullable=False),
        sa.Column("imbalance_ratio", sa.Float(), nullable=False),
        sa.Column("blob_prefix", sa.String(200), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        _created(),
    )
    op.create_index("ix_datasets_tenant_id", "datasets", ["tenant_id"])


def _create_jobs() -> None:
    op.create_table(
        "jobs",
        _id(),
        _tenant_fk(),
        sa.Column("dataset_id", sa.String(32), sa.ForeignKey("datasets.id"), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),  # JobStatus, non-native enum
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("progress_epoch", sa.Integer(), nullable=False),
        _created(),
        sa.Column("started_at", TZ, nullable=True),
        sa.Column("finished_at", TZ, nullable=True),
        sa.Column("error_type", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("model_id", sa.String(32), nullable=True),
        sa.Column("best_epoch", sa.Integer(), nullable=True),
        sa.Column("test_metrics", sa.JSON(), nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", TZ, nullable=True),
        sa.Column("enqueued_at", TZ, nullable=True),
        sa.Column("checkpoint_key", sa.String(300), nullable=True),
        sa.Column("checkpoint_sha256", sa.String(64), nullable=True),
        sa.Column("checkpoint_epoch", sa.Integer(), nullable=False),
        sa.UniqueConstraint("tenant_id", "idempotency_key"),
    )
    for column in ("tenant_id", "dataset_id", "status", "lease_expires_at"):
        op.create_index(f"ix_jobs_{column}", "jobs", [column])


def _create_job_children() -> None:
    op.create_table(
        "epoch_metrics",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("train_loss", sa.Float(), nullable=False),
        sa.Column("val_loss", sa.Float(), nullable=True),
        sa.Column("lr", sa.Float(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("val", sa.JSON(), nullable=True),
        _created(),
        sa.UniqueConstraint("job_id", "epoch"),
    )
    op.create_index("ix_epoch_metrics_job_id", "epoch_metrics", ["job_id"])
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("blob_key", sa.String(300), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        _created(),
        sa.UniqueConstraint("job_id", "name"),
    )
    op.create_index("ix_artifacts_job_id", "artifacts", ["job_id"])


def _create_models() -> None:
    op.create_table(
        "models",
        _id(),
        _tenant_fk(),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("arch", sa.String(64), nullable=False),
        sa.Column("class_names", sa.JSON(), nullable=False),
        sa.Column("input_shape", sa.JSON(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("positive_class", sa.Integer(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("blob_prefix", sa.String(200), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        _created(),
        sa.UniqueConstraint("job_id"),
    )
    op.create_index("ix_models_tenant_id", "models", ["tenant_id"])


def downgrade() -> None:
    op.drop_index("ix_models_tenant_id", table_name="models")
    op.drop_table("models")
    op.drop_index("ix_artifacts_job_id", table_name="artifacts")
    op.drop_table("artifacts")
    op.drop_index("ix_epoch_metrics_job_id", table_name="epoch_metrics")
    op.drop_table("epoch_metrics")
    for column in ("tenant_id", "dataset_id", "status", "lease_expires_at"):
        op.drop_index(f"ix_jobs_{column}", table_name="jobs")
    op.drop_table("jobs")
    op.drop_index("ix_datasets_tenant_id", table_name="datasets")
    op.drop_table("datasets")
    op.drop_index("ix_api_keys_tenant_id", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("tenants")
