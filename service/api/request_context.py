"""Every HTTP request gets an id and is counted: the outermost ASGI middleware.

The id is the client's ``X-Request-ID`` when it is a plain token (letters,
digits, ``._:-``, at most 128 characters), else a fresh one; it is echoed in
the response's ``X-Request-ID``, set in ``service.logs.request_id`` for every
log line of the request, and named as ``instance`` in problem+json bodies.
Counts and latencies are labelled by the route's template
(``/v1/jobs/{job_id}``, never the raw path, so ids do not explode the label
set), ``unmatched`` for a path no route serves.
"""

from __future__ import annotations

import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import logs
from service.logs import REQUEST_ID_HEADER as HEADER
from service.metrics import REQUEST_SECONDS, REQUESTS

_TOKEN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def accepted_request_id(value: str | None) -> str:
    """``value`` when it is a safe token, else a new random id."""
    return value if value is not None and _TOKEN.match(value) else uuid.uuid4().hex


def route_template(scope: Scope) -> str:
    """The matched route's path with its parameters as ``{name}``; ``unmatched`` when no route served it.

    Rebuilt from the request path and the matched ``path_params`` (public ASGI scope keys): FastAPI's
    included routers keep only their own part of the template on the route object.
    """
    if "route" not in scope:
        return "unmatched"
    names = {str(value): name for name, value in scope.get("path_params", {}).items()}
    segments = scope["path"].split("/")
    return "/".join(f"{{{names.pop(part)}}}" if part in names else part for part in segments)


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accepted_request_id(Headers(scope=scope).get(HEADER))
        # Not reset afterwards: each request runs in a context of its own, and the error handler that
        # answers an unhandled exception runs outside this middleware (in Starlette's outermost
        # ServerErrorMiddleware, past send_with_id) but must still name the id, in body and header.
        logs.request_id.set(request_id)
        status, started = 500, time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = route_template(scope)
            method = scope["method"]
            REQUESTS.labels(route, method, str(status)).inc()
            REQUEST_SECONDS.labels(route, method).observe(time.perf_counter() - started)
