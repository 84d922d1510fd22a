"""Real servers for the HTTP benchmarks: ``rarefit serve`` / ``rarefit api``, the floor app, a temp PostgreSQL database.

Every server is a subprocess in its own session (process group), started
here and stopped here by its own group id: SIGTERM, then SIGKILL after a
grace period. Logs go to a file so the benchmark can read what the worker
logged (the runner's "first training step" line).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx

from benchmarks import common

logger = logging.getLogger(__name__)

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_CLI = "import sys; from launch.cli import main; sys.exit(main())"  # `rarefit` without an installed script


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A subprocess serving HTTP on ``127.0.0.1:port``; use as a context manager."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        port: int,
        env: Mapping[str, str],
        log_path: Path,
        ready_path: str = "/healthz",
        ready_timeout: float = 120.0,
    ) -> None:
        self.command, self.port, self.env, self.log_path = list(command), port, dict(env), log_path
        self.ready_path, self.ready_timeout = ready_path, ready_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it for its lifetime
        self.process = subprocess.Popen(
            self.command,
            cwd=common.REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + self.ready_path, timeout=2.0).status_code == 200:
                    return
            time.sleep(0.25)
        raise RuntimeError(f"server not ready after {self.ready_timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM to the server's own process group, SIGKILL if it outlives ``grace`` seconds."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return "<no log>"


def rarefit_env(*, data_dir: Path, api_key: str, device: str, database_url: str | None = None) -> dict[str, str]:
    """The process environment of a benchmark server: our settings only, none inherited from the shell."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("RAREFIT_")}
    env.update(
        {
            "RAREFIT_DATA_DIR": str(data_dir),
            "RAREFIT_BOOTSTRAP_API_KEY": api_key,
            "RAREFIT_DEVICE": device,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(common.REPO_ROOT), env.get("PYTHONPATH")])),
        }
    )
    if database_url is not None:
        env["RAREFIT_DATABASE_URL"] = database_url
    return env


def rarefit_server(mode: str, *, env: Mapping[str, str], log_path: Path, api_workers: int = 1) -> Server:
    """``rarefit serve`` (API + embedded worker, migrates first) or ``rarefit api`` (migrated here first,
    ``api_workers`` uvicorn processes)."""
    if mode not in ("serve", "api"):
        raise ValueError(f"mode must be 'serve' or 'api', got {mode!r}")
    if api_workers != 1 and mode != "api":
        raise ValueError("api_workers applies to mode 'api' only")
    if mode == "api":
        subprocess.run(
            [sys.executable, "-c", _CLI, "migrate"],
            cwd=common.REPO_ROOT,
            env=dict(env),
            check=True,
            capture_output=True,
            timeout=300,
        )
    port = free_port()
    command = [sys.executable, "-c", _CLI, mode, "--host", "127.0.0.1", "--port", str(port)]
    if mode == "api":
        command += ["--workers", str(api_workers)]
    return Server(command, port=port, env=env, log_path=log_path, ready_path="/readyz")


def floor_server(
    *, model_path: Path, class_names: Sequence[str], threshold: float | None, positive_class: int | None, log_path: Path
) -> Server:
    """The minimal FastAPI endpoint (``benchmarks.floor_app``) serving ``model_path``."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "benchmarks.floor_app",
        "--model",
        str(model_path),
        "--port",
        str(port),
        "--classes",
        *class_names,
    ]
    if threshold is not None and positive_class is not None:
        command += ["--threshold", str(threshold), "--positive-class", str(positive_class)]
    return Server(command, port=port, env=dict(os.environ), log_path=log_path)


@contextlib.contextmanager
def temp_postgres_database() -> Iterator[str]:
    """A fresh database ``rarefit_bench_<hex>`` on the local server; dropped afterwards (stragglers terminated)."""
    import psycopg

    name = f"rarefit_bench_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3):
            return True
    except Exception:  # noqa: BLE001 - any failure means "not available here"
        return False
