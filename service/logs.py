"""Log records that say which request or job they belong to, as text or as JSON lines.

Two context variables carry the ids: ``request_id`` (set by the API's request
middleware for the whole of a request) and ``job_id`` (set by a worker for the
whole of a job, and copied into the threads it starts). A filter on the root
handler stamps both onto every record, so every line of a request or a job
carries them without a logger having to pass them. ``RAREFIT_LOG_FORMAT``
chooses ``text`` or ``json`` (one object per line: ``time``, ``level``,
``logger``, ``message``, ``request_id``, ``job_id``, and ``exc_info`` for a
traceback); ``RAREFIT_LOG_LEVEL`` the level.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import TYPE_CHECKING

from pythonjsonlogger.json import JsonFormatter

if TYPE_CHECKING:
    from service.config import Settings

REQUEST_ID_HEADER = "X-Request-ID"
request_id: ContextVar[str | None] = ContextVar("rarefit_request_id", default=None)
job_id: ContextVar[str | None] = ContextVar("rarefit_job_id", default=None)

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(job_id)s"
_RENAMED = {"asctime": "time", "levelname": "level", "name": "logger"}


class ContextFilter(logging.Filter):
    """Adds ``request_id``, ``job_id`` and ``context`` (`` [request=… job=…]`` or empty) to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = getattr(record, "request_id", None) or request_id.get()
        record.job_id = getattr(record, "job_id", None) or job_id.get()
        ids = " ".join(
            f"{kind}={value}" for kind, value in (("request", record.request_id), ("job", record.job_id)) if value
        )
        record.context = f" [{ids}]" if ids else ""
        return True


def formatter(log_format: str) -> logging.Formatter:
    """The formatter for ``text`` or ``json`` (``ValueError`` naming the choices otherwise)."""
    if log_format == "json":
        return JsonFormatter(JSON_FIELDS, rename_fields=_RENAMED)
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"log format {log_format!r}: use one of {list(FORMATS)}")


def configure_logging(settings: Settings) -> None:
    """One handler on the root logger, stderr, in the configured format and level (idempotent).

    uvicorn's and Celery's loggers propagate to it (they are told not to set up their own).
    """
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(settings.log_format))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
