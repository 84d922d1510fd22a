"""Shared fixtures: real PostgreSQL and Redis, isolated settings, the test data set.

Real servers are never mocked. When one is unreachable a test that needs it is
skipped on a developer machine but *fails* under CI (``CI=true`` or ``CI=1``),
so a CI run can never pass by silently skipping the integration tests.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from availability import unavailable

from service.config import Settings, get_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
NPZ_NAME = "pneumoniamnist.npz"
# ../shared beside the repository root (the checkout at /work/main); a clean clone
# elsewhere (CI clones into a temporary folder) finds the same file at /work/shared.
NPZ_CANDIDATES = (
    REPO_ROOT.parent / "shared" / "data" / NPZ_NAME,
    Path("/work/shared/data") / NPZ_NAME,
)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests never see the developer's RAREFIT_* variables nor a cached Settings."""
    for name in list(os.environ):
        if name.upper().startswith("RAREFIT_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty data directory (SQLite database, SQLite broker, blobs) for one test."""
    path = tmp_path / "rarefit-data"
    path.mkdir()
    return path


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Factory: ``sqlite_settings(**overrides)`` -> embedded-default ``Settings``.

    Built from explicit values only (no env file; the autouse fixture cleared
    RAREFIT_* variables), data dir under ``tmp_path`` unless overridden.
    """

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "data_dir": tmp_path / "rarefit-data",
            "database_url": None,
            "broker_url": None,
            "weights_dir": None,
            "bootstrap_api_key": None,
            "device": "cpu",
        }
        values.update(overrides)
        Path(values["data_dir"]).mkdir(parents=True, exist_ok=True)  # type: ignore[arg-type]
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def rarefit_cmd() -> list[str]:
    """The argv prefix that runs the ``rarefit`` CLI of the interpreter running the tests.

    The console script when the project is installed in this venv (as the README
    and CI install it) with the entry point ``pyproject.toml`` names, else
    ``python -m <that module>`` from the repository root (no install, or one made
    from a tree whose entry point has since moved).
    """
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    module, function = re.search(r'^rarefit = "([\w.]+):(\w+)"$', pyproject, re.MULTILINE).groups()
    script = Path(sys.executable).parent / "rarefit"
    if script.is_file() and f"from {module} import {function}" in script.read_text(errors="replace"):
        return [str(script)]
    return [sys.executable, "-m", module]


@pytest.fixture(scope="session")
def pneumonia_npz() -> Path:
    """PneumoniaMNIST (MedMNIST v2, Yang et al. 2023), the shared test archive."""
    for candidate in NPZ_CANDIDATES:
        if candidate.is_file():
            return candidate.resolve()
    unavailable(f"{NPZ_NAME} not found; looked in {[str(c) for c in NPZ_CANDIDATES]}")
    raise AssertionError("unreachable")  # pragma: no cover - skip/fail raise


# --- PostgreSQL --------------------------------------------------------------


def _admin_connection():
    import psycopg

    try:
        return psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL unreachable at {POSTGRES_ADMIN_URL}: {exc}")


def _drop_database(admin, name: str) -> None:
    # Terminate stragglers first: a leaked pool connection must not keep the database alive.
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def new_postgres_url() -> Iterator[Callable[[], str]]:
    """Factory: each call creates a fresh, empty database and returns its SQLAlchemy URL.

    Every database it made is dropped at the end of the session.
    """
    admin = _admin_connection()
    created: list[str] = []

    def make() -> str:
        name = f"rarefit_test_{secrets.token_hex(6)}"
        admin.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

    try:
        yield make
    finally:
        for name in created:
            _drop_database(admin, name)
        admin.close()


@pytest.fixture(scope="session")
def postgres_url(new_postgres_url: Callable[[], str]) -> str:
    """One fresh database for the session (``postgresql+psycopg://…``); tables persist across tests."""
    return new_postgres_url()


# --- Redis -------------------------------------------------------------------


def _redis_client(db: int):
    import redis

    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, socket_connect_timeout=3)


def _pick_redis_db() -> int:
    """A random DB number in 1..15, preferring an empty one (other sessions may share the server)."""
    import redis

    numbers = list(range(1, 16))
    secrets.SystemRandom().shuffle(numbers)
    try:
        for number in numbers:
            client = _redis_client(number)
            try:
                if client.dbsize() == 0:
                    return number
            finally:
                client.close()
    except redis.RedisError as exc:
        unavailable(f"Redis unreachable at {REDIS_HOST}:{REDIS_PORT}: {exc}")
    return numbers[0]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``redis://127.0.0.1:6379/<n>`` for the session, flushed before and after."""
    number = _pick_redis_db()
    client = _redis_client(number)
    client.flushdb()
    try:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{number}"
    finally:
        client.flushdb()
        client.close()


# --- S3 (moto's standalone server) ------------------------------------------


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real S3 HTTP endpoint on 127.0.0.1 for the session (see tests/s3_support.py).

    The AWS credential variables point at it for the session, as an operator's
    environment would; they are restored afterwards.
    """
    try:
        import moto.server  # noqa: F401
    except ImportError:
        unavailable("moto[server] is not installed")
    from s3_support import CREDENTIALS, MotoServer

    server = MotoServer(log_path=tmp_path_factory.mktemp("moto") / "moto.log")
    saved = {name: os.environ.get(name) for name in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- a small real filesystem that fills up ------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Factory: ``small_tmpfs(size_bytes)`` mounts a tmpfs of that size and returns its path.

    A real filesystem that runs out of space (ENOSPC), unmounted at teardown.
    Needs root or CAP_SYS_ADMIN; skipped (locally and in CI alike) without it.
    """
    mounted: list[Path] = []

    def mount(size_bytes: int, *, name: str = "small-disk") -> Path:
        path = tmp_path / name
        path.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={int(size_bytes)}", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
