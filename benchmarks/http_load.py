"""A small closed-loop HTTP load generator: ``concurrency`` clients, each sending its next request on an answer.

One ``httpx.AsyncClient`` with keep-alive connections (one per client) runs
all the clients on one event loop. Latency is per request, client side (send
to full body read); throughput is answered requests / wall seconds. A short
warm-up (not recorded) opens the connections and fills the server's caches.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

Send = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


@dataclass(frozen=True)
class LoadResult:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: tuple[float, ...]

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else float("nan")

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


async def _client_loop(client: httpx.AsyncClient, send: Send, *, until: float, out: list[float],
                       errors: list[str]) -> None:
    while time.perf_counter() < until:
        started = time.perf_counter()
        response = await send(client)
        await response.aread()
        elapsed = (time.perf_counter() - started) * 1000.0
        if response.status_code == 200:
            out.append(elapsed)
        else:
            errors.append(f"{response.status_code}: {response.text[:200]}")


async def run_load(*, base_url: str, headers: dict[str, str], send: Send, concurrency: int, seconds: float,
                   warmup_seconds: float = 0.5) -> LoadResult:
    """Drive ``send`` from ``concurrency`` clients for ``seconds`` (after ``warmup_seconds``)."""
    if concurrency < 1 or seconds <= 0:
        raise ValueError(f"concurrency must be >= 1 and seconds > 0, got {concurrency}, {seconds}")
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=60.0) as client:
        sink: list[float] = []
        errors: list[str] = []
        until = time.perf_counter() + warmup_seconds
        await asyncio.gather(*(_client_loop(client, send, until=until, out=sink, errors=errors)
                               for _ in range(concurrency)))
        latencies: list[float] = []
        started = time.perf_counter()
        until = started + seconds
        await asyncio.gather(*(_client_loop(client, send, until=until, out=latencies, errors=errors)
                               for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    if errors:
        logger.warning("%d failed requests, first: %s", len(errors), errors[0])
    return LoadResult(concurrency, len(latencies), len(errors), elapsed, tuple(latencies))


def measure(**kwargs: object) -> LoadResult:
    """:func:`run_load` from synchronous code."""
    return asyncio.run(run_load(**kwargs))  # type: ignore[arg-type]


def png_bytes(image: np.ndarray) -> bytes:
    """One uint8 ``(H, W)`` or ``(H, W, C)`` image as PNG."""
    squeezed = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
    buffer = io.BytesIO()
    Image.fromarray(squeezed).save(buffer, format="PNG")
    return buffer.getvalue()


def predict_sender(path: str, *, png: bytes, encoding: str) -> Send:
    """A request sender for one image: ``multipart`` (field ``files``) or ``json`` (``instances[].b64``)."""
    if encoding == "multipart":
        files = [("files", ("image.png", png, "image/png"))]

        async def send_multipart(client: httpx.AsyncClient) -> httpx.Response:
            return await client.post(path, files=files)

        return send_multipart
    if encoding == "json":
        body = {"instances": [{"b64": base64.b64encode(png).decode("ascii")}]}

        async def send_json(client: httpx.AsyncClient) -> httpx.Response:
            return await client.post(path, json=body)

        return send_json
    raise ValueError(f"encoding must be 'multipart' or 'json', got {encoding!r}")


def get_sender(path: str) -> Send:
    async def send_get(client: httpx.AsyncClient) -> httpx.Response:
        return await client.get(path)

    return send_get
