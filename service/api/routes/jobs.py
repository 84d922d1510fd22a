"""Training jobs: submit (validated, idempotent, capped), poll, cancel, metrics, artefacts."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated, BinaryIO
from urllib.parse import quote

from fastapi import APIRouter, Body, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from rarefit.schemas import ArtifactOut, JobOut, MetricsOut, Page
from service.api.deps import (
    BlobStoreDep,
    CeleryDep,
    LimitQuery,
    OffsetQuery,
    SessionDep,
    SettingsDep,
    TenantDep,
    read_in_session,
)
from service.api.etag import NOT_MODIFIED, IfNoneMatch, json_or_not_modified
from service.config import Settings
from service.defaults import with_dataset_defaults
from service.errors import ProblemError, conflict_as_409, dotted, field_error, not_found, problem_responses, shown
from service.ingest import stored_dataset_violations
from service.models import Dataset, Job, JobStatus, utcnow
from service.queue import enqueue_job
from service.repository import datasets as dataset_repo
from service.repository import jobs as repo
from service.schemas import JOB_SPEC_EXAMPLES, artifact_out, epoch_out, job_out
from service.spec import JobSpec
from service.violations import limit_violations

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/jobs", tags=["jobs"])

_CHUNK = 1024 * 1024
IdempotencyKey = Annotated[
    str | None,
    Header(min_length=1, max_length=200, description="retries with the same key return the first job"),
]


def spec_hash(spec: JobSpec) -> str:
    """sha256 of the validated spec's canonical JSON (defaults filled in, keys sorted)."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    summary="Submit a training job",
    responses=problem_responses(
        400,
        404,
        422,
        429,
        s400="a body that is not UTF-8 text",
        s404="the dataset does not exist for this tenant",
        s422="invalid spec (`errors` names each field), a server limit exceeded, or Idempotency-Key reused",
    ),
)
def submit_job(
    spec: Annotated[JobSpec, Body(openapi_examples=JOB_SPEC_EXAMPLES)],
    response: Response,
    session: SessionDep,
    tenant_id: TenantDep,
    settings: SettingsDep,
    celery_app: CeleryDep,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    _check_limits(spec, settings)
    request_hash = spec_hash(spec)
    existing = _previous(session, tenant_id=tenant_id, key=idempotency_key, settings=settings)
    if existing is None:
        dataset = _check_dataset(session, tenant_id=tenant_id, spec=spec)
        spec, notes = with_dataset_defaults(spec, dataset=dataset)
        if notes:
            logger.info("dataset-aware defaults for tenant %s: %s", tenant_id, "; ".join(notes))
        _check_init(session, tenant_id=tenant_id, spec=spec)
        _check_capacity(session, tenant_id=tenant_id, settings=settings)
        job, created = _insert(session, tenant_id=tenant_id, spec=spec, key=idempotency_key, request_hash=request_hash)
        if created:
            _enqueue(session, celery_app=celery_app, job=job)
            logger.info("tenant %s submitted job %s", tenant_id, job.id)
    else:
        job = existing
    _same_body_or_422(job, request_hash)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_out(job)


@router.get("", response_model=Page[JobOut], summary="List jobs, newest first")
def list_jobs(
    session: SessionDep,
    tenant_id: TenantDep,
    status_: Annotated[JobStatus | None, Query(alias="status", description="only jobs in this state")] = None,
    experiment_id: Annotated[
        str | None, Query(min_length=1, max_length=64, description="only the trials of this experiment")
    ] = None,
    limit: LimitQuery = 50,
    offset: OffsetQuery = 0,
) -> Page[JobOut]:
    rows = repo.list_jobs(
        session, tenant_id=tenant_id, status=status_, limit=limit + 1, offset=offset, experiment_id=experiment_id
    )
    return Page[JobOut].of(rows, limit=limit, offset=offset, convert=job_out)


@router.get(
    "/{job_id}",
    response_model=JobOut,
    summary="One job (poll it with If-None-Match, or follow /events)",
    responses={**NOT_MODIFIED, **problem_responses(404)},
)
async def get_job(job_id: str, request: Request, tenant_id: TenantDep, if_none_match: IfNoneMatch = None) -> Response:
    job = await read_in_session(
        request, lambda session: job_out(_job_or_404(session, tenant_id=tenant_id, job_id=job_id))
    )
    return json_or_not_modified(job, if_none_match)


@router.post(
    "/{job_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    summary="Cancel a job: a queued one at once, a running one within one epoch",
    responses=problem_responses(404, 409, s409="the job already finished"),
)
def cancel_job(job_id: str, session: SessionDep, tenant_id: TenantDep) -> JobOut:
    with conflict_as_409(session, repo.JobConflict):
        job = repo.request_cancel(session, tenant_id=tenant_id, job_id=job_id)
    if job is None:
        raise not_found("job", job_id)
    session.commit()
    logger.info("tenant %s cancelled job %s (now %s)", tenant_id, job_id, job.status)
    return job_out(job)


@router.get(
    "/{job_id}/metrics",
    response_model=MetricsOut,
    summary="Per-epoch history and test metrics",
    responses={**NOT_MODIFIED, **problem_responses(404)},
)
def get_metrics(
    job_id: str,
    session: SessionDep,
    tenant_id: TenantDep,
    since_epoch: Annotated[int, Query(ge=0, le=1_000_000, description="only epochs after this one")] = 0,
    if_none_match: IfNoneMatch = None,
) -> Response:
    job = _job_or_404(session, tenant_id=tenant_id, job_id=job_id)
    rows = repo.list_epoch_metrics(session, job_id=job.id, since_epoch=since_epoch)
    metrics = MetricsOut(history=[epoch_out(row) for row in rows], best_epoch=job.best_epoch, test=job.test_metrics)
    return json_or_not_modified(metrics, if_none_match)


@router.get(
    "/{job_id}/artifacts",
    response_model=list[ArtifactOut],
    summary="The job's artefacts",
    responses=problem_responses(404),
)
def list_artifacts(job_id: str, session: SessionDep, tenant_id: TenantDep) -> list[ArtifactOut]:
    job = _job_or_404(session, tenant_id=tenant_id, job_id=job_id)
    return [artifact_out(row) for row in repo.list_artifacts(session, job_id=job.id)]


@router.get(
    "/{job_id}/artifacts/{name}",
    response_class=StreamingResponse,
    summary="Download one artefact",
    # The stored file's own type: binary for the program and weights, JSON for the card and metrics.
    responses={
        200: {"content": {"application/octet-stream": {}, "application/json": {}}, "description": "the file"},
        **problem_responses(404),
    },
)
def download_artifact(
    job_id: str, name: str, session: SessionDep, tenant_id: TenantDep, store: BlobStoreDep
) -> StreamingResponse:
    job = _job_or_404(session, tenant_id=tenant_id, job_id=job_id)
    artifact = repo.get_artifact(session, job_id=job.id, name=name)
    if artifact is None:
        raise ProblemError(404, "Not Found", f"job {job.id} has no artifact {shown(name)}")
    try:
        size = store.size(artifact.blob_key)
        handle = store.open_read(artifact.blob_key)
    except FileNotFoundError:
        logger.error("artifact %s of job %s is missing from the blob store", name, job.id)
        raise ProblemError(404, "Not Found", f"artifact {shown(name)} of job {job.id} is no longer stored") from None
    headers = {
        "Content-Length": str(size),
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(artifact.name, safe='')}",
    }
    return StreamingResponse(_chunks(handle), media_type=artifact.content_type, headers=headers)


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(_CHUNK):
            yield chunk


def _job_or_404(session: Session, *, tenant_id: str, job_id: str) -> Job:
    job = repo.get_job(session, tenant_id=tenant_id, job_id=job_id)
    if job is None:
        raise not_found("job", job_id)
    return job


def _unprocessable(problems: list[tuple[tuple[str, ...], str]]) -> ProblemError:
    errors = [field_error(("body", *path), message) for path, message in problems]
    detail = "; ".join(f"{dotted(path)}: {message}" for path, message in problems)
    return ProblemError(422, "Validation failed", detail, errors=errors)


def _check_limits(spec: JobSpec, settings: Settings) -> None:
    problems = limit_violations(
        spec,
        max_epochs=settings.max_epochs,
        max_batch_size=settings.max_batch_size,
        max_image_size=settings.max_image_size,
        max_job_seconds=settings.max_job_seconds,
    )
    if problems:
        raise _unprocessable(problems)


def _check_dataset(session: Session, *, tenant_id: str, spec: JobSpec) -> Dataset:
    dataset = dataset_repo.get_dataset(session, tenant_id=tenant_id, dataset_id=spec.dataset_id)
    if dataset is None:
        raise not_found("dataset", spec.dataset_id)
    problems = stored_dataset_violations(spec, dataset=dataset)
    if problems:
        raise _unprocessable(problems)
    return dataset


def _check_init(session: Session, *, tenant_id: str, spec: JobSpec) -> None:
    """``model.init = "job:<id>"`` must name one of the tenant's jobs that registered a model."""
    init = spec.model.init_source
    if init is None or init.kind != "job":
        return
    source_id = init.name
    source = repo.get_job(session, tenant_id=tenant_id, job_id=source_id)
    if source is None:
        raise _unprocessable([(("model", "init"), f"job {source_id} not found")])
    if source.model_id is None:
        raise _unprocessable([(("model", "init"), f"job {source_id} has no model (status {source.status.value})")])


def _check_capacity(session: Session, *, tenant_id: str, settings: Settings) -> None:
    cap = settings.max_concurrent_jobs_per_tenant
    if repo.count_active_jobs(session, tenant_id=tenant_id) >= cap:
        raise ProblemError(
            429,
            "Too Many Requests",
            f"this tenant already has {cap} queued or running jobs (the limit); wait for one to finish",
            headers={"Retry-After": "30"},
        )


def _previous(session: Session, *, tenant_id: str, key: str | None, settings: Settings) -> Job | None:
    """The job an earlier request with this Idempotency-Key created, if still within its TTL."""
    if key is None:
        return None
    older_than = utcnow() - timedelta(hours=settings.idempotency_ttl_hours)
    repo.expire_idempotency_key(session, tenant_id=tenant_id, key=key, older_than=older_than)
    return repo.find_by_idempotency_key(session, tenant_id=tenant_id, key=key)


def _same_body_or_422(job: Job, request_hash: str) -> None:
    if job.request_hash is not None and job.request_hash != request_hash:
        raise ProblemError(
            422,
            "Idempotency-Key reused",
            "Idempotency-Key reused with a different body; use a new key for a different job",
        )


def _insert(session: Session, *, tenant_id: str, spec: JobSpec, key: str | None, request_hash: str) -> tuple[Job, bool]:
    """Insert and commit the job; on an Idempotency-Key race, the winner's job instead."""
    try:
        job = repo.create_job(session, tenant_id=tenant_id, spec=spec, idempotency_key=key, request_hash=request_hash)
        session.commit()
        return job, True
    except IntegrityError:
        session.rollback()
        winner = repo.find_by_idempotency_key(session, tenant_id=tenant_id, key=key) if key else None
        if winner is None:
            raise
        return winner, False


def _enqueue(session: Session, *, celery_app, job: Job) -> None:
    """Send the message after the commit; a broker failure leaves the job queued for the reaper."""
    try:
        enqueue_job(celery_app, job.id)
    except Exception as exc:  # the broker's errors vary by transport; the job is safe in the database
        logger.warning("could not enqueue job %s (%s); the reaper will re-send it", job.id, type(exc).__name__)
        return
    try:
        repo.mark_enqueued(session, job_id=job.id, now=utcnow())
        session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        logger.warning("could not stamp job %s as enqueued (%s)", job.id, type(exc).__name__)
