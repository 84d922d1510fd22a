"""Webhook request and response bodies (the API's vocabulary, not the ORM's)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rarefit.schemas import UtcDatetime
from service.models import Webhook, WebhookDelivery
from service.repository.events import TYPES
from service.webhooks.signing import secret_problem

EventType = Literal[TYPES]  # type: ignore[valid-type]


class WebhookIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"url": "https://ci.example.com/rarefit", "events": ["job.succeeded"]}]},
    )
    url: str = Field(min_length=1, max_length=2000, description="http(s) URL the events are POSTed to")
    events: list[EventType] = Field(min_length=1, max_length=len(TYPES), description="event types to send")
    secret: str | None = Field(
        default=None, max_length=100, description="`whsec_` + base64 key (Standard Webhooks); made for you if absent"
    )

    @field_validator("secret")
    @classmethod
    def _signing_secret(cls, value: str | None) -> str | None:
        if value is not None and (problem := secret_problem(value)) is not None:
            raise ValueError(problem)
        return value


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    created_at: UtcDatetime

    @classmethod
    def from_row(cls, row: Webhook) -> WebhookOut:
        return cls(id=row.id, url=row.url, events=list(row.event_types), created_at=row.created_at)


class WebhookCreatedOut(WebhookOut):
    secret: str = Field(description="the signing secret; shown only in this answer")

    @classmethod
    def from_row(cls, row: Webhook) -> WebhookCreatedOut:
        return cls(id=row.id, url=row.url, events=list(row.event_types), created_at=row.created_at, secret=row.secret)


class AttemptOut(BaseModel):
    number: int
    at: UtcDatetime
    status_code: int | None = Field(description="the receiver's HTTP status; null when none came back")
    error: str | None = Field(description="why the attempt failed; null when it succeeded")
    seconds: float


class DeliveryOut(BaseModel):
    id: str
    event_id: int
    event_type: str
    status: str = Field(description="pending | succeeded | failed")
    attempts: list[AttemptOut]
    next_attempt_at: UtcDatetime | None
    created_at: UtcDatetime
    finished_at: UtcDatetime | None

    @classmethod
    def from_row(cls, pair: tuple[WebhookDelivery, str]) -> DeliveryOut:
        row, event_type = pair
        attempts: list[Any] = row.attempts
        return cls(
            id=row.id,
            event_id=row.event_id,
            event_type=event_type,
            status=row.status,
            attempts=[AttemptOut.model_validate(a) for a in attempts],
            next_attempt_at=row.next_attempt_at,
            created_at=row.created_at,
            finished_at=row.finished_at,
        )
