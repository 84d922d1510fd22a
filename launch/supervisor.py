"""Process management for ``rarefit worker`` and ``rarefit serve`` (one machine, everything in one command).

``serve`` migrates the database, starts a Celery training worker and a control
worker (experiment steps, ``-Q control``) as child processes and keeps them
alive (restart with backoff, exit code logged), then runs uvicorn
with the API and its reaper thread in this process. If the worker dies (OOM
killer, SIGKILL), the restarted one picks the job up once the reaper sees the
lease expire and re-queues it: at most ``lease_seconds`` plus
``reaper_interval_seconds`` later, resuming from the job's checkpoint.
On SIGINT/SIGTERM uvicorn stops first (no new jobs), then the worker gets
SIGTERM (it forwards it to a child running a job, which goes back to the
queue with its checkpoint), and its whole process group SIGKILL after a grace
period.

Process wiring lives in ``launch`` because it is the one place allowed to
import both the service and the workers (docs/architecture.md, "Import rules").
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from service.config import Settings

logger = logging.getLogger(__name__)

WORKER_MODULE = "workers.celery_app"  # the child's ``celery -A`` argument
STOP_GRACE_SECONDS = 30.0
MAX_RESTART_BACKOFF_SECONDS = 30.0
STABLE_RUN_SECONDS = 60.0  # a worker that ran this long resets the restart backoff
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
QUEUES = ("train", "control")


def worker_args(*, concurrency: int, queue: str = "train", jobs_per_gpu: int = 1) -> list[str]:
    """``celery worker`` arguments: one message at a time per process, no chatter.

    A training worker runs ``concurrency × jobs_per_gpu`` pool processes (small
    jobs packed onto each device, each still an ordinary job with its own lease).
    The ``control`` queue (experiment steps: short, CPU-light, no GPU) runs in a
    worker of its own with the solo pool, so a step never waits behind a training job.
    """
    if isinstance(jobs_per_gpu, bool) or not isinstance(jobs_per_gpu, int) or jobs_per_gpu < 1:
        raise ValueError(f"jobs_per_gpu must be a positive int, got {jobs_per_gpu!r}")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be a positive int (one per GPU), got {concurrency!r}")
    if queue not in QUEUES:
        raise ValueError(f"queue must be one of {QUEUES}, got {queue!r}")
    pool = ["-P", "solo", "-n", "control@%h"] if queue == "control" else ["-c", str(concurrency * jobs_per_gpu)]
    return [
        "worker",
        "-Q",
        queue,
        *pool,
        "--prefetch-multiplier",
        "1",
        "-O",
        "fair",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-l",
        "INFO",
    ]


def worker_command(*, concurrency: int, queue: str = "train", jobs_per_gpu: int = 1) -> list[str]:
    args = worker_args(concurrency=concurrency, queue=queue, jobs_per_gpu=jobs_per_gpu)
    return [sys.executable, "-m", "celery", "-A", WORKER_MODULE, *args]


def worker_environment(settings: Settings) -> dict[str, str]:
    """This process's environment plus every setting as ``RAREFIT_*``, so the child sees the same ones."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        # pydantic-settings reads complex values as JSON.
        env[f"RAREFIT_{name.upper()}"] = json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
    env["RAREFIT_DATABASE_URL"] = settings.sqlalchemy_url
    env["RAREFIT_BROKER_URL"] = settings.celery_broker_url
    return env


def run_worker(settings: Settings, *, concurrency: int = 1, queue: str = "train") -> None:
    """Run a Celery worker for ``queue`` in this process until it is shut down."""
    # Imported here, not at the top: torch comes with the worker, and `rarefit serve` needs none of it.
    # The task module first, so its task (shared with every app) is registered when this app is finalised.
    import workers.tasks  # noqa: F401
    from workers.celery_app import make_worker_app

    args = worker_args(concurrency=concurrency, queue=queue, jobs_per_gpu=settings.jobs_per_gpu)
    make_worker_app(settings).worker_main(args)


class WorkerSupervisor:
    """Keeps one worker child process running until ``stop``; restarts it with backoff when it exits."""

    def __init__(self, command: list[str], *, env: dict[str, str], grace_seconds: float = STOP_GRACE_SECONDS) -> None:
        self._command, self._env, self._grace = list(command), env, grace_seconds
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._process: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._run, name="rarefit-worker-supervisor", daemon=True)
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def start(self) -> None:
        self._thread.start()

    def _spawn(self) -> subprocess.Popen | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            # Own session: a terminal's Ctrl-C reaches us, not the worker; we stop it in order.
            self._process = subprocess.Popen(
                self._command,
                env=self._env,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
            logger.info("worker started (pid %d)", self._process.pid)
            return self._process

    def _run(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            started = time.monotonic()
            process = self._spawn()
            if process is None:
                return
            code = process.wait()
            if self._stopping.is_set():
                return
            ran = time.monotonic() - started
            backoff = 1.0 if ran >= STABLE_RUN_SECONDS else min(backoff * 2, MAX_RESTART_BACKOFF_SECONDS)
            logger.error("worker exited with code %s after %.0f s; restarting in %.0f s", code, ran, backoff)
            self.restarts += 1
            self._stopping.wait(backoff)

    def stop(self) -> None:
        """SIGTERM to the worker (it tells busy children: jobs hand themselves back), then SIGKILL to its group."""
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self._grace)
            except subprocess.TimeoutExpired:
                logger.warning("worker did not stop within %.0f s; killing it", self._grace)
                _signal_group(process, signal.SIGKILL)
                process.wait()
            logger.info("worker stopped (exit code %s)", process.returncode)
        self._thread.join(timeout=5)


def _die_with_parent() -> None:
    # Runs in the child before exec: if this supervisor dies, even by SIGKILL, the kernel sends the
    # worker SIGTERM (a graceful hand-back), so no orphaned worker keeps taking jobs. The signal fires
    # when the spawning thread ends, which is the supervisor thread: it outlives every worker it starts.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def serve(settings: Settings, *, host: str, port: int, concurrency: int = 1) -> None:
    """Migrate, start and supervise the worker, run the API (with the reaper) until SIGINT/SIGTERM."""
    from service.migrate import upgrade_head

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_head(settings.sqlalchemy_url)
    env = worker_environment(settings)
    supervisors = [
        WorkerSupervisor(
            worker_command(concurrency=concurrency, queue=queue, jobs_per_gpu=settings.jobs_per_gpu), env=env
        )
        for queue in QUEUES
    ]
    for supervisor in supervisors:
        supervisor.start()
    try:
        _run_api(settings, host=host, port=port)
    finally:
        logger.info("API stopped; stopping the workers")
        for supervisor in supervisors:
            supervisor.stop()


def _run_api(settings: Settings, *, host: str, port: int) -> None:
    import uvicorn

    from service.main import create_app

    config = uvicorn.Config(create_app(settings, run_reaper=True), host=host, port=port, log_config=None)
    server = uvicorn.Server(config)
    with _signals_reraised_quietly():
        server.run()


@contextmanager
def _signals_reraised_quietly() -> Iterator[None]:
    # uvicorn handles SIGINT/SIGTERM while it runs, then re-raises them to the previous
    # handlers; these log instead of killing the process, so the worker is stopped in order.
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def note(signum, _frame) -> None:
        logger.info("received signal %d; shutting down", signum)

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
