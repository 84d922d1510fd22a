"""Experiments: the experiment and trial tables, a job's experiment and trial, dataset diagnostics.

Hand-written to mirror ``service.models`` (the autogenerate comparison test
expects no differences). Optuna's own tables are not here: they live in a
schema (PostgreSQL) or SQLite file of their own, migrated by Optuna's Alembic
history, so the two histories never share a version table.

Revision ID: 0003
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.String(32), primary_key=True, nullable=False),
        sa.Column("tenant_id", sa.String(32), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("dataset_id", sa.String(32), sa.ForeignKey("datasets.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),  # ExperimentStatus, non-native enum
        sa.Column("trials_total", sa.Integer(), nullable=False),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("started_at", TZ, nullable=True),
        sa.Column("finished_at", TZ, nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("advanced_at", TZ, nullable=True),
    )
    for column in ("tenant_id", "dataset_id", "status"):
        op.create_index(f"ix_experiments_{column}", "experiments", [column])
    op.create_table(
        "experiment_trials",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True, nullable=False),
        sa.Column("experiment_id", sa.String(32), sa.ForeignKey("experiments.id"), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("finished_at", TZ, nullable=True),
        sa.UniqueConstraint("experiment_id", "number"),
    )
    op.create_index("ix_experiment_trials_experiment_id", "experiment_trials", ["experiment_id"])
    op.add_column("jobs", sa.Column("experiment_id", sa.String(32), nullable=True))
    op.add_column("jobs", sa.Column("trial", sa.Integer(), nullable=True))
    op.create_index("ix_jobs_experiment_id", "jobs", ["experiment_id"])
    op.add_column("datasets", sa.Column("diagnostics", sa.JSON(), nullable=True))
    op.add_column("datasets", sa.Column("advice", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("advice")
        batch.drop_column("diagnostics")
    op.drop_index("ix_jobs_experiment_id", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("trial")
        batch.drop_column("experiment_id")
    op.drop_index("ix_experiment_trials_experiment_id", table_name="experiment_trials")
    op.drop_table("experiment_trials")
    for column in ("tenant_id", "dataset_id", "status"):
        op.drop_index(f"ix_experiments_{column}", table_name="experiments")
    op.drop_table("experiments")
