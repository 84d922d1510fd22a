"""The load generator against a tiny real HTTP server: framing, counting, errors, and open-loop latency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from benchmarks import http_load

DELAY_S = 0.02


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length)
            path = head.split(b" ")[1]
            if path == b"/chunked":
                writer.write(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
                )
            elif path == b"/fail":
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
            else:
                if path == b"/slow":
                    await asyncio.sleep(DELAY_S)
                answer = b"echo:" + body
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionResetError):
        pass  # the client closed its connection
    finally:
        writer.close()


@asynccontextmanager
async def server() -> AsyncIterator[str]:
    srv = await asyncio.start_server(_handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv:
        yield f"http://127.0.0.1:{port}"


def test_wire_format_carries_headers_and_length() -> None:
    request = http_load.HttpRequest("POST", "/p", {"Content-Type": "application/json"}, b'{"a":1}')
    wire = request.wire("h:1", {"Authorization": "Bearer k"})
    assert wire.startswith(b"POST /p HTTP/1.1\r\nHost: h:1\r\nAuthorization: Bearer k\r\n")
    assert b'Content-Length: 7\r\n\r\n{"a":1}' in wire
    assert b"Content-Length" not in http_load.get_request("/g").wire("h:1", {})


def test_predict_request_encodings() -> None:
    png = b"\x89PNG fake"
    multipart = http_load.predict_request("/x", png=png, encoding="multipart")
    boundary = multipart.headers["Content-Type"].split("boundary=")[1]
    assert multipart.body.startswith(f"--{boundary}\r\n".encode()) and png in multipart.body
    assert multipart.body.endswith(f"--{boundary}--\r\n".encode())
    assert b'"b64": "iVBORyBmYWtl"' in http_load.predict_request("/x", png=png, encoding="json").body
    with pytest.raises(ValueError, match="encoding"):
        http_load.predict_request("/x", png=png, encoding="xml")


def test_closed_loop_reads_bodies_and_counts_errors() -> None:
    async def scenario() -> tuple[http_load.LoadResult, ...]:
        async with server() as url:
            ok = await http_load.run_load(
                base_url=url,
                headers={},
                request=http_load.HttpRequest("POST", "/", {}, b"x"),
                concurrency=3,
                seconds=0.3,
                warmup_seconds=0.05,
            )
            chunked = await http_load.run_load(
                base_url=url,
                headers={},
                request=http_load.get_request("/chunked"),
                concurrency=1,
                seconds=0.1,
                warmup_seconds=0.0,
            )
            failing = await http_load.run_load(
                base_url=url,
                headers={},
                request=http_load.get_request("/fail"),
                concurrency=2,
                seconds=0.1,
                warmup_seconds=0.0,
            )
            return ok, chunked, failing

    ok, chunked, failing = asyncio.run(scenario())
    assert ok.concurrency == 3 and ok.requests > 0 and ok.errors == 0 and ok.offered_rate is None
    assert len(ok.latencies_ms) == ok.requests and ok.throughput > 0
    assert chunked.requests > 0 and chunked.errors == 0  # a chunked body was framed correctly
    assert failing.requests == 0 and failing.errors > 0


def test_open_loop_sends_the_schedule_and_charges_queueing() -> None:
    """One connection to a server that needs 20 ms per answer, offered 200 requests/s for 0.5 s:
    the 100 requests cannot finish before 2 s, so the last one waited ≥ 1.5 s past its scheduled start,
    and the open loop must report that wait (a closed loop would report ~20 ms for every request)."""

    async def scenario() -> http_load.LoadResult:
        async with server() as url:
            return await http_load.run_rate(
                base_url=url,
                headers={},
                request=http_load.get_request("/slow"),
                rate=200,
                seconds=0.5,
                connections=1,
                warmup_seconds=0.0,
            )

    result = asyncio.run(scenario())
    assert result.requests == 100 and result.errors == 0 and result.offered_rate == 200
    assert max(result.latencies_ms) >= 1500.0
    assert result.seconds >= 100 * DELAY_S


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="base_url"):
        asyncio.run(
            http_load.run_load(
                base_url="https://x", headers={}, request=http_load.get_request("/"), concurrency=1, seconds=1
            )
        )
    with pytest.raises(ValueError, match="rate"):
        asyncio.run(
            http_load.run_rate(
                base_url="http://127.0.0.1:1", headers={}, request=http_load.get_request("/"), rate=0, seconds=1
            )
        )
