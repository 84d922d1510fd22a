"""A real Celery worker process against real PostgreSQL + Redis (and once the embedded SQLite broker).

Exactly-once under duplicate delivery, and crash recovery: SIGKILL the worker
mid-training, the reaper re-queues the expired lease, a new worker resumes
from the checkpoint and records every epoch exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from job_rows import add_stored_dataset
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from launch.supervisor import worker_command, worker_environment
from service.config import Settings
from service.db import aware, make_engine, make_session_factory, transaction
from service.ingest import DecodedDataset
from service.migrate import upgrade_head
from service.models import Artifact, EpochMetrics, Job, JobStatus, Model, Tenant, utcnow
from service.queue import enqueue_job, make_celery
from service.reaper import reap_once
from service.spec import JobSpec
from service.storage import LocalBlobStore

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC = {
    "model": {"arch": "simple_cnn"},
    "batch_size": 32,
    "augment": {"rotation": 0, "scale": None},
    "optim": {"lr": 0.01},
}


def synthetic(counts, *, side, seed):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c, dtype=np.int64) for c, n in enumerate(counts)])
    images = rng.integers(0, 120, size=(len(labels), side, side, 1)) + 100 * labels[:, None, None, None]
    return images.astype(np.uint8), labels


class World:
    """Settings, database and blob store shared by the test and the worker processes it starts."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        upgrade_head(settings.sqlalchemy_url)
        self.engine = make_engine(settings.sqlalchemy_url)
        self.factory = make_session_factory(self.engine)
        self.store = LocalBlobStore(settings.blob_dir)
        self.celery = make_celery(settings)
        self.log_dir = log_dir
        self.workers: list[tuple[subprocess.Popen, Path]] = []
        with transaction(self.factory) as session:
            tenant = Tenant(name=f"acme-{time.monotonic_ns()}")
            session.add(tenant)
            session.flush()
            self.tenant_id = tenant.id

    def dataset(self, *, train=(96, 32), side=8) -> str:
        decoded = DecodedDataset(
            format="npz",
            class_names=["normal", "rare"],
            image_shape=(side, side, 1),
            splits={
                "train": synthetic(train, side=side, seed=0),
                "val": synthetic((16, 8), side=side, seed=1),
                "test": synthetic((16, 8), side=side, seed=2),
            },
        )
        with transaction(self.factory) as session:
            row = add_stored_dataset(
                session,
                decoded,
                tenant_id=self.tenant_id,
                name="synthetic",
                imbalance_ratio=train[0] / train[1],
                store=self.store,
                scratch=self.settings.scratch_path,
            )
            return row.id

    def job(self, dataset_id: str, **overrides) -> str:
        spec = JobSpec.model_validate({"dataset_id": dataset_id, **SPEC, **overrides})
        with transaction(self.factory) as session:
            job = Job(
                tenant_id=self.tenant_id,
                dataset_id=dataset_id,
                spec=spec.model_dump(mode="json"),
                epochs=spec.epochs,
                enqueued_at=utcnow(),
            )
            session.add(job)
            session.flush()
            return job.id

    def start_worker(self) -> subprocess.Popen:
        log = self.log_dir / f"worker-{len(self.workers)}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                worker_command(concurrency=1),
                cwd=REPO_ROOT,
                env=worker_environment(self.settings),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.workers.append((process, log))
        return process

    def wait_ready(self, process: subprocess.Popen, timeout: float = 45) -> None:
        log = next(path for proc, path in self.workers if proc is process)
        wait_for(lambda: "ready." in log.read_text(errors="replace"), timeout, f"worker ready ({log})")

    def logs(self) -> str:
        return "\n".join(path.read_text(errors="replace") for _, path in self.workers)

    def row(self, job_id: str) -> Job:
        with self.factory() as session:
            return session.get(Job, job_id)

    def epochs(self, job_id: str) -> list[int]:
        with self.factory() as session:
            query = select(EpochMetrics.epoch).where(EpochMetrics.job_id == job_id).order_by(EpochMetrics.epoch)
            return list(session.scalars(query))

    def wait_status(self, job_id: str, status: JobStatus, timeout: float = 60) -> Job:
        wait_for(lambda: self.row(job_id).status == status, timeout, f"job {job_id} {status.value}", self)
        return self.row(job_id)

    def close(self) -> None:
        for process, _ in self.workers:
            stop(process)
        self.celery.close()
        self.engine.dispose()


def wait_for(condition: Callable[[], bool], timeout: float, what: str, world: World | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    logs = world.logs()[-4000:] if world else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def module_postgres_url(new_postgres_url) -> str:
    return new_postgres_url()


@pytest.fixture
def world(module_postgres_url, redis_url, tmp_path) -> Iterator[World]:
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        database_url=module_postgres_url,
        broker_url=redis_url,
        device="cpu",
        lease_seconds=3,
        heartbeat_seconds=0.5,
        requeue_after_seconds=300,
    )
    settings.data_dir.mkdir()
    # The broker database is the session's: drop messages an earlier test left for its own jobs,
    # which a worker here would otherwise receive and log as not claimable.
    redis.Redis.from_url(redis_url).flushdb()
    world = World(settings, tmp_path)
    yield world
    world.close()


def test_worker_trains_a_job_and_a_duplicate_delivery_trains_nothing(world):
    job_id = world.job(world.dataset(), epochs=2)
    enqueue_job(world.celery, job_id)
    enqueue_job(world.celery, job_id)  # the same message twice: at-least-once delivery
    world.start_worker()
    world.start_worker()  # two workers: the copies can be delivered at the same time
    job = world.wait_status(job_id, JobStatus.succeeded)
    wait_for(lambda: f"job {job_id}: not claimable" in world.logs(), 30, "the duplicate delivery to be skipped", world)
    # Each worker took one copy (no prefetching while busy): one trained, the other skipped.
    logs = [path.read_text() for _, path in world.workers]
    assert sorted(f"job {job_id}: claimed by" in log for log in logs) == [False, True]
    assert sorted(f"job {job_id}: not claimable" in log for log in logs) == [False, True]
    assert (job.attempts, job.progress_epoch, job.error_type) == (1, 2, None)
    assert world.epochs(job_id) == [1, 2]
    with world.factory() as session:
        assert session.scalar(select(func.count()).select_from(Model).where(Model.job_id == job_id)) == 1
        names = session.scalars(select(Artifact.name).where(Artifact.job_id == job_id)).all()
    expected = ["metrics.json", "model.onnx", "model.pt2", "model_card.json", "scores.npz", "weights.safetensors"]
    assert sorted(names) == expected


def test_sigkilled_worker_job_is_reaped_and_resumed_from_its_checkpoint(world):
    # 800 training images: an epoch is long enough (~0.2 s on a free core) to kill the worker mid-job.
    job_id = world.job(world.dataset(train=(600, 200)), epochs=6)
    workers = [world.start_worker() for _ in range(2)]  # one takes the job and dies, the other resumes it
    for worker in workers:
        world.wait_ready(worker)
    enqueue_job(world.celery, job_id)
    wait_for(lambda: world.row(job_id).checkpoint_epoch >= 1, 60, "the first checkpoint", world)
    child_pid = int(world.row(job_id).worker_id.rsplit(":", 1)[1])
    os.killpg(os.getpgid(child_pid), signal.SIGKILL)  # that worker's parent and training child, no goodbye
    killed_at = world.row(job_id)
    assert killed_at.status == JobStatus.running and killed_at.progress_epoch < 6

    def reaped() -> bool:
        return job_id in reap_once(world.settings, session_factory=world.factory, celery_app=world.celery).requeued

    wait_for(reaped, 30, "the reaper to re-queue the expired lease", world)
    job = world.wait_status(job_id, JobStatus.succeeded, timeout=90)
    assert job.attempts == 2 and world.epochs(job_id) == [1, 2, 3, 4, 5, 6]
    assert f"resuming after epoch {killed_at.checkpoint_epoch}" in world.logs()
    with world.factory() as session:
        key = session.scalar(
            select(Artifact.blob_key).where(Artifact.job_id == job_id, Artifact.name == "metrics.json")
        )
    history = json.loads(world.store.local_path(key).read_text())["history"]
    assert [record["epoch"] for record in history] == [1, 2, 3, 4, 5, 6]


def test_sigterm_to_the_worker_hands_the_job_back_and_another_worker_finishes_it(world):
    job_id = world.job(world.dataset(train=(600, 200)), epochs=6)
    first = world.start_worker()
    world.wait_ready(first)
    enqueue_job(world.celery, job_id)
    wait_for(lambda: world.row(job_id).checkpoint_epoch >= 1, 60, "the first checkpoint", world)
    first.send_signal(signal.SIGTERM)  # the parent only, as `docker stop` does: it must tell the child
    first.wait(timeout=60)
    released = world.row(job_id)
    assert (released.status, released.attempts, released.worker_id) == (JobStatus.queued, 0, None)
    assert "handed back to the queue" in world.logs()
    world.start_worker()  # the re-sent message is waiting in Redis
    job = world.wait_status(job_id, JobStatus.succeeded, timeout=90)
    assert job.attempts == 1 and world.epochs(job_id) == [1, 2, 3, 4, 5, 6]
    assert f"resuming after epoch {released.checkpoint_epoch}" in world.logs()


@pytest.mark.chaos
def test_job_survives_its_database_connections_being_killed(world, module_postgres_url):
    import psycopg

    job_id = world.job(world.dataset(train=(600, 200)), epochs=6)
    world.wait_ready(world.start_worker())
    enqueue_job(world.celery, job_id)
    killer = psycopg.connect(module_postgres_url.replace("+psycopg", ""), autocommit=True)
    terminated = 0
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not _succeeded(world, job_id):
            rows = killer.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
            terminated += len(rows)
            time.sleep(0.2)
    finally:
        killer.close()
    job = world.wait_status(job_id, JobStatus.succeeded, timeout=5)
    assert terminated > 0 and job.attempts == 1 and world.epochs(job_id) == [1, 2, 3, 4, 5, 6]


def _succeeded(world: World, job_id: str) -> bool:
    try:
        return world.row(job_id).status == JobStatus.succeeded
    except OperationalError:  # our own connection was just terminated too
        return False


def test_embedded_sqlite_broker_starts_a_job_within_two_seconds(tmp_path):
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        database_url=None,
        broker_url=None,
        device="cpu",
        lease_seconds=10,
        heartbeat_seconds=1,
    )
    settings.data_dir.mkdir()
    world = World(settings, tmp_path)
    try:
        assert settings.is_embedded
        job_id = world.job(world.dataset(), epochs=2)
        world.wait_ready(world.start_worker())
        sent = utcnow()
        enqueue_job(world.celery, job_id)
        job = world.wait_status(job_id, JobStatus.succeeded)
        assert (aware(job.started_at) - sent).total_seconds() < 2.0
        assert world.epochs(job_id) == [1, 2] and job.model_id is not None
    finally:
        world.close()
