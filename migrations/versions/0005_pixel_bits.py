"""Datasets say their pixel depth: ``datasets.pixel_bits`` (8 or 16).

Hand-written to mirror ``service.models`` (the migration test compares them).
Every dataset stored before 16-bit images were kept is 8-bit.

Revision ID: 0005
Revises: 0002
Create Date: 2026-12-02 01:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("pixel_bits", sa.Integer(), nullable=False, server_default="8"))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("pixel_bits")
