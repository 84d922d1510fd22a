"""A Python client for the rarefit HTTP API (httpx), returning the API's own bodies (``rarefit.schemas``).

```
from rarefit.client import Client
with Client("http://127.0.0.1:8000", api_key="...") as rf:
    dataset = rf.upload_dataset("pneumoniamnist.npz")
    job = rf.submit_job({"dataset_id": dataset.id, "epochs": 3}, wait=True)
    print(rf.metrics(job.id).test)
    search = rf.create_experiment({"dataset_id": dataset.id, "search": {"strategy": "auto"}}, wait=True)
    print(search.best)
```
Every error answer (``application/problem+json``) raises ``ApiError`` with
its ``status``, ``title``, ``detail`` and ``errors``. ``wait`` and
``wait_experiment`` follow the Server-Sent Events (resuming with
``Last-Event-ID`` after a dropped connection) and fall back to polling
(with ``If-None-Match`` where the API answers an ``ETag``) when the stream is
unavailable, e.g. behind a proxy that refuses or buffers it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from httpx_sse import SSEError, connect_sse
from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict

from rarefit.schemas import (
    AliasOut,
    ArtifactOut,
    DatasetOut,
    ExperimentOut,
    ExperimentSummaryOut,
    JobOut,
    MetricsOut,
    ModelOut,
    PredictOut,
)

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
class Event:
    """One Server-Sent Event: ``status`` (a job's or an experiment's state change) or ``epoch`` (a job's epoch).

    ``data`` is its JSON; ``id`` is 0 for a change seen by polling instead of on the stream.
    """

    id: int
    event: str
    data: dict[str, Any]


Progress = Callable[[Event], None]
Body = TypeVar("Body", bound=BaseModel)
Ending = TypeVar("Ending", JobOut, ExperimentOut)  # what a wait returns: a body with a final ``status``


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
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        job = self._call(JobOut, "POST", "/v1/jobs", json=_body(spec), headers=headers)
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

    def events(self, job_id: str, *, last_event_id: int | None = None) -> Iterator[Event]:
        """The job's events from the start (or after ``last_event_id``) until the job ends."""
        return self._events(f"/v1/jobs/{job_id}/events", last_event_id=last_event_id)

    def wait(self, job: JobOut | str, *, progress: Progress | None = None, poll_seconds: float = 2.0) -> JobOut:
        """Block until the job ends and return it; ``progress`` sees each event (or each polled epoch)."""
        job_id = job if isinstance(job, str) else job.id
        return self._wait(
            f"/v1/jobs/{job_id}",
            JobOut,
            progress=progress,
            poll_seconds=poll_seconds,
            polled=lambda found: Event(id=0, event="epoch", data={"epoch": found.progress.epoch}),
            before={"epoch": 0},
        )

    # --- experiments ----------------------------------------------------
    def create_experiment(
        self, request: dict[str, Any] | BaseModel, *, wait: bool = False, progress: Progress | None = None
    ) -> ExperimentOut:
        """Start a search (every trial is checked first: an invalid one is a 422 naming its field)."""
        experiment = self._call(ExperimentOut, "POST", "/v1/experiments", json=_body(request))
        return self.wait_experiment(experiment, progress=progress) if wait else experiment

    def get_experiment(self, experiment_id: str) -> ExperimentOut:
        return self._call(ExperimentOut, "GET", f"/v1/experiments/{experiment_id}")

    def list_experiments(self, *, status: str | None = None, limit: int = 50) -> list[ExperimentSummaryOut]:
        return self._page(ExperimentSummaryOut, "/v1/experiments", limit=limit, status=status)

    def cancel_experiment(self, experiment_id: str) -> ExperimentOut:
        return self._call(ExperimentOut, "POST", f"/v1/experiments/{experiment_id}/cancel")

    def experiment_events(self, experiment_id: str, *, last_event_id: int | None = None) -> Iterator[Event]:
        """The experiment's ``status`` events from the start (or after ``last_event_id``) until it ends."""
        return self._events(f"/v1/experiments/{experiment_id}/events", last_event_id=last_event_id)

    def wait_experiment(
        self,
        experiment: ExperimentOut | ExperimentSummaryOut | str,
        *,
        progress: Progress | None = None,
        poll_seconds: float = 2.0,
    ) -> ExperimentOut:
        """Block until the experiment ends and return it with its leaderboard; ``progress`` sees each change."""
        experiment_id = experiment if isinstance(experiment, str) else experiment.id
        return self._wait(
            f"/v1/experiments/{experiment_id}",
            ExperimentOut,
            progress=progress,
            poll_seconds=poll_seconds,
            polled=lambda found: Event(
                id=0,
                event="status",
                data={
                    "experiment_id": found.id,
                    "status": found.status,
                    "trials_total": found.progress.trials_total,
                    "error": found.error,
                },
            ),
            before=None,
        )

    # --- models ---------------------------------------------------------
    def list_models(self, *, limit: int = 50) -> list[ModelOut]:
        return self._page(ModelOut, "/v1/models", limit=limit)

    def get_model(self, model_id: str) -> ModelOut:
        """One model with its operating point and the ``history`` of every operating point it has had."""
        return self._call(ModelOut, "GET", f"/v1/models/{model_id}")

    def update_operating_point(self, model_id: str, *, threshold: dict[str, Any] | BaseModel) -> ModelOut:
        """Re-fit the operating point on the stored val scores (a threshold policy such as
        ``{"strategy": "precision_at_least", "value": 0.9}``); predict applies it at once."""
        return self._call(ModelOut, "PATCH", f"/v1/models/{model_id}", json={"threshold": _body(threshold)})

    def list_aliases(self) -> list[AliasOut]:
        return [AliasOut.model_validate(item) for item in self._send("GET", "/v1/models/aliases").json()]

    def set_alias(self, alias: str, *, model_id: str) -> AliasOut:
        """Point ``alias`` (e.g. ``production``) at a model, creating or moving it."""
        return self._call(AliasOut, "PUT", f"/v1/models/aliases/{alias}", json={"model_id": model_id})

    def get_alias(self, alias: str) -> AliasOut:
        return self._call(AliasOut, "GET", f"/v1/models/aliases/{alias}")

    def delete_alias(self, alias: str) -> None:
        self._send("DELETE", f"/v1/models/aliases/{alias}")

    def predict(
        self, model_id: str, images: Iterable[str | Path | bytes], *, threshold: float | None = None
    ) -> PredictOut:
        """Classify image files (paths) or encoded image bytes in one request; ``threshold`` overrides the
        card's for a binary model."""
        return self._predict(f"/v1/models/{model_id}/predict", images, threshold=threshold)

    def predict_by_alias(
        self, alias: str, images: Iterable[str | Path | bytes], *, threshold: float | None = None
    ) -> PredictOut:
        """``predict`` with the model ``alias`` names now (the answer's ``model_id`` says which)."""
        return self._predict(f"/v1/models/by-alias/{alias}/predict", images, threshold=threshold)

    # --- plumbing -------------------------------------------------------
    def _predict(self, url: str, images: Iterable[str | Path | bytes], *, threshold: float | None) -> PredictOut:
        files = []
        for number, image in enumerate(images):
            content = image if isinstance(image, bytes) else Path(image).read_bytes()
            name = f"image{number}" if isinstance(image, bytes) else Path(image).name
            files.append(("files", (name, content, "application/octet-stream")))
        data = None if threshold is None else {"threshold": str(threshold)}
        return self._call(PredictOut, "POST", url, files=files, data=data)

    def _events(self, url: str, *, last_event_id: int | None) -> Iterator[Event]:
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
        with connect_sse(self._http, "GET", url, headers=headers, timeout=None) as source:
            if source.response.is_error:
                source.response.read()
                raise ApiError.from_response(source.response)
            for sse in source.iter_sse():
                if not sse.data:
                    continue  # a heartbeat: httpx-sse reports a comment after an event as an empty message
                yield Event(id=int(sse.id), event=sse.event, data=json.loads(sse.data))

    def _wait(
        self,
        url: str,
        schema: type[Ending],
        *,
        progress: Progress | None,
        poll_seconds: float,
        polled: Callable[[Ending], Event],
        before: dict[str, Any] | None,
    ) -> Ending:
        """Follow ``url``'s event stream to its end, then read ``url``; poll it when the stream is unavailable.

        Any stream failure falls back: a missing or refused stream (404, 502 from a proxy), an answer that
        is not an event stream, or one that keeps dropping. A real problem with the object itself (gone,
        not this tenant's) is answered again, and raised, by the first poll.
        """
        try:
            self._follow(f"{url}/events", progress)
        except (SSEError, ApiError) as exc:
            logger.info("event stream of %s unavailable (%s); polling", url, exc)
            return self._poll(url, schema, progress=progress, poll_seconds=poll_seconds, polled=polled, before=before)
        return self._call(schema, "GET", url)

    def _follow(self, url: str, progress: Progress | None) -> None:
        """Read the stream to its end, reconnecting after the last event seen when the connection drops."""
        last: int | None = None
        for attempt in range(1, 6):
            try:
                for event in self._events(url, last_event_id=last):
                    last = event.id
                    if progress is not None:
                        progress(event)
                return
            except SSEError:
                raise  # an answer that is not an event stream (httpx-sse's error is a TransportError too)
            except httpx.TransportError as exc:
                logger.info("event stream %s dropped (%s); resuming after %s", url, exc, last)
                time.sleep(min(2.0**attempt, 10.0))
        raise SSEError(f"the event stream {url} kept dropping")

    def _poll(
        self,
        url: str,
        schema: type[Ending],
        *,
        progress: Progress | None,
        poll_seconds: float,
        polled: Callable[[Ending], Event],
        before: dict[str, Any] | None,
    ) -> Ending:
        """GET ``url`` until it is final; ``progress`` sees ``polled(body)`` whenever its data changes."""
        etag, seen = None, before
        while True:
            response = self._send("GET", url, headers={"If-None-Match": etag} if etag else None)
            if response.status_code != 304:
                etag, found = response.headers.get("ETag"), schema.model_validate(response.json())
                event = polled(found)
                if progress is not None and event.data != seen:
                    seen = event.data
                    progress(event)
                if found.status in FINAL:
                    return found
            time.sleep(poll_seconds)

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, url, **kwargs)
        if response.is_error:
            raise ApiError.from_response(response)
        return response

    def _call(self, schema: type[Body], method: str, url: str, **kwargs: Any) -> Body:
        return schema.model_validate(self._send(method, url, **kwargs).json())

    def _page(self, schema: type[Body], url: str, *, limit: int, **params: Any) -> list[Body]:
        query = {"limit": limit, **{k: v for k, v in params.items() if v is not None}}
        return [schema.model_validate(item) for item in self._send("GET", url, params=query).json()["items"]]


def _body(value: dict[str, Any] | BaseModel) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value
