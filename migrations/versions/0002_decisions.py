"""Decisions: job warnings, model card revisions and operating points, model aliases.

Hand-written to mirror ``service.models`` (the autogenerate comparison test
expects no differences). Portable between SQLite and PostgreSQL.

Revision ID: 0002
Revises: 0003
Create Date: 2026-12-01 22:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("warnings", sa.JSON(), nullable=True))
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("operating_point", sa.JSON(), nullable=True))
    op.create_table(
        "model_revisions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True, nullable=False),
        sa.Column("model_id", sa.String(32), sa.ForeignKey("models.id"), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("operating_point", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("model_id", "revision"),
    )
    op.create_index("ix_model_revisions_model_id", "model_revisions", ["model_id"])
    op.create_table(
        "model_aliases",
        sa.Column("tenant_id", sa.String(32), sa.ForeignKey("tenants.id"), primary_key=True, nullable=False),
        sa.Column("alias", sa.String(64), primary_key=True, nullable=False),
        sa.Column("model_id", sa.String(32), sa.ForeignKey("models.id"), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_index("ix_model_aliases_model_id", "model_aliases", ["model_id"])


def downgrade() -> None:
    op.drop_index("ix_model_aliases_model_id", table_name="model_aliases")
    op.drop_table("model_aliases")
    op.drop_index("ix_model_revisions_model_id", table_name="model_revisions")
    op.drop_table("model_revisions")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("operating_point")
        batch.drop_column("revision")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("warnings")
