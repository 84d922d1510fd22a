"""Alembic environment: the schema is ``service.models.Base.metadata``.

The URL comes from ``config.attributes["database_url"]`` (set by
``service.migrate``), else ``sqlalchemy.url`` in the config, else the
settings' default, so the same file serves ``rarefit migrate`` and a hand-run
``alembic upgrade head``.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from service.db import make_engine
from service.models import Base

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from service.config import get_settings

    return get_settings().sqlalchemy_url


def _configure(*, url: str, **kwargs) -> None:
    if "connection" not in kwargs:
        kwargs["url"] = url  # offline mode renders SQL for this dialect
    context.configure(
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=url.startswith("sqlite"),
        compare_type=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    url = _database_url()
    _configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(url=str(connection.engine.url), connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = _database_url()
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            _configure(url=url, connection=connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
