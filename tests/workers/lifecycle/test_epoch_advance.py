"""Epoch-end advance requests on the real embedded broker: only an ASHA experiment's jobs send them, throttled,
and an unreachable broker never stops training."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import pytest
import torch
from job_rows import add_dataset, add_tenant
from torch import nn

from service.db import make_engine, make_session_factory, transaction
from service.migrate import upgrade_head
from service.models import Experiment, Job, utcnow
from service.queue import ADVANCE_TASK, CONTROL_QUEUE, make_celery, queue_depths
from service.repository import leases
from service.storage import make_blob_store
from workers.lifecycle import pruning
from workers.lifecycle.heartbeat import Heartbeat
from workers.lifecycle.progress import Progress
from workers.lifecycle.pruning import EpochAdvance
from workers.lifecycle.run import JobRun
from workers.training.optim import LrSchedule
from workers.training.state import EpochRecord, TrainingState


@pytest.fixture
def setup(sqlite_settings, tmp_path):
    """Settings, a session factory, and one claimed job each of an ASHA experiment, of a non-pruning
    experiment and standalone, by name (with the experiment's id)."""
    settings = sqlite_settings()
    upgrade_head(settings.sqlalchemy_url)
    engine = make_engine(settings.sqlalchemy_url)
    factory = make_session_factory(engine)
    jobs = {}
    with transaction(factory) as session:
        tenant = add_tenant(session, name="t")
        dataset = add_dataset(session, tenant_id=tenant.id)
        for name in ("asha", "none", "standalone"):
            experiment_id = None
            if name != "standalone":
                experiment = Experiment(
                    tenant_id=tenant.id,
                    dataset_id=dataset.id,
                    name=name,
                    request={"request": {"pruning": name}},
                    trials_total=1,
                )
                session.add(experiment)
                session.flush()
                experiment_id = experiment.id
            job = Job(tenant_id=tenant.id, dataset_id=dataset.id, spec={}, epochs=3, experiment_id=experiment_id)
            session.add(job)
            session.flush()
            jobs[name] = job.id
    claimed = {}
    for name, job_id in jobs.items():
        with transaction(factory) as session:
            claimed[name] = leases.claim_job(session, job_id=job_id, worker_id="w", lease_seconds=60, now=utcnow())
    yield settings, factory, claimed
    engine.dispose()


def _sent(app) -> list[tuple[str, list]]:
    """Drain the control queue: each message's task name and args."""
    sent = []
    with app.connection_for_read() as connection, connection.SimpleQueue(CONTROL_QUEUE) as queue:
        for _ in range(queue_depths(app)[CONTROL_QUEUE]):
            message = queue.get(timeout=2)
            assert message.headers["expires"] is not None  # stale requests are dropped, not piled up
            sent.append((message.headers["task"], message.payload[0]))
            message.ack()
    return sent


def _state() -> TrainingState:
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = LrSchedule(
        "plateau", optimizer, epochs=2, steps_per_epoch=1, warmup_epochs=0, milestones=(), step_gamma=0.1
    )
    return TrainingState(model=model, optimizer=optimizer, scheduler=schedule)


def test_only_a_job_of_an_asha_experiment_asks_it_to_advance_at_epoch_end_at_most_once_per_interval(setup, tmp_path):
    settings, factory, claimed = setup
    app = make_celery(settings)
    for name, job in claimed.items():
        run = JobRun(
            job=job,
            settings=settings,
            worker_id="w",
            session_factory=factory,
            store=make_blob_store(settings),
            celery_app=app,
        )
        run.staging = tmp_path / name
        heartbeat = Heartbeat(
            session_factory=factory, job_id=job.id, worker_id="w", lease_seconds=60, interval_seconds=10
        )
        deadline = utcnow() + timedelta(hours=1)
        progress = Progress(
            run, heartbeat=heartbeat, shutdown=threading.Event(), deadline=deadline, advance=run.epoch_advance()
        )
        state = _state()
        for epoch in (1, 2):  # two epochs well within the interval
            state.epoch = epoch
            progress.on_epoch_end(EpochRecord(epoch, 0.5, 0.5, {"accuracy": 0.5}, 0.1, 0.01, 100.0), state)
        progress.checkpoints.close(write_pending=False)
        assert not heartbeat.lease_lost.is_set()
    assert _sent(app) == [(ADVANCE_TASK, [claimed["asha"].experiment_id])]


def test_the_next_request_goes_out_once_the_interval_has_passed(setup):
    settings, _, claimed = setup
    app = make_celery(settings)
    now = [100.0]
    advance = EpochAdvance(
        experiment_id=claimed["asha"].experiment_id, celery_app=app, interval_seconds=2.0, clock=lambda: now[0]
    )
    sent = []
    for moment in (100.0, 101.9, 102.0, 103.0, 104.5):
        now[0] = moment
        sent.append(advance.epoch_ended())
    assert sent == [True, False, True, False, True]
    assert _sent(app) == [(ADVANCE_TASK, [claimed["asha"].experiment_id])] * 3


def test_an_unreachable_broker_logs_a_warning_and_pauses_instead_of_raising(sqlite_settings, caplog):
    app = make_celery(sqlite_settings(broker_url="redis://127.0.0.1:1/0"))  # nothing listens on port 1
    now = [0.0]
    advance = EpochAdvance(experiment_id="e" * 32, celery_app=app, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="workers.lifecycle.pruning"):
        assert advance.epoch_ended() is False
        now[0] = pruning.INTERVAL_SECONDS + 0.1  # past the interval, within the pause: no second try
        assert advance.epoch_ended() is False
    [record] = [r for r in caplog.records if r.name == "workers.lifecycle.pruning"]
    assert record.getMessage() == f"experiment {'e' * 32}: could not ask it to advance after an epoch"
