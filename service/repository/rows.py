"""Conditional updates: an UPDATE that changed exactly one row is a compare-and-set that won."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Executable
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session


def changed_one_row(session: Session, statement: Executable) -> bool:
    """Execute an UPDATE or DELETE; whether it changed exactly one row."""
    # Session.execute is typed as returning Result; DML executes to a CursorResult, which counts rows.
    return cast(CursorResult, session.execute(statement)).rowcount == 1
