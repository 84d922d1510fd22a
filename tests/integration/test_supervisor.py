"""``WorkerSupervisor`` with real child processes: restart after a kill, orderly stop, SIGKILL after the grace."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch.supervisor import WorkerSupervisor, worker_args, worker_environment
from service.config import Settings

# A stand-in worker: records its pid, records SIGTERM and exits (or ignores it), else sleeps.
CHILD = """
import os, signal, sys, time
log = sys.argv[1]
def note(text):
    with open(log, "a") as handle:
        handle.write(text + "\\n")
def on_term(*_):
    note(f"term {os.getpid()}")
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if sys.argv[2] == "ignore" else on_term)
note(f"start {os.getpid()}")
time.sleep(120)
"""


def events(log: Path) -> list[str]:
    return log.read_text().split("\n")[:-1] if log.exists() else []


def wait_for(condition, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_killed_worker_is_restarted_and_stop_sends_sigterm(tmp_path):
    log = tmp_path / "events"
    supervisor = WorkerSupervisor([sys.executable, "-c", CHILD, str(log), "exit"], env=dict(os.environ))
    supervisor.start()
    try:
        wait_for(lambda: len(events(log)) == 1)
        first = int(events(log)[0].split()[1])
        os.kill(first, signal.SIGKILL)  # the OOM killer's way
        wait_for(lambda: len(events(log)) == 2)
        second = int(events(log)[1].split()[1])
        assert second != first and supervisor.restarts == 1 and supervisor.pid == second
    finally:
        supervisor.stop()
    assert events(log)[-1] == f"term {second}" and supervisor.pid is None


def test_worker_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path):
    log = tmp_path / "events"
    supervisor = WorkerSupervisor(
        [sys.executable, "-c", CHILD, str(log), "ignore"], env=dict(os.environ), grace_seconds=0.5
    )
    supervisor.start()
    wait_for(lambda: len(events(log)) == 1)
    started = time.monotonic()
    supervisor.stop()
    assert time.monotonic() - started < 10 and supervisor.pid is None and len(events(log)) == 1


def test_worker_arguments_and_environment(tmp_path):
    assert worker_args(concurrency=2)[:5] == ["worker", "-Q", "train", "-c", "2"]
    assert worker_args(concurrency=2, jobs_per_gpu=3)[:5] == ["worker", "-Q", "train", "-c", "6"]
    assert worker_args(concurrency=1, queue="control")[:5] == ["worker", "-Q", "control", "-P", "solo"]
    with pytest.raises(ValueError, match="concurrency"):
        worker_args(concurrency=0)
    settings = Settings(_env_file=None, data_dir=tmp_path, lease_seconds=7)
    env = worker_environment(settings)
    assert env["RAREFIT_LEASE_SECONDS"] == "7" and env["RAREFIT_DATA_DIR"] == str(tmp_path.resolve())
    assert env["RAREFIT_DATABASE_URL"] == settings.sqlalchemy_url
    assert env["RAREFIT_BROKER_URL"] == settings.celery_broker_url


@pytest.mark.skipif(sys.platform != "linux", reason="parent-death signal is Linux-only")
def test_worker_gets_sigterm_when_the_supervisor_is_killed(tmp_path):
    log = tmp_path / "events"
    script = (
        "import os, sys, time\n"
        "from launch.supervisor import WorkerSupervisor\n"
        f"WorkerSupervisor([sys.executable, '-c', {CHILD!r}, {str(log)!r}, 'exit'], env=dict(os.environ)).start()\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2])
    try:
        wait_for(lambda: len(events(log)) == 1)
        child = int(events(log)[0].split()[1])
        parent.kill()  # SIGKILL: no cleanup code runs in the supervisor
        parent.wait()
        wait_for(lambda: events(log)[-1] == f"term {child}")
    finally:
        if parent.poll() is None:
            parent.kill()
