"""Database migrations through alembic's API, configured in code.

The configuration points at the ``migrations`` package directory, so
``upgrade_head`` works from an installed wheel and from any working directory;
no ``alembic.ini`` is read.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

import migrations

logger = logging.getLogger(__name__)


def alembic_config(database_url: str) -> Config:
    """An alembic ``Config`` for ``database_url`` with the packaged migration scripts."""
    if not database_url:
        raise ValueError("database_url must be a non-empty SQLAlchemy URL")
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).resolve().parent))
    # configparser interpolates '%', which URL-encoded passwords contain.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = False
    return config


def upgrade_head(database_url: str) -> None:
    """Bring the database at ``database_url`` to the newest schema (idempotent)."""
    config = alembic_config(database_url)
    _ensure_sqlite_parent(database_url)
    logger.info("migrating database to head")
    command.upgrade(config, "head")


def head_revision() -> str:
    """The newest revision among the packaged migration scripts."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = script.get_current_head()
    if head is None:
        raise RuntimeError("no migration scripts found in the migrations package")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def schema_is_current(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()


def _ensure_sqlite_parent(database_url: str) -> None:
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return
    if url.database.startswith("file:"):
        return  # URI filenames: the caller manages the location
    Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
