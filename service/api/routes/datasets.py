"""Datasets: upload (decoded once into canonical arrays), list, read, delete."""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from rarefit.schemas import DatasetOut, Page
from service.api.deps import BlobStoreDep, LimitQuery, OffsetQuery, SessionDep, SettingsDep, TenantDep
from service.api.upload import IngestResult, ingest_upload
from service.errors import ProblemError, not_found, problem_responses
from service.ingest import IngestLimits, load_split
from service.models import new_id
from service.repository import datasets as repo
from service.sample_grid import MAX_PER_CLASS, render_grid
from service.schemas import dataset_out
from service.storage import BlobStore

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/datasets", tags=["datasets"])

MAX_NAME_CHARS = 200
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip", ".npz")
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f]+")
Split = Literal["train", "val", "test"]  # service.ingest.SPLITS, spelled out for the schema and the type checker


def dataset_name(*, given: str | None, filename: str | None) -> str:
    """The dataset's display name: the given one, else the upload's file name without
    directories or archive suffix; control characters removed, at most 200 characters."""
    if given is not None and given.strip():
        raw = given
    else:
        raw = re.split(r"[/\\]", filename or "")[-1]
        for suffix in _ARCHIVE_SUFFIXES:
            if raw.lower().endswith(suffix):
                raw = raw[: -len(suffix)]
                break
    name = " ".join(_UNSAFE_CHARS.sub(" ", raw).split())[:MAX_NAME_CHARS].strip()
    return name or "dataset"


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetOut,
    summary="Upload a dataset (.npz, ImageFolder .zip/.tar.gz, or .zip with labels.csv)",
    responses=problem_responses(
        400,
        413,
        415,
        422,
        507,
        s400="a malformed multipart body",
        s422="malformed or unsafe content, or a bad form field",
    ),
)
async def upload_dataset(
    response: Response,
    session: SessionDep,
    tenant_id: TenantDep,
    settings: SettingsDep,
    store: BlobStoreDep,
    file: Annotated[UploadFile, File(description="the dataset archive")],
    name: Annotated[str | None, Form(max_length=MAX_NAME_CHARS, description="display name")] = None,
) -> DatasetOut:
    dataset_id = new_id()
    # Streams the upload to this process's scratch disk, then parses in a worker thread (the event loop stays free).
    result = await ingest_upload(
        file,
        store=store,
        dataset_id=dataset_id,
        limits=IngestLimits.from_settings(settings),
        max_upload_bytes=settings.max_upload_bytes,
        scratch=settings.scratch_path,
    )
    row = await run_in_threadpool(
        _record,
        session,
        store=store,
        tenant_id=tenant_id,
        dataset_id=dataset_id,
        name=dataset_name(given=name, filename=file.filename),
        result=result,
    )
    logger.info("tenant %s uploaded dataset %s (%s)", tenant_id, dataset_id, result.format)
    response.headers["Location"] = f"/v1/datasets/{dataset_id}"
    return dataset_out(row)


def _record(session: Session, *, store: BlobStore, tenant_id: str, dataset_id: str, name: str, result: IngestResult):
    """Insert and commit the row; if that fails, remove the stored arrays so nothing is left."""
    try:
        row = repo.add_dataset(
            session,
            tenant_id=tenant_id,
            dataset_id=dataset_id,
            name=name,
            format=result.format,
            summary=result.summary,
            diagnostics=result.diagnostics,
            advice=result.advice,
            blob_prefix=result.blob_prefix,
            size_bytes=result.size_bytes,
        )
        session.commit()
    except BaseException:
        session.rollback()
        store.delete(result.blob_prefix)
        raise
    return row


@router.get("", response_model=Page[DatasetOut], summary="List datasets, newest first")
def list_datasets(
    session: SessionDep, tenant_id: TenantDep, limit: LimitQuery = 50, offset: OffsetQuery = 0
) -> Page[DatasetOut]:
    rows = repo.list_datasets(session, tenant_id=tenant_id, limit=limit + 1, offset=offset)
    return Page[DatasetOut].of(rows, limit=limit, offset=offset, convert=dataset_out)


@router.get("/{dataset_id}", response_model=DatasetOut, summary="One dataset", responses=problem_responses(404))
def get_dataset(dataset_id: str, session: SessionDep, tenant_id: TenantDep) -> DatasetOut:
    return dataset_out(_dataset_or_404(session, tenant_id=tenant_id, dataset_id=dataset_id))


@router.get(
    "/{dataset_id}/samples.png",
    response_class=Response,
    summary="Sample images of a split as one PNG grid: a row per class, labelled with its name and count",
    description="The first `per_class` images of each class in stored order (the same request draws the same "
    "grid); a class with fewer images leaves its remaining cells blank. At most 100 class rows.",
    responses={200: {"content": {"image/png": {}}, "description": "the image"}, **problem_responses(404, 422)},
)
def dataset_samples(
    dataset_id: str,
    session: SessionDep,
    tenant_id: TenantDep,
    settings: SettingsDep,
    store: BlobStoreDep,
    split: Annotated[Split, Query(description="which split's images")] = "train",
    per_class: Annotated[int, Query(ge=1, le=MAX_PER_CLASS, description="images per class (columns)")] = 8,
) -> Response:
    row = _dataset_or_404(session, tenant_id=tenant_id, dataset_id=dataset_id)
    prefix, class_names = row.blob_prefix, [str(name) for name in row.class_names]
    session.close()  # the arrays are read without holding a database connection
    scratch = settings.scratch_path
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="samples-", dir=scratch) as staging:
        images, labels = load_split(store, prefix, split=split, staging=Path(staging))
        png = render_grid(images=images, labels=labels, class_names=class_names, per_class=per_class, split=split)
    # no-cache: a browser's cache is keyed by URL, not by key, so each view asks again (and the tenant check runs).
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})


@router.delete(
    "/{dataset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a dataset and its stored arrays",
    responses=problem_responses(404, 409, s409="a queued or running job uses the dataset"),
)
def delete_dataset(dataset_id: str, session: SessionDep, tenant_id: TenantDep, store: BlobStoreDep) -> Response:
    row = _dataset_or_404(session, tenant_id=tenant_id, dataset_id=dataset_id)
    blob_prefix = row.blob_prefix
    if repo.dataset_in_use(session, tenant_id=tenant_id, dataset_id=dataset_id) or not repo.delete_dataset(
        session, tenant_id=tenant_id, dataset_id=dataset_id
    ):
        session.rollback()
        raise ProblemError(
            409, "Conflict", f"dataset {dataset_id} is used by a queued or running job; cancel it or wait"
        )
    session.commit()
    # Blobs go after the row: a crash in between leaves orphaned blobs, never a row without data.
    store.delete(blob_prefix)
    logger.info("tenant %s deleted dataset %s", tenant_id, dataset_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _dataset_or_404(session: Session, *, tenant_id: str, dataset_id: str):
    row = repo.get_dataset(session, tenant_id=tenant_id, dataset_id=dataset_id)
    if row is None:
        raise not_found("dataset", dataset_id)
    return row
