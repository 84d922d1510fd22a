"""A real rarefit API (uvicorn in a thread, SQLite) for the client and CLI tests, a stand-in worker, and the real
experiment steps with it.

The client and CLI tests import these fixtures by name (tests/ is on sys.path); a conftest.py of their own
would clash with tests/service/conftest.py, which tests import as ``conftest``.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from sqlalchemy import select

from service.config import Settings
from service.db import transaction
from service.experiments.advance import advance_experiment
from service.migrate import upgrade_head
from service.models import ExperimentStatus, Job, JobStatus, utcnow
from service.repository import leases

KEY = "rf_client-test-key-0123456789abcdef"


@dataclass
class LiveServer:
    url: str
    app: object

    def play_worker(self, job_id: str, *, epochs: int, status: JobStatus = JobStatus.succeeded, pause: float = 0.2):
        """In a thread: claim ``job_id``, record ``epochs`` epochs ``pause`` apart, finish with ``status``."""
        thread = threading.Thread(target=self._work, args=(job_id, epochs, status, pause), daemon=True)
        thread.start()
        return thread

    def play_experiment(self, experiment_id: str, *, epochs: int, status: JobStatus = JobStatus.succeeded):
        """In a thread: the control worker's real steps (``advance_experiment``), each trial's jobs trained by the
        stand-in worker and ending with ``status`` (val ``balanced_accuracy`` 0.6 + 0.1 x trial)."""
        thread = threading.Thread(target=self._control, args=(experiment_id, epochs, status), daemon=True)
        thread.start()
        return thread

    def _control(self, experiment_id: str, epochs: int, status: JobStatus) -> None:
        state = self.app.state
        for _ in range(20):  # a step either launches trials, tells finished ones, or ends the experiment
            report = advance_experiment(
                experiment_id, settings=state.settings, session_factory=state.session_factory, celery_app=state.celery
            )
            if report.status is None or ExperimentStatus(report.status).is_terminal:
                return
            for job_id in report.job_ids:
                with transaction(state.session_factory) as session:
                    trial = session.scalars(select(Job.trial).where(Job.id == job_id)).one()
                self._work(job_id, epochs, status, 0.05, val={"balanced_accuracy": 0.6 + 0.1 * trial})

    def _work(self, job_id: str, epochs: int, status: JobStatus, pause: float, *, val: dict | None = None) -> None:
        factory = self.app.state.session_factory
        with transaction(factory) as session:
            leases.claim_job(session, job_id=job_id, worker_id="w", lease_seconds=60, now=utcnow())
        for epoch in range(1, epochs + 1):
            time.sleep(pause)
            record = {"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 0.5, "lr": 1e-3, "seconds": pause}
            with transaction(factory) as session:
                leases.record_epoch(
                    session, job_id=job_id, worker_id="w", record={**record, "val": val or {"auroc": 0.5}}
                )
        error = {"error_type": "ValueError", "error_message": "the loss became NaN"} if status == "failed" else {}
        best = {"best_epoch": epochs} if status == "succeeded" else {}  # as a worker reports it
        with transaction(factory) as session:
            leases.finish_job(session, job_id=job_id, worker_id="w", status=status, **error, **best)


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    from service.main import create_app

    data_dir = tmp_path_factory.mktemp("client-server")
    settings = Settings(_env_file=None, data_dir=data_dir, bootstrap_api_key=KEY, device="cpu")  # type: ignore[call-arg]
    upgrade_head(settings.sqlalchemy_url)
    app = create_app(settings, run_reaper=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the test server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield LiveServer(url=f"http://127.0.0.1:{port}", app=app)
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-class MedMNIST-layout archive of 8x8 images (val/test carved by ingest)."""
    rng = np.random.default_rng(0)
    labels = np.array([0] * 30 + [1] * 10, dtype=np.uint8)
    images = rng.integers(0, 256, size=(labels.size, 8, 8), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, train_images=images, train_labels=labels[:, None])
    path = tmp_path_factory.mktemp("npz") / "small.npz"
    path.write_bytes(buffer.getvalue())
    return path
