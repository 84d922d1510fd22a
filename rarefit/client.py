"""A Python client for the rarefit HTTP API (httpx), returning the API's own pydantic schemas.

```
from rarefit.client import Client
with Client("http://127.0.0.1:8000", api_key="...") as rf:
    dataset = rf.upload_dataset("pneumoniamnist.npz")
    job = rf.submit_job({"dataset_id": dataset.id, "epochs": 3}, wait=True)
    print(rf.metrics(job.id).test)
```
Every error answer (``application/problem+json``) raises ``ApiError`` with
its ``status``, ``title``, ``detail`` and ``errors``. ``wait`` follows the
job's Server-Sent Events (resuming with ``Last-Event-ID`` after a dropped
connection) and falls back to polling with ``If-None-Match`` when the stream
is unavailable.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse
from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.schemas import ArtifactOut, DatasetOut, JobOut, MetricsOut, ModelOut, PredictOut

logger = logging.getLogger(__name__)

FINAL = ("succeeded", "failed", "cancelled")


class ClientSettings(BaseSettings):
    """Where the client points by default: ``RAREFIT_URL`` and ``RAREFIT_API_KEY``."""

    model_config = SettingsConfigDict(env_prefix="RAREFIT_", extra="ignore")
    url: str = "http://127.0.0.1:8000"
    api_key: str | None = None


class ApiError(Exception):
    """An error answer of the API (RFC 9457 problem details)."""

    def __init__(self, *, status: int, title: str, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status, self.title, self.detail, self.errors = status, title, detail, list(errors or [])

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        return cls(
            status=response.status_code,
            title=str(body.get("title") or response.reason_phrase),
            detail=str(body.get("detail") or response.text[:500]),
            errors=list(body.get("errors") or []),
        )


@dataclass(frozen=True)
class JobEvent:
    """One Server-Sent Event of a job: ``event`` is ``status`` or ``epoch``; ``data`` its JSON."""

    id: int
    event: str
    data: dict[str, Any]


Progress = Callable[[JobEvent], None]


class Client:
    """``Client(base_url, api_key)``; both default to ``RAREFIT_URL`` / ``RAREFIT_API_KEY``."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        defaults = ClientSettings()
        key = api_key or defaults.api_key
        if not key:
            raise ValueError("an API key is needed: pass api_key= or set RAREFIT_API_KEY")
        self._http = httpx.Client(
            base_url=(base_url or defaults.url).rstrip("/"),
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- datasets -------------------------------------------------------
    def upload_dataset(self, path: str | Path, *, name: str | None = None) -> DatasetOut:
        path = Path(path)
        with path.open("rb") as handle:
            files = {"file": (path.name, handle, "application/octet-stream")}
            data = {"name": name} if name else None
            return self._call(DatasetOut, "POST", "/v1/datasets", files=files, data=data)

    def list_datasets(self, *, limit: int = 50) -> list[DatasetOut]:
        return self._page(DatasetOut, "/v1/datasets", limit=limit)

    def get_dataset(self, dataset_id: str) -> DatasetOut:
        return self._call(DatasetOut, "GET", f"/v1/datasets/{dataset_id}")

    # --- jobs -----------------------------------------------------------
    def submit_job(
        self,
        spec: dict[str, Any] | BaseModel,
        *,
        wait: bool = False,
        progress: Progress | None = None,
        idempotency_key: str | None = None,
    ) -> JobOut:
        body = spec.model_dump(mode="json") if isinstance(spec, BaseModel) else spec
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        job = self._call(JobOut, "POST", "/v1/jobs", json=body, headers=headers)
        return self.wait(job, progress=progress) if wait else job

    def get_job(self, job_id: str) -> JobOut:
        return self._call(JobOut, "GET", f"/v1/jobs/{job_id}")

    def list_jobs(self, *, status: str | None = None, limit: int = 50) -> list[JobOut]:
        return self._page(JobOut, "/v1/jobs", limit=limit, status=status)

    def cancel_job(self, job_id: str) -> JobOut:
        return self._call(JobOut, "POST", f"/v1/jobs/{job_id}/cancel")

    def metrics(self, job_id: str, *, since_epoch: int = 0) -> MetricsOut:
        return self._call(MetricsOut, "GET", f"/v1/jobs/{job_id}/metrics", params={"since_epoch": since_epoch})

    def list_artifacts(self, job_id: str) -> list[ArtifactOut]:
        response = self._send("GET", f"/v1/jobs/{job_id}/artifacts")
        return [ArtifactOut.model_validate(item) for item in response.json()]

    def download_artifact(self, job_id: str, name: str, destination: str | Path) -> Path:
        """Stream the artefact to ``destination`` (a file, or a folder to put ``name`` in)."""
        target = Path(destination)
        target = target / name if target.is_dir() else target
        with self._http.stream("GET", f"/v1/jobs/{job_id}/artifacts/{name}") as response:
            if response.is_error:
                response.read()
                raise ApiError.from_response(response)
            with target.open("wb") as handle:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
        return target

    def events(self, job_id: str, *, last_event_id: int | None = None) -> Iterator[JobEvent]:
        """The job's events from the start (or after ``last_event_id``) until the job ends."""
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
        with connect_sse(self._http, "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=None) as source:
            if source.response.is_error:
                source.response.read()
                raise ApiError.from_response(source.response)
            for sse in source.iter_sse():
                if not sse.data:
                    continue  # a heartbeat: httpx-sse reports a comment after an event as an empty message
                yield JobEvent(id=int(sse.id), event=sse.event, data=json.loads(sse.data))

    def wait(self, job: JobOut | str, *, progress: Progress | None = None, poll_seconds: float = 2.0) -> JobOut:
        """Block until the job ends and return it; ``progress`` sees each event (or each polled change)."""
        job_id = job if isinstance(job, str) else job.id
        try:
            self._follow(job_id, progress)
        except (SSEError, ApiError) as exc:
            if isinstance(exc, ApiError) and exc.status not in (404, 405, 406, 501):
                raise
            logger.info("event stream unavailable (%s); polling job %s", exc, job_id)
            return self._poll(job_id, progress, poll_seconds)
        return self.get_job(job_id)

    # --- models ---------------------------------------------------------
    def list_models(self, *, limit: int = 50) -> list[ModelOut]:
        return self._page(ModelOut, "/v1/models", limit=limit)

    def get_model(self, model_id: str) -> ModelOut:
        return self._call(ModelOut, "GET", f"/v1/models/{model_id}")

    def predict(self, model_id: str, images: Iterable[str | Path | bytes]) -> PredictOut:
        """Classify image files (paths) or encoded image bytes in one request."""
        files = []
        for number, image in enumerate(images):
            content = image if isinstance(image, bytes) else Path(image).read_bytes()
            name = f"image{number}" if isinstance(image, bytes) else Path(image).name
            files.append(("files", (name, content, "application/octet-stream")))
        return self._call(PredictOut, "POST", f"/v1/models/{model_id}/predict", files=files)

    # --- plumbing -------------------------------------------------------
    def _follow(self, job_id: str, progress: Progress | None) -> None:
        """Read the stream to its end, reconnecting after the last event seen when the connection drops."""
        last: int | None = None
        for attempt in range(1, 6):
            try:
                for event in self.events(job_id, last_event_id=last):
                    last = event.id
                    if progress is not None:
                        progress(event)
                return
            except httpx.TransportError as exc:
                logger.info("event stream of job %s dropped (%s); resuming after %s", job_id, exc, last)
                time.sleep(min(2.0**attempt, 10.0))
        raise SSEError(f"the event stream of job {job_id} kept dropping")

    def _poll(self, job_id: str, progress: Progress | None, poll_seconds: float) -> JobOut:
        etag, seen = None, 0
        while True:
            response = self._send("GET", f"/v1/jobs/{job_id}", headers={"If-None-Match": etag} if etag else None)
            if response.status_code != 304:
                etag, job = response.headers.get("ETag"), JobOut.model_validate(response.json())
                if progress is not None and job.progress.epoch != seen:
                    seen = job.progress.epoch
                    progress(JobEvent(id=0, event="epoch", data={"epoch": seen}))
                if job.status in FINAL:
                    return job
            time.sleep(poll_seconds)

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, url, **kwargs)
        if response.is_error:
            raise ApiError.from_response(response)
        return response

    def _call(self, schema: type[Any], method: str, url: str, **kwargs: Any) -> Any:
        return schema.model_validate(self._send(method, url, **kwargs).json())

    def _page(self, schema: type[Any], url: str, *, limit: int, **params: Any) -> list[Any]:
        query = {"limit": limit, **{k: v for k, v in params.items() if v is not None}}
        return [schema.model_validate(item) for item in self._send("GET", url, params=query).json()["items"]]
