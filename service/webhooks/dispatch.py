"""Send owed webhook deliveries: claimed one at a time, retried with backoff and jitter, every attempt kept.

Runs beside the reaper in each API process (``WebhookDispatcher``). A job's
state change only inserts the delivery row (in its own transaction); sending
happens here, so a slow or dead receiver never delays a job. A claim pushes
the row's ``next_attempt_at`` past the request timeout, so when several API
processes run, one attempt goes out once; a process that dies mid-attempt
leaves the row due again after that hold.
"""

from __future__ import annotations

import json
import logging
import random
import time
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker

from service.background import BackgroundLoop
from service.config import Settings
from service.db import aware, transaction
from service.models import Event, Webhook, WebhookDelivery, utcnow
from service.repository import webhooks as repo
from service.webhooks.signing import signed_headers
from service.webhooks.targets import target_problem

logger = logging.getLogger(__name__)
_BATCH = 50
_ERROR_CHARS = 300


def message(event: Event) -> str:
    """The delivered body: ``{"type", "timestamp", "data"}`` as Standard Webhooks suggests."""
    body = {"type": event.type, "timestamp": aware(event.created_at).isoformat(), "data": event.payload}
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def deliver_due(settings: Settings, session_factory: sessionmaker[Session], *, client: httpx.Client) -> int:
    """One pass: attempt every due delivery this process can claim; returns how many it attempted."""
    now = utcnow()
    with session_factory() as session:
        due = repo.due_deliveries(session, now=now, limit=_BATCH)
    hold = 2 * settings.webhook_timeout_seconds + 5
    attempted = 0
    for delivery_id in due:
        with transaction(session_factory) as session:
            if not repo.claim_delivery(session, delivery_id=delivery_id, now=now, hold_seconds=hold):
                continue  # another process took it
        with session_factory() as session:
            delivery, webhook, event = repo.load_for_sending(session, delivery_id=delivery_id)
        attempt = _attempt(settings, client, webhook=webhook, event=event, number=len(delivery.attempts) + 1)
        status, next_at = _outcome(settings, delivery, attempt)
        with transaction(session_factory) as session:
            repo.record_attempt(
                session, delivery_id=delivery_id, attempt=attempt, status=status, next_attempt_at=next_at
            )
        attempted += 1
    return attempted


def _attempt(
    settings: Settings, client: httpx.Client, *, webhook: Webhook, event: Event, number: int
) -> dict[str, Any]:
    started, at = time.monotonic(), utcnow()
    record: dict[str, Any] = {"number": number, "at": at.isoformat(), "status_code": None, "error": None}
    problem = target_problem(webhook.url, allow_private=settings.webhooks_allow_private)
    if problem is not None:
        record["error"] = f"target refused: {problem}"[:_ERROR_CHARS]
    else:
        body = message(event)
        headers = signed_headers(secret=webhook.secret, message_id=f"evt_{event.id}", timestamp=at, body=body)
        try:
            response = client.post(webhook.url, content=body.encode("utf-8"), headers=headers)
            record["status_code"] = response.status_code
            if not response.is_success:
                record["error"] = f"receiver answered {response.status_code}"
        except httpx.HTTPError as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]
    record["seconds"] = round(time.monotonic() - started, 3)
    logger.info("webhook %s event %s attempt %d: %s", webhook.id, event.id, number, record["error"] or "delivered")
    return record


def _outcome(settings: Settings, delivery: WebhookDelivery, attempt: dict[str, Any]) -> tuple[str, datetime | None]:
    """Succeeded, failed for good, or pending with the next attempt's time (exponential, equal jitter)."""
    if attempt["error"] is None:
        return repo.SUCCEEDED, None
    number = attempt["number"]
    delay = min(settings.webhook_backoff_max_seconds, settings.webhook_backoff_seconds * 2 ** (number - 1))
    delay *= random.uniform(0.5, 1.0)  # spreads retries of many deliveries to one receiver
    next_at = utcnow() + timedelta(seconds=delay)
    give_up_at = aware(delivery.created_at) + timedelta(seconds=settings.webhook_retry_seconds)
    if number >= settings.webhook_max_attempts or next_at > give_up_at:
        return repo.FAILED, None
    return repo.PENDING, next_at


class WebhookDispatcher(BackgroundLoop):
    """Runs ``deliver_due`` every ``settings.webhook_dispatch_seconds`` in a daemon thread."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session]) -> None:
        self._settings = settings
        self._session_factory = session_factory
        super().__init__(name="rarefit-webhooks")

    def _run(self) -> None:
        # No redirects: a public URL answering 302 to an internal one must not be followed.
        with httpx.Client(timeout=self._settings.webhook_timeout_seconds, follow_redirects=False) as client:
            self._repeat(
                lambda: deliver_due(self._settings, self._session_factory, client=client),
                interval=self._settings.webhook_dispatch_seconds,
                what="webhook pass",
                log=logger,  # database down: the rows wait, the next pass retries
            )
