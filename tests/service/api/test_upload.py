"""Upload size limits: BodySizeLimitMiddleware (pure ASGI), save_upload, IngestLimits."""

from __future__ import annotations

import io
import json
from pathlib import Path

import anyio
import httpx
import pytest
from fastapi import FastAPI
from fastapi import UploadFile as FastAPIUploadFile
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.api.body_limit import BodySizeLimitMiddleware
from service.api.request_context import RequestContextMiddleware
from service.api.upload import save_upload
from service.ingest import DatasetRejected, IngestLimits

LIMIT = 1000


def _counting_app(seen: dict) -> Starlette:
    async def upload(request: Request) -> JSONResponse:
        seen["called"] = True
        seen["bytes"] = 0
        async for chunk in request.stream():
            seen["bytes"] += len(chunk)
        return JSONResponse({"received": seen["bytes"]})

    routes = [Route("/v1/datasets", upload, methods=["POST"]), Route("/v1/jobs", upload, methods=["POST"])]
    return Starlette(routes=routes)


def _post(app, path: str, **kwargs) -> httpx.Response:
    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(path, **kwargs)

    return anyio.run(main)


class _Chunks:
    """An async request body of ``count`` chunks that records how many were pulled."""

    def __init__(self, *, size: int, count: int) -> None:
        self.size, self.count, self.pulled = size, count, 0

    async def __aiter__(self):
        for _ in range(self.count):
            self.pulled += 1
            yield b"x" * self.size


def _assert_problem_413(response: httpx.Response) -> None:
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 413 and body["title"] == "Content Too Large"
    assert body["detail"] == "upload exceeds the limit of 1000 bytes (0.0 MiB)"


def test_content_length_over_the_limit_is_refused_before_the_app_runs() -> None:
    seen: dict = {}
    app = BodySizeLimitMiddleware(_counting_app(seen), max_bytes=LIMIT)
    response = _post(app, "/v1/datasets", content=b"x" * (LIMIT + 1))
    _assert_problem_413(response)
    assert seen == {}


def test_streamed_body_over_the_limit_is_cut_off() -> None:
    seen: dict = {}
    body = _Chunks(size=100, count=1000)  # 100 kB, no Content-Length (chunked)
    app = BodySizeLimitMiddleware(_counting_app(seen), max_bytes=LIMIT)
    response = _post(app, "/v1/datasets", content=body)
    _assert_problem_413(response)
    assert seen["called"] and seen["bytes"] <= LIMIT
    assert body.pulled <= LIMIT // 100 + 1 < body.count


def test_the_413_names_the_request_id_as_every_problem_does() -> None:
    app = RequestContextMiddleware(BodySizeLimitMiddleware(_counting_app({}), max_bytes=LIMIT))
    response = _post(app, "/v1/datasets", content=b"x" * (LIMIT + 1), headers={"X-Request-ID": "big-1"})
    _assert_problem_413(response)
    assert response.headers["X-Request-ID"] == response.json()["instance"] == "big-1"
    assert response.headers["connection"] == "close"


def test_bodies_within_the_limit_and_other_routes_pass_through() -> None:
    seen: dict = {}
    app = BodySizeLimitMiddleware(_counting_app(seen), max_bytes=LIMIT)
    assert _post(app, "/v1/datasets", content=b"x" * LIMIT).json() == {"received": LIMIT}
    assert _post(app, "/v1/datasets", content=_Chunks(size=100, count=10)).json() == {"received": LIMIT}
    assert _post(app, "/v1/jobs", content=b"x" * (10 * LIMIT)).json() == {"received": 10 * LIMIT}


def test_fastapi_multipart_route_answers_413_not_400() -> None:
    api = FastAPI()
    seen: dict = {}

    @api.post("/v1/datasets")
    async def create(file: FastAPIUploadFile) -> dict:
        seen["called"] = True
        return {"name": file.filename}

    boundary = "XyZ"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.zip"\r\n\r\n'.encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    payload = head + b"z" * 50_000 + tail

    async def stream():
        for start in range(0, len(payload), 500):
            yield payload[start : start + 500]

    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    app = BodySizeLimitMiddleware(api, max_bytes=LIMIT)
    _assert_problem_413(_post(app, "/v1/datasets", content=stream(), headers=headers))
    assert seen == {}
    small = head + b"z" * 100 + tail
    assert _post(app, "/v1/datasets", content=small, headers=headers).json() == {"name": "d.zip"}


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_middleware_rejects_a_bad_limit(bad) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        BodySizeLimitMiddleware(_counting_app({}), max_bytes=bad)


def _save(data: bytes, dest: Path, max_bytes: int) -> int:
    async def main() -> int:
        return await save_upload(UploadFile(file=io.BytesIO(data), filename="u.zip"), dest=dest, max_bytes=max_bytes)

    return anyio.run(main)


def test_save_upload_copies_within_the_limit(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # > 2 chunks of 1 MiB
    assert _save(data, tmp_path / "u", len(data)) == len(data)
    assert (tmp_path / "u").read_bytes() == data


def test_save_upload_over_the_limit_deletes_the_partial_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetRejected) as info:
        _save(b"x" * (3 * 1024 * 1024), tmp_path / "u", 1024 * 1024)
    assert info.value.status_code == 413
    assert info.value.detail == "upload exceeds the limit of 1048576 bytes (1.0 MiB)"
    assert not (tmp_path / "u").exists()


def test_ingest_limits_from_settings_and_validation(sqlite_settings) -> None:
    settings = sqlite_settings(max_archive_entries=7, max_expanded_bytes=8, max_image_pixels=9)
    assert IngestLimits.from_settings(settings) == IngestLimits(
        max_archive_entries=7, max_expanded_bytes=8, max_image_pixels=9
    )
    with pytest.raises(ValueError, match="max_image_pixels"):
        IngestLimits(max_archive_entries=1, max_expanded_bytes=1, max_image_pixels=0)
    assert json.dumps(DatasetRejected(422, "x").detail) == '"x"'
    with pytest.raises(ValueError, match="status_code"):
        DatasetRejected(500, "no")
