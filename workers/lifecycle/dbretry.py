"""Bounded retries for database writes a worker must not lose to a brief outage.

The database may blip (a restart, a failover, a dropped connection); a
training job should ride that out rather than fail. Connection-level errors
are retried with exponential backoff for about ``budget_seconds`` (normally
the lease length: after that the reaper may hand the job to another worker
anyway); then ``InfrastructureError`` is raised and the job is left running
for the reaper to recover. Other database errors are bugs, not blips, and
propagate at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

logger = logging.getLogger(__name__)

T = TypeVar("T")
FIRST_DELAY_SECONDS = 0.2
MAX_DELAY_SECONDS = 5.0


class InfrastructureError(RuntimeError):
    """The database (or broker) stayed unreachable: leave the job for the reaper, do not fail it."""


def is_connection_error(exc: BaseException) -> bool:
    """True for errors that mean "the database is unreachable", not "the statement is wrong"."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def retry_db(action: Callable[[], T], *, budget_seconds: float, what: str, sleep=time.sleep) -> T:
    """``action()``, retried on connection errors for about ``budget_seconds``."""
    deadline = time.monotonic() + max(0.0, budget_seconds)
    delay = FIRST_DELAY_SECONDS
    while True:
        try:
            return action()
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise InfrastructureError(f"database unreachable while trying to {what}") from exc
            logger.warning("database error while trying to %s, retrying in %.1f s: %s", what, delay, exc)
            sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_DELAY_SECONDS)
