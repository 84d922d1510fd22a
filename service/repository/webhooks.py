"""Webhook subscriptions and their deliveries. Functions flush but never commit.

A delivery row is inserted with its event (``owe_deliveries``, called by the
event log), so the outbox holds exactly the events that committed. The
dispatcher (``service.webhooks.dispatch``) claims a due delivery by pushing
its ``next_attempt_at`` forward in one conditional UPDATE, so several API
processes never send the same attempt twice.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.models import Event, Webhook, WebhookDelivery, utcnow
from service.repository.ids import findable
from service.repository.rows import changed_one_row

PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"


def create_webhook(session: Session, *, tenant_id: str, url: str, event_types: list[str], secret: str) -> Webhook:
    webhook = Webhook(tenant_id=tenant_id, url=url, event_types=sorted(set(event_types)), secret=secret)
    session.add(webhook)
    session.flush()
    return webhook


def get_webhook(session: Session, *, tenant_id: str, webhook_id: str) -> Webhook | None:
    if not findable(webhook_id):
        return None
    query = select(Webhook).where(
        Webhook.id == webhook_id, Webhook.tenant_id == tenant_id, Webhook.deleted_at.is_(None)
    )
    return session.scalar(query)


def list_webhooks(session: Session, *, tenant_id: str) -> list[Webhook]:
    query = select(Webhook).where(Webhook.tenant_id == tenant_id, Webhook.deleted_at.is_(None))
    return list(session.scalars(query.order_by(Webhook.created_at, Webhook.id)))


def delete_webhook(session: Session, *, webhook: Webhook) -> None:
    """Stop future deliveries; the row stays so its delivery history remains readable to the log."""
    webhook.deleted_at = utcnow()
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == webhook.id, WebhookDelivery.status == PENDING)
        .values(status=FAILED, next_attempt_at=None, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.flush()


def owe_deliveries(session: Session, *, event: Event) -> None:
    """One pending delivery per live webhook of the event's tenant that subscribed to its type."""
    query = select(Webhook.id, Webhook.event_types).where(
        Webhook.tenant_id == event.tenant_id, Webhook.deleted_at.is_(None)
    )
    for webhook_id, event_types in session.execute(query):
        if event.type in event_types:
            session.add(
                WebhookDelivery(webhook_id=webhook_id, event_id=event.id, attempts=[], next_attempt_at=utcnow())
            )
    session.flush()


def list_deliveries(session: Session, *, webhook_id: str, limit: int, offset: int) -> list[tuple[WebhookDelivery, str]]:
    """The webhook's deliveries with their event's type, newest first."""
    query = select(WebhookDelivery, Event.type).join(Event, Event.id == WebhookDelivery.event_id)
    query = query.where(WebhookDelivery.webhook_id == webhook_id)
    query = query.order_by(WebhookDelivery.event_id.desc(), WebhookDelivery.id).limit(limit).offset(offset)
    return [(delivery, event_type) for delivery, event_type in session.execute(query)]


def due_deliveries(session: Session, *, now: datetime, limit: int) -> list[str]:
    query = select(WebhookDelivery.id).where(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now)
    return list(session.scalars(query.order_by(WebhookDelivery.next_attempt_at).limit(limit)))


def claim_delivery(session: Session, *, delivery_id: str, now: datetime, hold_seconds: float) -> bool:
    """Take a due delivery for one attempt: nobody else sees it due until ``hold_seconds`` pass."""
    return changed_one_row(
        session,
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == PENDING,
            WebhookDelivery.next_attempt_at <= now,
        )
        .values(next_attempt_at=now + timedelta(seconds=hold_seconds))
        .execution_options(synchronize_session=False),
    )


def load_for_sending(session: Session, *, delivery_id: str) -> tuple[WebhookDelivery, Webhook, Event]:
    delivery = session.get(WebhookDelivery, delivery_id, populate_existing=True)
    if delivery is None:
        raise ValueError(f"delivery {delivery_id} does not exist")
    # Both rows are referenced by foreign keys and never deleted.
    return delivery, session.get_one(Webhook, delivery.webhook_id), session.get_one(Event, delivery.event_id)


def record_attempt(
    session: Session, *, delivery_id: str, attempt: dict[str, Any], status: str, next_attempt_at: datetime | None
) -> None:
    """Append one attempt; ``status`` is pending (retry at ``next_attempt_at``), succeeded or failed."""
    delivery = session.get(WebhookDelivery, delivery_id, populate_existing=True)
    if delivery is None:
        raise ValueError(f"delivery {delivery_id} does not exist")
    delivery.attempts = [*delivery.attempts, attempt]
    delivery.status = status
    delivery.next_attempt_at = next_attempt_at if status == PENDING else None
    delivery.finished_at = None if status == PENDING else utcnow()
    session.flush()
