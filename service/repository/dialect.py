"""``INSERT … ON CONFLICT`` for the two databases we run on (PostgreSQL and SQLite)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def _dialect_insert(session: Session, model: type, row: dict[str, Any]):
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(model).values(**row)
    if name == "sqlite":
        return sqlite.insert(model).values(**row)
    raise ValueError(f"unsupported database dialect {name!r}; use PostgreSQL or SQLite")


def upsert(session: Session, model: type, row: dict[str, Any], *, keys: tuple[str, ...]) -> None:
    """Insert ``row``, or update its non-key columns where a row with the same ``keys`` exists."""
    statement = _dialect_insert(session, model, row)
    changes = {name: value for name, value in row.items() if name not in keys}
    session.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=changes))


def insert_ignore(session: Session, model: type, row: dict[str, Any], *, keys: tuple[str, ...]) -> None:
    """Insert ``row`` unless a row with the same ``keys`` exists (then change nothing)."""
    session.execute(_dialect_insert(session, model, row).on_conflict_do_nothing(index_elements=list(keys)))
