"""Process-level tools for the fault tests: subprocesses in their own group, a cuttable TCP proxy, data.

Imported by ``tests/chaos/conftest.py`` only; the tests reach all of it through fixtures.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

STOP_GRACE_SECONDS = 20.0


def pick_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], object], *, timeout: float, what: str, logs: Callable[[], str] = str, interval: float = 0.1
) -> object:
    """Poll ``condition`` until it returns something truthy (returned); AssertionError with logs after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs()}")
        time.sleep(interval)


class Proc:
    """A subprocess started in a new session (its own process group), output to a log file.

    ``stop`` sends SIGTERM to the group, waits, then SIGKILLs the group, so a
    Celery worker's pool children never outlive the test.
    """

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], log_path: Path, cwd: Path) -> None:
        self.name, self.argv, self.log_path = name, list(argv), log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the whole group, no goodbye (the OOM killer's or a crash's way)."""
        self.signal_group(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, *, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM (an orderly stop), then SIGKILL to the group and to every descendant seen.

        Descendants matter for ``rarefit serve``: its worker runs in a session of its own.
        """
        family = descendants(self.pid)
        if self.alive:
            self.signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                family += descendants(self.pid)
        self.signal_group(signal.SIGKILL)  # pool children left behind by a parent that exited
        if self.alive:
            self.process.wait(timeout=30)
        for pid, started in family:
            if start_time(pid) == started:  # still that process, not a reused pid
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat: with the pid it names one process, even after pid reuse."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def descendants(pid: int) -> list[tuple[int, str]]:
    """Every live process below ``pid``, as ``(pid, start time)``."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        parent = parent_pid(int(stat.parent.name))
        if parent is not None:
            children.setdefault(parent, []).append(int(stat.parent.name))
    found, frontier = [], [pid]
    while frontier:
        below = children.get(frontier.pop(), [])
        found += below
        frontier += below
    return [(child, started) for child in found if (started := start_time(child)) is not None]


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to a target; ``cut()`` drops every connection and refuses new ones.

    An asyncio loop in a daemon thread. While cut, the listening socket is
    closed, so clients get "connection refused" at once (a database host that
    went away), until ``restore()`` listens on the same port again.
    """

    def __init__(self, *, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.port = pick_port()
        self.aborted = 0  # connections cut so far
        self._target = (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> None:
        self._thread.start()
        self._call(self._listen())

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _call(self, coroutine) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=15)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()  # the listening socket closes now: new connections are refused
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()  # RST: the client sees its connection die mid-conversation
            self.aborted += 1
        self._writers.clear()

    async def _shutdown(self) -> None:
        await self._cut()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


def synthetic_npz(*, train: tuple[int, int], side: int = 28, seed: int = 0) -> bytes:
    """A two-class MedMNIST-layout ``.npz`` whose classes differ in brightness (learnable in an epoch)."""
    rng = np.random.default_rng(seed)

    def split(counts: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        labels = np.concatenate([np.full(n, c, dtype=np.int64) for c, n in enumerate(counts)])
        images = rng.integers(0, 120, size=(len(labels), side, side)) + 100 * labels[:, None, None]
        return images.astype(np.uint8), labels

    arrays = {}
    held_out = (max(8, train[0] // 10), max(4, train[1] // 10))
    for name, counts in (("train", train), ("val", held_out), ("test", held_out)):
        arrays[f"{name}_images"], arrays[f"{name}_labels"] = split(counts)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()
