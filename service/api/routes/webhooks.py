"""Webhooks: a tenant's subscriptions to the event log and the record of every delivery attempt."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response, status
from sqlalchemy.orm import Session

from rarefit.schemas import Page
from service.api.deps import LimitQuery, OffsetQuery, SessionDep, SettingsDep, TenantDep
from service.errors import ProblemError, field_error, not_found, problem_responses
from service.models import Webhook
from service.repository import webhooks as repo
from service.webhooks import new_secret, target_problem
from service.webhooks.schemas import DeliveryOut, WebhookCreatedOut, WebhookIn, WebhookOut

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/webhooks", tags=["webhooks"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookCreatedOut,
    summary="Subscribe a URL to events (deliveries signed per Standard Webhooks)",
    responses=problem_responses(
        400,
        422,
        s400="a body that is not JSON text",
        s422="bad body, or a URL on a loopback, private or link-local address",
    ),
)
def create_webhook(
    body: WebhookIn, response: Response, session: SessionDep, tenant_id: TenantDep, settings: SettingsDep
) -> WebhookCreatedOut:
    problem = target_problem(body.url, allow_private=settings.webhooks_allow_private)
    if problem is not None:
        raise ProblemError(
            422, "Webhook target refused", f"url: {problem}", errors=[field_error(("body", "url"), problem)]
        )
    webhook = repo.create_webhook(
        session, tenant_id=tenant_id, url=body.url, event_types=list(body.events), secret=body.secret or new_secret()
    )
    session.commit()
    logger.info("tenant %s created webhook %s for %s", tenant_id, webhook.id, webhook.event_types)
    response.headers["Location"] = f"/v1/webhooks/{webhook.id}"
    return WebhookCreatedOut.from_row(webhook)


@router.get("", response_model=list[WebhookOut], summary="The tenant's webhooks")
def list_webhooks(session: SessionDep, tenant_id: TenantDep) -> list[WebhookOut]:
    return [WebhookOut.from_row(row) for row in repo.list_webhooks(session, tenant_id=tenant_id)]


@router.get("/{webhook_id}", response_model=WebhookOut, summary="One webhook", responses=problem_responses(404))
def get_webhook(webhook_id: str, session: SessionDep, tenant_id: TenantDep) -> WebhookOut:
    return WebhookOut.from_row(_webhook_or_404(session, tenant_id=tenant_id, webhook_id=webhook_id))


@router.delete(
    "/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Stop a webhook (pending deliveries are dropped)",
    responses=problem_responses(404),
)
def delete_webhook(webhook_id: str, session: SessionDep, tenant_id: TenantDep) -> Response:
    repo.delete_webhook(session, webhook=_webhook_or_404(session, tenant_id=tenant_id, webhook_id=webhook_id))
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=Page[DeliveryOut],
    summary="Deliveries of a webhook with every attempt, newest event first",
    responses=problem_responses(404),
)
def list_deliveries(
    webhook_id: str, session: SessionDep, tenant_id: TenantDep, limit: LimitQuery = 50, offset: OffsetQuery = 0
) -> Page[DeliveryOut]:
    webhook = _webhook_or_404(session, tenant_id=tenant_id, webhook_id=webhook_id)
    rows = repo.list_deliveries(session, webhook_id=webhook.id, limit=limit + 1, offset=offset)
    return Page[DeliveryOut].of(rows, limit=limit, offset=offset, convert=DeliveryOut.from_row)


def _webhook_or_404(session: Session, *, tenant_id: str, webhook_id: str) -> Webhook:
    webhook = repo.get_webhook(session, tenant_id=tenant_id, webhook_id=webhook_id)
    if webhook is None:
        raise not_found("webhook", webhook_id)
    return webhook
