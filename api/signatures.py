"""HMAC-SHA256 signatures of integration webhooks (booking system, EMR, laser device).

Recipe (docs/api.md): the sender computes
``hex(HMAC_SHA256(secret, f"{timestamp}.{raw_body}"))`` with ``timestamp`` the current unix time
in whole seconds, and sends ``X-Timestamp: <timestamp>``, ``X-Signature: <hex>`` (``sha256=<hex>``
is accepted too) and, preferably, ``X-Integration: <name>``. Secrets come from
``JOURNEY_INTEGRATION_SECRETS`` (JSON name → secret). The timestamp bounds replays of a captured
request to ``JOURNEY_WEBHOOK_TOLERANCE_SECONDS``; the ``Idempotency-Key`` does the rest.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

__all__ = ["SignatureError", "sign", "verify_signature"]

SIGNATURE_PREFIX = "sha256="


class SignatureError(Exception):
    """The request is not signed by a known integration (always answered with 401)."""


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``f"{timestamp}.{body}"`` with ``secret`` (what senders send)."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_signature(
    secrets: Mapping[str, str],
    *,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    integration: str | None,
    tolerance_seconds: int,
    now: float | None = None,
) -> str:
    """Check a webhook's signature and freshness; returns the integration's name.

    Without ``integration`` every configured secret is tried (each comparison constant-time),
    so a sender that cannot add headers still works; with it, only that integration's secret.

    Raises:
        SignatureError: a header is missing or malformed, the timestamp is further than
            ``tolerance_seconds`` from now (either way), the integration is unknown, or no
            secret produces the signature.
    """
    if not signature or not timestamp:
        raise SignatureError("X-Signature and X-Timestamp are required")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise SignatureError("X-Timestamp must be unix seconds") from None
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_seconds:
        raise SignatureError("X-Timestamp is outside the allowed window")
    given = signature.strip().lower().removeprefix(SIGNATURE_PREFIX)
    if integration is not None:
        candidates = {integration: secrets[integration]} if integration in secrets else {}
        if not candidates:
            raise SignatureError("unknown integration")
    else:
        candidates = dict(secrets)
    matched: str | None = None
    # Compare against every candidate without stopping early, so timing says nothing about
    # which integration (if any) matched.
    for name, secret in candidates.items():
        if hmac.compare_digest(sign(secret, timestamp, body), given) and matched is None:
            matched = name
    if matched is None:
        raise SignatureError("bad signature")
    return matched
