"""Request dependencies as ``Annotated`` aliases: routes declare what they need by type.

Everything comes from ``app.state`` (built by ``create_app``'s lifespan); no
module-level engines or settings. Tenant scoping starts here: ``TenantDep``
turns the bearer key into a tenant id that every repository call filters by.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, TypeVar

import anyio.to_thread
from celery import Celery
from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service.auth import KeyCache, looks_like_api_key
from service.config import Settings
from service.errors import ProblemError
from service.repository import tenants
from service.storage import BlobStore

T = TypeVar("T")

_bearer = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer rf_...`")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


# Plain attribute reads are async so FastAPI runs them inline instead of
# hopping to its thread pool, which the predict hot path would pay per request.
async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """One session per request; routes commit explicitly, anything uncommitted rolls back."""
    with request.app.state.session_factory() as session:
        yield session


async def read_in_session(request: Request, read: Callable[[Session], T]) -> T:
    """Run ``read`` with its own session in one hop to the hot-read threads, for hot read-only paths.

    A sync route with ``SessionDep`` costs three hops to the shared 40-thread
    pool (open the session, run the route, close it). Under a polling storm
    those threads fight over the interpreter lock, so a hot read makes one
    hop to a few dedicated threads (``api_read_threads``); their separate
    limiter also keeps polls from queueing behind uploads.

    ``read`` runs in autocommit: a single-statement read needs no transaction,
    and on PostgreSQL that drops the ``BEGIN`` and the ``ROLLBACK`` when the
    connection goes back to the pool, two of a poll's four round trips.
    ``read`` must therefore not write. (Measurements: ``benchmarks/RESULTS.md``,
    "Polling".)
    """

    def run() -> T:
        with request.app.state.session_factory() as session:
            session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            return read(session)

    return await anyio.to_thread.run_sync(run, limiter=request.app.state.read_limiter)


async def get_blob_store(request: Request) -> BlobStore:
    return request.app.state.blob_store


async def get_celery(request: Request) -> Celery:
    return request.app.state.celery


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
BlobStoreDep = Annotated[BlobStore, Depends(get_blob_store)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
LimitQuery = Annotated[int, Query(ge=1, le=500, description="page size")]
OffsetQuery = Annotated[int, Query(ge=0, le=10_000_000, description="items to skip")]


async def get_tenant_id(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The tenant of the bearer key; 401 for a missing, malformed, unknown or revoked key.

    A key authenticated in the last ``auth_cache_seconds`` skips the database
    (and the thread pool); otherwise one lookup, shared by the requests that
    miss at the same time, runs on the hot-read threads (``read_in_session``).
    """
    if credentials is None:
        raise _unauthorized("missing bearer API key: send 'Authorization: Bearer <api-key>'")
    key = credentials.credentials
    if not looks_like_api_key(key):
        raise _unauthorized("malformed API key")
    cache: KeyCache = request.app.state.key_cache
    tenant_id = await cache.resolve(key, lambda: read_in_session(request, lambda session: _lookup_tenant(session, key)))
    if tenant_id is None:
        raise _unauthorized("unknown or revoked API key")
    return tenant_id


def _lookup_tenant(session: Session, key: str) -> str | None:
    api_key = tenants.authenticate(session, plaintext=key)
    return None if api_key is None else api_key.tenant_id


TenantDep = Annotated[str, Depends(get_tenant_id)]


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, "Unauthorized", detail, headers=_CHALLENGE)
