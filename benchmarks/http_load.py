"""A small HTTP/1.1 load generator on raw asyncio streams: closed loop (fixed clients) or open loop (fixed rate).

Client and server share this machine's two cores, so every millisecond the
client spends is taken from the server. A general-purpose client (httpx)
costs more CPU per request than the server's own work on a poll
(``benchmarks/RESULTS.md``, "Polling"); this one sends prepared request
bytes over keep-alive connections and parses only the status line,
``Content-Length`` (or chunked framing) and the body.

- :func:`run_load` (closed loop): ``concurrency`` clients, each sending its
  next request when the previous one is answered. Measures capacity;
  latency includes the queueing the clients themselves cause.
- :func:`run_rate` (open loop): requests start at a fixed ``rate`` whether
  or not earlier ones were answered, over a pool of connections, as
  independent callers would send them (the method of wrk2). Latency runs
  from each request's scheduled start, so a stalled server is charged for
  the requests it delayed ("coordinated omission" avoided). This is the
  measure for "sustains N requests/s at p99 ≤ X".

A short warm-up (not recorded) opens the connections and fills the server's caches.
The client's garbage collector is paused while it measures: with torch
imported, one full collection stalls its event loop long enough to show up
as server latency.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import io
import json
import logging
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

_HEADER_END = b"\r\n\r\n"


@dataclass(frozen=True)
class HttpRequest:
    """One request, prepared once and sent many times."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def wire(self, host: str, extra_headers: dict[str, str]) -> bytes:
        headers = {"Host": host, **extra_headers, **self.headers}
        if self.body or self.method in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(self.body))
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        return f"{self.method} {self.path} HTTP/1.1\r\n{head}\r\n".encode("latin-1") + self.body


@dataclass(frozen=True)
class LoadResult:
    concurrency: int  # clients (closed loop) or connections (open loop)
    requests: int
    errors: int
    seconds: float
    latencies_ms: tuple[float, ...]
    offered_rate: float | None = None  # requests/s scheduled (open loop only)

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else float("nan")

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


class _Connection:
    """One keep-alive connection: send a request, read one whole response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        return cls(*await asyncio.open_connection(host, port, limit=1 << 20))

    async def exchange(self, wire: bytes) -> tuple[int, bytes]:
        self.writer.write(wire)
        head = await self.reader.readuntil(_HEADER_END)
        status = int(head[9:12])
        length, chunked = None, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            return status, await self._read_chunked()
        if length is None:
            raise ValueError(f"response without Content-Length or chunked framing (status {status})")
        return status, await self.reader.readexactly(length)

    async def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await self.reader.readexactly(size + 2)
            if size == 0:
                return b"".join(parts)
            parts.append(data[:-2])

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass  # the server dropped it first


class _Target:
    def __init__(self, base_url: str, headers: dict[str, str], request: HttpRequest) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"base_url must be http://host:port, got {base_url!r}")
        self.host, self.port = parts.hostname, parts.port
        self.wire = request.wire(f"{self.host}:{self.port}", headers)

    async def connect(self, count: int) -> list[_Connection]:
        return list(await asyncio.gather(*(_Connection.open(self.host, self.port) for _ in range(count))))


def _record(status: int, body: bytes, elapsed_ms: float, latencies: list[float], errors: list[str]) -> None:
    if status == 200:
        latencies.append(elapsed_ms)
    else:
        errors.append(f"{status}: {body[:200]!r}")


async def _closed_client(
    connection: _Connection, wire: bytes, *, until: float, out: list[float], errors: list[str]
) -> None:
    while time.perf_counter() < until:
        started = time.perf_counter()
        status, body = await connection.exchange(wire)
        _record(status, body, (time.perf_counter() - started) * 1000.0, out, errors)


async def run_load(
    *,
    base_url: str,
    headers: dict[str, str],
    request: HttpRequest,
    concurrency: int,
    seconds: float,
    warmup_seconds: float = 0.5,
) -> LoadResult:
    """Closed loop: ``concurrency`` clients for ``seconds`` (after ``warmup_seconds``)."""
    if concurrency < 1 or seconds <= 0:
        raise ValueError(f"concurrency must be >= 1 and seconds > 0, got {concurrency}, {seconds}")
    target = _Target(base_url, headers, request)
    connections = await target.connect(concurrency)
    try:
        errors: list[str] = []
        until = time.perf_counter() + warmup_seconds
        await asyncio.gather(*(_closed_client(c, target.wire, until=until, out=[], errors=errors) for c in connections))
        latencies: list[float] = []
        started = time.perf_counter()
        await asyncio.gather(
            *(
                _closed_client(c, target.wire, until=started + seconds, out=latencies, errors=errors)
                for c in connections
            )
        )
        elapsed = time.perf_counter() - started
    finally:
        await asyncio.gather(*(connection.close() for connection in connections))
    _warn(errors)
    return LoadResult(concurrency, len(latencies), len(errors), elapsed, tuple(latencies))


async def run_rate(
    *,
    base_url: str,
    headers: dict[str, str],
    request: HttpRequest,
    rate: float,
    seconds: float,
    connections: int = 64,
    warmup_seconds: float = 0.5,
) -> LoadResult:
    """Open loop: start ``rate`` requests/s for ``seconds`` over a pool of ``connections``.

    A request whose turn comes while every connection is busy waits for one,
    and that wait is part of its latency. Throughput is the answered requests
    over the time from the first scheduled start to the last answer.
    """
    if rate <= 0 or seconds <= 0 or connections < 1:
        raise ValueError(f"rate, seconds and connections must be positive, got {rate}, {seconds}, {connections}")
    target = _Target(base_url, headers, request)
    pool: asyncio.Queue[_Connection] = asyncio.Queue()
    opened = await target.connect(connections)
    for connection in opened:
        pool.put_nowait(connection)
    errors: list[str] = []

    async def one(scheduled: float, out: list[float]) -> None:
        connection = await pool.get()
        try:
            status, body = await connection.exchange(target.wire)
        finally:
            pool.put_nowait(connection)
        _record(status, body, (time.perf_counter() - scheduled) * 1000.0, out, errors)

    async def schedule(duration: float, out: list[float]) -> float:
        started = time.perf_counter()
        total = int(duration * rate)
        tasks, sent = [], 0
        while sent < total:
            now = time.perf_counter()
            due = min(total, int((now - started) * rate) + 1)
            while sent < due:
                tasks.append(asyncio.create_task(one(started + sent / rate, out)))
                sent += 1
            await asyncio.sleep(max(0.0, started + sent / rate - time.perf_counter()))
        await asyncio.gather(*tasks)
        return time.perf_counter() - started

    try:
        await schedule(warmup_seconds, [])
        latencies: list[float] = []
        elapsed = await schedule(seconds, latencies)
    finally:
        await asyncio.gather(*(connection.close() for connection in opened))
    _warn(errors)
    return LoadResult(connections, len(latencies), len(errors), elapsed, tuple(latencies), offered_rate=rate)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # reference counting still frees almost everything a request allocates
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _warn(errors: list[str]) -> None:
    if errors:
        logger.warning("%d failed requests, first: %s", len(errors), errors[0])


def measure(**kwargs: object) -> LoadResult:
    """:func:`run_load` from synchronous code, the client's collector paused."""
    with _collector_paused():
        return asyncio.run(run_load(**kwargs))  # type: ignore[arg-type]


def measure_rate(**kwargs: object) -> LoadResult:
    """:func:`run_rate` from synchronous code, the client's collector paused."""
    with _collector_paused():
        return asyncio.run(run_rate(**kwargs))  # type: ignore[arg-type]


def png_bytes(image: np.ndarray) -> bytes:
    """One uint8 ``(H, W)`` or ``(H, W, C)`` image as PNG."""
    squeezed = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
    buffer = io.BytesIO()
    Image.fromarray(squeezed).save(buffer, format="PNG")
    return buffer.getvalue()


def predict_request(path: str, *, png: bytes, encoding: str) -> HttpRequest:
    """One image: ``multipart`` (field ``files``) or ``json`` (``instances[].b64``)."""
    if encoding == "multipart":
        boundary = secrets.token_hex(16)
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="image.png"\r\n'
                f"Content-Type: image/png\r\n\r\n"
            ).encode()
            + png
            + f"\r\n--{boundary}--\r\n".encode()
        )
        return HttpRequest("POST", path, {"Content-Type": f"multipart/form-data; boundary={boundary}"}, body)
    if encoding == "json":
        body = json.dumps({"instances": [{"b64": base64.b64encode(png).decode("ascii")}]}).encode()
        return HttpRequest("POST", path, {"Content-Type": "application/json"}, body)
    raise ValueError(f"encoding must be 'multipart' or 'json', got {encoding!r}")


def get_request(path: str) -> HttpRequest:
    return HttpRequest("GET", path)
