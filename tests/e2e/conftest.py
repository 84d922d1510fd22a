"""Start the real ``rarefit serve`` as a subprocess and always stop it again."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 45.0  # serve gives its worker 30 s to hand its job back


@dataclass(frozen=True)
class Server:
    """A running ``rarefit serve`` and what a test needs to talk to it."""

    base_url: str
    api_key: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen

    def log_tail(self, *, chars: int = 20_000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def server_env(*, data_dir: Path, api_key: str, extra: dict[str, str]) -> dict[str, str]:
    """The developer's environment without RAREFIT_* variables, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAREFIT_")}
    env.update(RAREFIT_DATA_DIR=str(data_dir), RAREFIT_BOOTSTRAP_API_KEY=api_key, **extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"rarefit serve exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.base_url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.5)
    pytest.fail(f"rarefit serve not ready after {READY_TIMEOUT_S:.0f}s:\n{server.log_tail()}")


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat: with the pid it names one process, even after pid reuse."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _descendants(pid: int) -> list[tuple[int, str]]:
    """Every live process below ``pid`` (the embedded worker runs in a session of its own)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # exited while we looked
        parents.setdefault(ppid, []).append(int(stat.parent.name))
    found: list[int] = []
    frontier = [pid]
    while frontier:
        children = parents.get(frontier.pop(), [])
        found += children
        frontier += children
    return [(child, start) for child in found if (start := _start_time(child)) is not None]


def _kill(processes: list[tuple[int, str]]) -> None:
    for pid, start in processes:
        if _start_time(pid) != start:
            continue  # gone (and maybe its pid reused by someone else's process)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the server (it stops its worker in order); SIGKILL whatever is left after a grace period."""
    family = _descendants(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            family = _descendants(process.pid) + family
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
    _kill(family)  # a worker child that outlived its parent must not train on after the test


@pytest.fixture
def start_server(
    tmp_path: Path, free_port: int, rarefit_cmd: list[str], request: pytest.FixtureRequest
) -> Iterator[Callable[..., Server]]:
    """Factory: ``start_server(extra_env={...})`` runs ``rarefit serve`` and waits for /readyz.

    The server's output goes to a log file, printed at teardown (pytest shows
    it for a failed test). The server and its worker are always terminated.
    """
    started: list[Server] = []

    def start(*, extra_env: dict[str, str] | None = None) -> Server:
        api_key = "rf_e2e_default_tenant_key"
        env = server_env(data_dir=tmp_path / "data", api_key=api_key, extra=extra_env or {})
        log_path = tmp_path / "serve.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*rarefit_cmd, "serve", "--host", "127.0.0.1", "--port", str(free_port)],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Server(f"http://127.0.0.1:{free_port}", api_key, env, log_path, process)
        started.append(server)
        _wait_ready(server)
        return server

    yield start
    for server in started:
        _stop(server.process)
        # pytest shows report sections with a failed test's report.
        request.node.add_report_section("teardown", f"rarefit serve log ({server.log_path})", server.log_tail())
