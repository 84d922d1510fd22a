"""The HTTP body cap for uploads: pure ASGI middleware in front of the multipart parser.

An oversized upload is refused from its ``Content-Length`` before a byte is
read, or cut off as soon as the streamed byte count passes the limit, so it is
never fully read, spooled or parsed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from service.errors import problem_response
from service.ingest.errors import mib

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)


class _BodyTooLarge(Exception):
    """Raised from ``receive`` inside the app once the body passes the limit."""


class BodySizeLimitMiddleware:
    """Answer 413 (problem+json) to POSTs under ``path_prefix`` whose body exceeds ``max_bytes``."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, path_prefix: str = "/v1/datasets", shown_limit: int | None = None
    ) -> None:
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes <= 0:
            raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
        self.app = app
        self.max_bytes = max_bytes
        self.path_prefix = path_prefix.rstrip("/")
        # The limit the 413 detail names: the operator's upload limit, not the body cap
        # (which adds room for the multipart framing), so every 413 names the same number.
        self.shown_limit = max_bytes if shown_limit is None else shown_limit

    def _applies(self, scope: Scope) -> bool:
        if scope["type"] != "http" or scope.get("method") != "POST":
            return False
        path = scope.get("path", "")
        return path == self.path_prefix or path.startswith(self.path_prefix + "/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._applies(scope):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            logger.info("refused upload of %d bytes (limit %d) from Content-Length", declared, self.max_bytes)
            await self._reject(send)
            return
        await _LimitedCall(self, scope, receive, send).run()

    async def _reject(self, send: Send) -> None:
        response = problem_response(
            413,
            f"upload exceeds the limit of {mib(self.shown_limit)}",
            title="Content Too Large",
            headers={"Connection": "close"},  # the rest of the body is never read
        )
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body, "more_body": False})


class _LimitedCall:
    """One request through the middleware: counts body bytes, swaps the answer for 413."""

    def __init__(self, owner: BodySizeLimitMiddleware, scope: Scope, receive: Receive, send: Send) -> None:
        self.owner, self.scope, self.receive, self.send = owner, scope, receive, send
        self.received = 0
        self.tripped = False  # the body passed the limit
        self.app_started = False  # the app's own response began before the cut
        self.replaced = False  # we sent the 413

    async def run(self) -> None:
        try:
            await self.owner.app(self.scope, self._receive, self._send)
        except Exception:
            # Whatever the app made of the cut body (our exception, or its own
            # wrapper around it), the client's problem is the size.
            if not self.tripped or self.app_started:
                raise
        if self.tripped and not self.app_started and not self.replaced:
            await self._send_413()

    async def _receive(self) -> Message:
        if self.tripped:
            raise _BodyTooLarge()
        message = await self.receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.owner.max_bytes:
                self.tripped = True
                logger.info("cut upload off after %d bytes (limit %d)", self.received, self.owner.max_bytes)
                raise _BodyTooLarge()
        return message

    async def _send(self, message: Message) -> None:
        if self.tripped and not self.app_started:
            # The app answered (e.g. 400 "error parsing the body") after the cut: say 413 instead.
            if not self.replaced:
                await self._send_413()
            return
        if message["type"] == "http.response.start":
            self.app_started = True
        await self.send(message)

    async def _send_413(self) -> None:
        self.replaced = True
        await self.owner._reject(self.send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
