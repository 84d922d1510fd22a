"""Standard Webhooks signatures (https://www.standardwebhooks.com): HMAC-SHA256 over ``id.timestamp.body``.

Headers: ``webhook-id`` (the event's id, the same on every retry so a
receiver can drop duplicates), ``webhook-timestamp`` (Unix seconds; a
receiver rejects ones outside its replay window, five minutes in the
reference library) and ``webhook-signature`` (``v1,<base64 HMAC>``). The
secret is ``whsec_`` followed by base64 of the key bytes.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from datetime import datetime

from standardwebhooks import Webhook as Signer

SECRET_PREFIX = "whsec_"
MIN_KEY_BYTES, MAX_KEY_BYTES = 24, 64


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def secret_problem(secret: str) -> str | None:
    """Why ``secret`` cannot sign, or None: ``whsec_`` + base64 of 24 to 64 key bytes."""
    if not secret.startswith(SECRET_PREFIX):
        return f"must start with {SECRET_PREFIX!r} (Standard Webhooks format)"
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        return f"must be {SECRET_PREFIX!r} followed by base64"
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        return f"the key must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, got {len(key)}"
    return None


def signed_headers(*, secret: str, message_id: str, timestamp: datetime, body: str) -> dict[str, str]:
    signature = Signer(secret).sign(msg_id=message_id, timestamp=timestamp, data=body)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": "rarefit-webhooks/1",
    }
