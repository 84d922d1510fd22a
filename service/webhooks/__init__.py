"""Signed webhook deliveries of the event log: signing, target checks, the dispatcher."""

from service.webhooks.dispatch import WebhookDispatcher, deliver_due
from service.webhooks.signing import new_secret, signed_headers
from service.webhooks.targets import target_problem

__all__ = ["WebhookDispatcher", "deliver_due", "new_secret", "signed_headers", "target_problem"]
