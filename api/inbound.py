"""Inbound webhooks: who sent this request, under which idempotency key, and for which patient.

Two signature schemes (docs/integrations.md); both bind the integration (its own secret), the
idempotency key, the timestamp and the body, so a captured request cannot be replayed under a
new key, and neither can be moved to another integration:

* **Standard Webhooks** (preferred): ``webhook-id`` (the idempotency key), ``webhook-timestamp``
  (unix seconds), ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``,
  several space-separated signatures allowed). ``X-Integration`` (optional) names the sender.
* **HMAC, version 2** (the older headers, now covering the integration and the key):
  ``X-Signature: sha256=hex(HMAC_SHA256(secret, "timestamp.integration.key.body"))`` with
  ``X-Timestamp``, ``Idempotency-Key`` (required) and ``X-Integration`` (optional: without it
  every integration's name and secrets are tried).

Secrets come from ``JOURNEY_INTEGRATION_SECRETS`` (JSON name → secret). **Rotation**: a value
may hold several secrets separated by spaces (``"whsec_new whsec_old"``); any of them verifies,
so the sender can switch at any moment and the old secret is removed afterwards. A
``whsec_<base64>`` secret is used as its decoded bytes (the Standard Webhooks convention); any
other string as its UTF-8 bytes.

Idempotency keys are scoped per integration: the stored answers live under
``<scope>:<integration>`` and the journey receives ``<integration>:<key>``, so one integration
reusing another's key neither gets the other's answer nor loses its own fact.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
from pydantic import SecretStr

__all__ = [
    "InboundIdentity",
    "InvalidKey",
    "SignatureError",
    "UnknownExternalId",
    "integration_secrets",
    "resolve_external_ids",
    "sign_hmac_v2",
    "sign_standard",
    "verify_inbound",
]

MAX_KEY_LENGTH = 200
Scheme = Literal["standard-webhooks", "hmac-v2"]


class SignatureError(Exception):
    """Not signed by a known integration, or stale (always answered with 401)."""


class InvalidKey(ValueError):
    """The idempotency key header is missing or malformed (answered with 422)."""

    def __init__(self, header: str) -> None:
        super().__init__(f"{header} must be 1–{MAX_KEY_LENGTH} printable characters")
        self.header = header


class UnknownExternalId(LookupError):
    """An external id the integration never mapped (answered with 422)."""

    def __init__(self, field: str, value: str) -> None:
        super().__init__(f"{field} {value!r} is not mapped for this integration")
        self.field = field


@dataclass(frozen=True)
class InboundIdentity:
    """A verified request: the integration, its idempotency key and the scheme used."""

    integration: str
    key: str
    scheme: Scheme

    def scope(self, name: str) -> str:
        """The idempotency scope of this integration's requests to ``name``."""
        return f"{name}:{self.integration}"

    @property
    def fact_key(self) -> str:
        """The idempotency key the journey receives (unique across integrations)."""
        return f"{self.integration}:{self.key}"


def integration_secrets(configured: Mapping[str, str | SecretStr]) -> dict[str, list[bytes]]:
    """Each integration's valid keys (several during a rotation), as HMAC key bytes."""
    out: dict[str, list[bytes]] = {}
    for name, value in configured.items():
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        keys = []
        for secret in text.split():
            if secret.startswith("whsec_"):
                try:
                    keys.append(base64.b64decode(secret.removeprefix("whsec_") + "=="))
                    continue
                except (binascii.Error, ValueError):
                    pass
            keys.append(secret.encode())
        out[name] = keys
    return out


def _standard_signature(key: bytes, message_id: str, timestamp: str, body: bytes) -> bytes:
    return hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def _hmac_v2(key: bytes, timestamp: str, integration: str, idem: str, body: bytes) -> str:
    message = f"{timestamp}.{integration}.{idem}.".encode() + body
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign_standard(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value a sender computes (``v1,<base64>``)."""
    [key] = integration_secrets({"x": secret})["x"][:1]
    sig = _standard_signature(key, message_id, str(timestamp), body)
    return "v1," + base64.b64encode(sig).decode()


def sign_hmac_v2(secret: str, timestamp: int, integration: str, key: str, body: bytes) -> str:
    """The ``X-Signature`` hex of the version-2 HMAC scheme."""
    [k] = integration_secrets({"x": secret})["x"][:1]
    return _hmac_v2(k, str(timestamp), integration, key, body)


def _fresh(timestamp: str | None, tolerance_seconds: int, now: float | None) -> str:
    if not timestamp:
        raise SignatureError("the timestamp header is required")
    try:
        sent_at = int(timestamp.strip())
    except ValueError:
        raise SignatureError("the timestamp must be unix seconds") from None
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_seconds:
        raise SignatureError("the timestamp is outside the allowed window")
    return str(sent_at)


def _candidates(secrets: dict[str, list[bytes]], integration: str | None) -> dict[str, list[bytes]]:
    if integration is None:
        return secrets
    if integration not in secrets:
        raise SignatureError("unknown integration")
    return {integration: secrets[integration]}


def _key(value: str | None, header: str) -> str:
    key = (value or "").strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidKey(header)
    return key


def verify_inbound(
    configured: Mapping[str, str | SecretStr],
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_seconds: int,
    now: float | None = None,
) -> InboundIdentity:
    """Check a webhook's signature and freshness (either scheme, see the module docstring).

    Every candidate secret is compared (constant-time) without stopping early, so timing does
    not tell which integration or secret matched.

    Args:
        configured: ``JOURNEY_INTEGRATION_SECRETS``.
        headers: The request's headers (any case).
        body: The raw body.
        tolerance_seconds: How far the timestamp may be from now, either way.
        now: The current unix time (tests).

    Raises:
        SignatureError: unsigned, malformed, stale, unknown integration, or no secret matches.
        InvalidKey: the signature headers are there but the key (``webhook-id`` or
            ``Idempotency-Key``) is missing or malformed.
    """
    h = {k.lower(): v for k, v in headers.items()}
    secrets = integration_secrets(configured)
    claimed = h.get("x-integration") or None
    matched: str | None = None
    if "webhook-signature" in h:
        message_id = _key(h.get("webhook-id"), "webhook-id")
        timestamp = _fresh(h.get("webhook-timestamp"), tolerance_seconds, now)
        given: list[bytes] = []
        for part in h["webhook-signature"].split():
            version, _, value = part.partition(",")
            if version == "v1":
                try:
                    given.append(base64.b64decode(value, validate=True))
                except (binascii.Error, ValueError):
                    continue
        for name, keys in _candidates(secrets, claimed).items():
            for key in keys:
                expected = _standard_signature(key, message_id, timestamp, body)
                for sig in given:
                    if hmac.compare_digest(expected, sig) and matched is None:
                        matched = name
        if matched is None:
            raise SignatureError("bad signature")
        return InboundIdentity(matched, message_id, "standard-webhooks")
    if "x-signature" in h:
        idem = _key(h.get("idempotency-key"), "Idempotency-Key")
        timestamp = _fresh(h.get("x-timestamp"), tolerance_seconds, now)
        presented = h["x-signature"].strip().lower().removeprefix("sha256=")
        for name, keys in _candidates(secrets, claimed).items():
            for key in keys:
                expected_hex = _hmac_v2(key, timestamp, name, idem, body)
                if hmac.compare_digest(expected_hex, presented) and matched is None:
                    matched = name
        if matched is None:
            raise SignatureError("bad signature")
        return InboundIdentity(matched, idem, "hmac-v2")
    raise SignatureError("the request is not signed (webhook-signature or X-Signature)")


async def resolve_external_ids(pool: asyncpg.Pool, integration: str, body: bytes) -> bytes:
    """Replace ``external_patient_id`` / ``external_appointment_id`` in a JSON body by our
    ``patient_id`` (and ``session_number``) from the ``external_ids`` mapping of this
    integration; any other body is returned as it is (the model validates it afterwards).

    Raises:
        UnknownExternalId: an external id this integration never mapped.
    """
    try:
        data: Any = json.loads(body)
    except ValueError:
        return body
    if not isinstance(data, dict) or not (
        "external_patient_id" in data or "external_appointment_id" in data
    ):
        return body
    appointment = data.pop("external_appointment_id", None)
    patient = data.pop("external_patient_id", None)
    for field, value in (
        ("external_appointment_id", appointment),
        ("external_patient_id", patient),
    ):
        if value is not None and not (
            isinstance(value, str) and 0 < len(value) <= 200 and value.isprintable()
        ):
            raise UnknownExternalId(field, str(value)[:200].encode("unicode_escape").decode())
    if appointment is not None:
        row = await pool.fetchrow(
            """
            SELECT patient_id, session_number FROM external_ids
            WHERE integration = $1 AND kind = 'appointment' AND external_id = $2
            """,
            integration,
            appointment,
        )
        if row is None:
            raise UnknownExternalId("external_appointment_id", appointment)
        data.setdefault("patient_id", row["patient_id"])
        data.setdefault("session_number", row["session_number"])
    if patient is not None:
        found = await pool.fetchval(
            """
            SELECT patient_id FROM external_ids
            WHERE integration = $1 AND kind = 'patient' AND external_id = $2
            """,
            integration,
            patient,
        )
        if found is None:
            raise UnknownExternalId("external_patient_id", patient)
        data.setdefault("patient_id", found)
    return json.dumps(data).encode()
