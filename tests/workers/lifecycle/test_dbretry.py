"""``retry_db``: connection errors are retried with backoff within the budget, anything else propagates."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from workers.lifecycle.dbretry import (
    FIRST_DELAY_SECONDS,
    MAX_DELAY_SECONDS,
    InfrastructureError,
    is_connection_error,
    retry_db,
)


def _unreachable_database_error(tmp_path) -> OperationalError:
    """A real connection error: SQLite cannot open a file in a folder that does not exist."""
    engine = create_engine(f"sqlite:///{tmp_path / 'missing' / 'rarefit.db'}")
    try:
        with pytest.raises(OperationalError) as caught:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
    finally:
        engine.dispose()
    return caught.value


def test_connection_errors_are_the_retryable_ones(tmp_path):
    assert is_connection_error(_unreachable_database_error(tmp_path))
    invalidated = DBAPIError("SELECT 1", {}, Exception("server closed the connection"), connection_invalidated=True)
    assert is_connection_error(invalidated)
    assert not is_connection_error(DBAPIError("SELECT 1", {}, Exception("syntax error")))
    assert not is_connection_error(IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed")))
    assert not is_connection_error(ValueError("not a database error"))


def test_a_blip_is_retried_with_doubling_delays_until_it_passes(tmp_path):
    error = _unreachable_database_error(tmp_path)
    failures, slept = iter([error] * 6), []

    def action() -> str:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return "written"

    assert retry_db(action, budget_seconds=3600, what="write", sleep=slept.append) == "written"
    expected = [min(FIRST_DELAY_SECONDS * 2**n, MAX_DELAY_SECONDS) for n in range(6)]
    assert slept == pytest.approx(expected) and max(slept) == MAX_DELAY_SECONDS


def test_an_error_that_is_not_about_the_connection_propagates_at_once():
    slept = []

    def action() -> None:
        raise IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed"))

    with pytest.raises(IntegrityError):
        retry_db(action, budget_seconds=3600, what="insert", sleep=slept.append)
    assert slept == []


def test_an_outage_longer_than_the_budget_becomes_an_infrastructure_error(tmp_path):
    error, calls = _unreachable_database_error(tmp_path), []

    def action() -> None:
        calls.append(1)
        raise error

    with pytest.raises(InfrastructureError, match="database unreachable while trying to record epoch 3") as caught:
        retry_db(action, budget_seconds=0, what="record epoch 3", sleep=lambda seconds: None)
    assert caught.value.__cause__ is error and len(calls) == 1
