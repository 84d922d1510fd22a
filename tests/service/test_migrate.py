"""The hand-written migration creates exactly the ORM's schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from service.db import make_engine
from service.migrate import current_revision, head_revision, schema_is_current, upgrade_head
from service.models import Base


def _diff(engine) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def test_upgrade_creates_every_table_in_a_new_directory_and_is_idempotent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the packaged scripts are found from any working directory
    url = f"sqlite:///{tmp_path / 'does' / 'not' / 'exist' / 'rarefit.db'}"
    upgrade_head(url)
    upgrade_head(url)
    engine = make_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}
        assert current_revision(engine) == head_revision() == "0005"
        assert schema_is_current(engine)
        assert _diff(engine) == []
    finally:
        engine.dispose()


def test_unmigrated_database_has_no_revision(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        assert current_revision(engine) is None
        assert not schema_is_current(engine)
    finally:
        engine.dispose()


def test_migration_matches_metadata_on_postgresql(new_postgres_url):
    url = new_postgres_url()
    upgrade_head(url)
    engine = make_engine(url)
    try:
        assert _diff(engine) == []
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_empty_url_is_rejected():
    with pytest.raises(ValueError, match="database_url"):
        upgrade_head("")
