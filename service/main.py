"""The FastAPI application factory: ``create_app(settings)``; nothing is built at import time.

Run it with ``uvicorn --factory service.main:asgi`` (settings from the
environment) or through ``rarefit serve`` / ``rarefit api``. Migrations are not
run here: ``rarefit migrate``, ``rarefit serve`` or the deployment's one-shot
job do that before the API starts.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

import anyio
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy.exc import IntegrityError

from service.api.body_limit import BodySizeLimitMiddleware
from service.api.request_context import RequestContextMiddleware
from service.api.router import build_router
from service.auth import KeyCache
from service.config import Settings, get_settings
from service.dashboard import install_dashboard
from service.db import make_engine, make_session_factory, transaction
from service.errors import install_error_handlers
from service.inference import Predictor
from service.logs import configure_logging
from service.migrate import current_revision, head_revision
from service.queue import make_celery
from service.reaper import ReaperThread
from service.repository import tenants
from service.storage import make_blob_store
from service.ttl_cache import TtlCache
from service.webhooks import WebhookDispatcher

logger = logging.getLogger(__name__)

BOOTSTRAP_TENANT = "default"
MULTIPART_SLACK_BYTES = 64 * 1024
DESCRIPTION = """\
Training as a service for class-imbalanced image classification.

Upload a dataset, submit a job spec (cross-entropy or focal loss, MixUp/CutMix,
class-balanced samplers, augmentation), poll it, read per-epoch metrics,
download the exported model and call the hosted predict endpoint.
Every `/v1` call needs `Authorization: Bearer <api-key>`; errors are
`application/problem+json` (RFC 9457).
"""


def _version() -> str:
    try:
        return version("rarefit")
    except PackageNotFoundError:
        return "0.1.0"


def create_app(settings: Settings | None = None, *, run_reaper: bool = True) -> FastAPI:
    """A new application for ``settings`` (default: from the environment)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="rarefit",
        description=DESCRIPTION,
        version=_version(),
        lifespan=_lifespan,
        docs_url=None,  # served from the package by install_dashboard, not from a CDN
        redoc_url=None,
        openapi_url="/openapi.json",
        generate_unique_id_function=operation_id,
    )
    app.state.settings = settings
    app.state.run_reaper = run_reaper
    install_error_handlers(app)
    # The middleware counts the whole multipart body (boundaries, part headers, the
    # `name` field) while save_upload enforces the exact limit on the file itself.
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_upload_bytes + MULTIPART_SLACK_BYTES,
        shown_limit=settings.max_upload_bytes,
    )
    app.add_middleware(RequestContextMiddleware)  # added last: outermost, so every answer is counted and named
    app.include_router(build_router())
    install_dashboard(app)
    return app


def operation_id(route: APIRoute) -> str:
    """The route function's name (``submit_job``), so generated clients read well; a test keeps them unique."""
    return route.name


def asgi() -> FastAPI:
    """Factory for ``uvicorn --factory service.main:asgi`` (also each ``rarefit api --workers N`` process)."""
    settings = get_settings()
    configure_logging(settings)
    return create_app(settings)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    engine = make_engine(settings.sqlalchemy_url)
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.key_cache = KeyCache(ttl_seconds=settings.auth_cache_seconds)
    app.state.model_refs = TtlCache(ttl_seconds=settings.auth_cache_seconds)
    app.state.read_limiter = anyio.CapacityLimiter(settings.api_read_threads)
    app.state.blob_store = make_blob_store(settings)
    app.state.celery = make_celery(settings)
    background: list = []
    try:
        _check_schema(engine)
        _bootstrap_key(app.state.session_factory, settings)
        app.state.predictor = Predictor(
            store=app.state.blob_store,
            max_cache_bytes=settings.model_cache_bytes,
            max_batch=settings.predict_max_batch,
            max_wait_ms=settings.predict_max_wait_ms,
            threads=settings.predict_threads,
            runtime=settings.inference_runtime,
        )
        if app.state.run_reaper:
            background += [
                ReaperThread(settings, app.state.session_factory, app.state.celery),
                WebhookDispatcher(settings, app.state.session_factory),
            ]
            for thread in background:
                thread.start()
        # torch and the app leave hundreds of thousands of long-lived objects; a full collection
        # walks them all and set the p99 of polling (benchmarks/RESULTS.md). Frozen, they are never
        # scanned again; what requests allocate is still collected.
        gc.collect()
        gc.freeze()
        yield
    finally:
        _shutdown(app, background)


def _shutdown(app: FastAPI, background: list) -> None:
    for thread in background:
        thread.stop()
    predictor = getattr(app.state, "predictor", None)
    if predictor is not None:
        predictor.close()
    app.state.celery.close()
    app.state.engine.dispose()


def _check_schema(engine) -> None:
    revision = current_revision(engine)
    if revision is None:
        raise RuntimeError("the database has no rarefit tables; run `rarefit migrate` first")
    if revision != head_revision():
        logger.warning(
            "database schema is at %s, this code expects %s; run `rarefit migrate`", revision, head_revision()
        )


def _bootstrap_key(session_factory, settings: Settings) -> None:
    """Make sure RAREFIT_BOOTSTRAP_API_KEY works for tenant 'default' (idempotent, race-safe)."""
    if settings.bootstrap_api_key is None:
        return
    plaintext = settings.bootstrap_api_key.get_secret_value()
    for attempt in range(3):
        try:
            with transaction(session_factory) as session:
                key = tenants.ensure_api_key(session, tenant_name=BOOTSTRAP_TENANT, plaintext=plaintext)
            logger.info("bootstrap API key (id %s) is present for tenant %r", key.id, BOOTSTRAP_TENANT)
            return
        except IntegrityError:
            # Another process (uvicorn worker) inserted the same tenant or key at the same moment.
            if attempt == 2:
                raise
