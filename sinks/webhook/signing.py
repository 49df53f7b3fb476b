"""Standard Webhooks signatures: ``v1,`` + base64 HMAC-SHA256 over ``id.timestamp.body``.

The timestamp is taken at each attempt (receivers reject ones older than a few minutes); the id is
the alert event's id, the same on every retry, so receivers deduplicate on it. During a secret
rotation every configured secret signs, and the header carries the signatures space-separated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from sinks.webhook.config import Secret

USER_AGENT = "einvoice-monitor-webhooks/1"


def signature(secrets: Sequence[Secret], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(s.key, signed, hashlib.sha256).digest()).decode() for s in secrets
    )


def headers(secrets: Sequence[Secret], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header of one attempt."""
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secrets, msg_id, timestamp, body),
    }
