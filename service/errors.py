"""RFC 9457 problem details: every error the API answers is ``application/problem+json``.

Bodies are ``{"type", "title", "status", "detail"}`` plus ``errors`` for
validation problems. Nothing here echoes request values, secrets or
filesystem paths back: validation errors drop pydantic's ``input`` and
``ctx``, and unexpected exceptions answer a bare 500 (logged server-side).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.ingest import DatasetRejected
from service.logs import REQUEST_ID_HEADER, request_id
from service.storage import StorageFull, StorageUnavailable

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
_LOCATION_ROOTS = ("body",)


class ProblemError(Exception):
    """Raise from a route to answer a problem+json response."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        type_: str = "about:blank",
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"problem status must be 4xx or 5xx, got {status}")
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.errors, self.type_, self.headers, self.extra = errors, type_, headers, extra


class ProblemOut(BaseModel):
    """RFC 9457 problem details, the body of every error (``application/problem+json``)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = Field(default=None, description="this request's id (the X-Request-ID response header)")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description='validation problems: [{"loc": [...], "msg": "...", "type": "..."}]'
    )


_PROBLEM_DESCRIPTIONS = {
    400: "malformed request",
    401: "missing, unknown or revoked API key",
    404: "no such object for this tenant",
    405: "method not allowed",
    409: "conflicts with the object's state",
    413: "request body too large",
    415: "unsupported media type or archive format",
    422: "invalid request: `errors` lists each bad field",
    429: "too many active jobs for this tenant",
    500: "unexpected server error (logged; no details are returned)",
    503: "a dependency (database, broker, blob store) is unavailable",
    507: "the server's disk or object store is full or over its quota; nothing was stored",
}


def problem_responses(*statuses: int, **descriptions: str) -> dict[int, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem+json bodies for ``statuses``.

    ``descriptions`` override the default text, keyed ``s404="..."``.
    """
    schema = ProblemOut.model_json_schema()
    return {
        status: {
            "description": descriptions.get(f"s{status}", _PROBLEM_DESCRIPTIONS.get(status, "error")),
            "content": {"application/problem+json": {"schema": schema}},
        }
        for status in statuses
    }


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    type_: str = "about:blank",
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type_,
        "title": title or _phrase(status),
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    if (current := request_id.get()) is not None:
        body["instance"] = current  # the X-Request-ID of this request: quote it to the operator
        # Set here as well as by the request middleware: the 500 for an unhandled exception is sent
        # by Starlette's ServerErrorMiddleware, outside it, and would otherwise go without the header.
        headers = {**(headers or {}), REQUEST_ID_HEADER: current}
    body.update(extra or {})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def field_error(loc: tuple[str, ...] | list[str], msg: str, type_: str = "value_error") -> dict[str, Any]:
    """One entry of a problem's ``errors`` list, shaped like FastAPI's validation errors."""
    return {"loc": list(loc), "msg": msg, "type": type_}


def dotted(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "loss", "gamma")`` -> ``"loss.gamma"`` (the request part is implied)."""
    parts = [str(part) for part in loc]
    if parts and parts[0] in _LOCATION_ROOTS and len(parts) > 1:
        parts = parts[1:]
    return ".".join(parts) or "request"


def not_found(kind: str, value: str) -> ProblemError:
    """404 naming the missing object; the client's id is shortened and escaped before echoing."""
    return ProblemError(404, "Not Found", f"{kind} {shown(value)} not found")


@contextmanager
def conflict_as_409(session: Session, conflict: type[Exception]) -> Iterator[None]:
    """A repository's refusal (the object is in the wrong state) as a 409, rolled back so nothing half-written stays."""
    try:
        yield
    except conflict as exc:
        session.rollback()
        raise ProblemError(409, "Conflict", str(exc)) from None


def shown(value: str, *, limit: int = 64) -> str:
    """A client-supplied identifier fit for a message: printable and bounded."""
    text = value if value.isprintable() else ascii(value)[1:-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _problem)
    app.add_exception_handler(DatasetRejected, _dataset_rejected)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(StorageFull, _storage_full)
    app.add_exception_handler(StorageUnavailable, _storage_down)
    app.add_exception_handler(OperationalError, _database_down)
    app.add_exception_handler(PoolTimeout, _overloaded)
    app.add_exception_handler(Exception, _unexpected)


async def _problem(_request: Request, exc: ProblemError) -> JSONResponse:
    return problem_response(
        exc.status,
        exc.detail,
        title=exc.title,
        errors=exc.errors,
        type_=exc.type_,
        headers=exc.headers,
        extra=exc.extra,
    )


async def _dataset_rejected(_request: Request, exc: DatasetRejected) -> JSONResponse:
    return problem_response(int(exc.status_code), str(exc.detail), title="Dataset rejected")


async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [_clean_error(error) for error in exc.errors()]
    if errors and errors[0]["type"] == "json_invalid":
        position = errors[0]["loc"][-1] if len(errors[0]["loc"]) > 1 else "?"
        return problem_response(
            422, f"body: invalid JSON near character {position}", title="Validation failed", errors=errors
        )
    detail = f"{dotted(errors[0]['loc'])}: {errors[0]['msg']}" if errors else "invalid request"
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more)"
    return problem_response(422, detail, title="Validation failed", errors=errors)


async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else _phrase(exc.status_code)
    return problem_response(exc.status_code, detail, headers=getattr(exc, "headers", None))


async def _database_down(request: Request, exc: OperationalError) -> JSONResponse:
    # Connection refused, locked database, failover: the client may retry; details stay in the log.
    logger.error("database error on %s %s: %s", request.method, request.url.path, type(exc.orig).__name__)
    return problem_response(503, "the database is unavailable; retry later", headers={"Retry-After": "5"})


async def _storage_full(request: Request, exc: StorageFull) -> JSONResponse:
    # The operator's problem, not the client's: say what is full; the route has removed what it wrote.
    logger.error("storage full on %s %s: %s", request.method, request.url.path, exc.message)
    detail = f"{exc.message}; nothing was stored. The operator must free space or raise the quota; then retry"
    return problem_response(507, detail, title="Insufficient Storage", extra={"error_type": "storage_full"})


async def _storage_down(request: Request, exc: StorageUnavailable) -> JSONResponse:
    logger.error("blob store unreachable on %s %s: %s", request.method, request.url.path, exc)
    return problem_response(503, "the blob store is unreachable; retry later", headers={"Retry-After": "5"})


async def _overloaded(request: Request, _exc: PoolTimeout) -> JSONResponse:
    # Every database connection stayed busy for the pool timeout: overload, not a client error.
    logger.error("no database connection free for %s %s", request.method, request.url.path)
    return problem_response(503, "the service is overloaded; retry later", headers={"Retry-After": "1"})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(500, "an unexpected error occurred; it has been logged")


def _clean_error(error: dict[str, Any]) -> dict[str, Any]:
    # `input` echoes what the client sent (possibly huge or secret) and `ctx` may hold
    # exception objects that are not JSON; keep only where, what and which kind.
    return {"loc": list(error.get("loc", ())), "msg": str(error.get("msg", "")), "type": str(error.get("type", ""))}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
