"""The Celery task shim: outcomes pass through, and an error ``run_job`` does not handle never escapes."""

from __future__ import annotations

import logging

import pytest

from service.migrate import upgrade_head
from workers.tasks import train_job


@pytest.fixture
def task_settings(monkeypatch, sqlite_settings):
    """Point the task's app at a test configuration (the worker app's settings attribute, as make_worker_app sets)."""

    def use(**overrides):
        settings = sqlite_settings(**overrides)
        monkeypatch.setattr(train_job.app, "rarefit_settings", settings)
        return settings

    return use


def test_the_outcome_of_run_job_is_the_task_result(task_settings):
    settings = task_settings()
    upgrade_head(settings.sqlalchemy_url)
    # A job id no row has: nothing to claim, as for a duplicate delivery.
    assert train_job.apply(args=["0" * 32]).get() == "skipped"


def test_an_error_run_job_does_not_handle_is_logged_and_abandons_the_job(task_settings, caplog):
    # A database URL naming a driver that is not installed fails before any job code runs.
    task_settings(database_url="postgresql+nosuchdriver://nowhere/rarefit")
    with caplog.at_level(logging.ERROR, logger="workers.tasks"):
        result = train_job.apply(args=["1" * 32])
    assert result.successful() and result.get() == "abandoned"
    [record] = [r for r in caplog.records if r.name == "workers.tasks"]
    assert record.getMessage() == f"job {'1' * 32}: unexpected error in the worker"
    assert record.exc_info is not None and "nosuchdriver" in str(record.exc_info[1])
