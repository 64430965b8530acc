"""Inbound webhooks: Standard Webhooks signatures (made by the ``standardwebhooks`` package, as a
sender would), secret rotation, the HMAC v2 scheme, idempotency keys scoped per integration, and
external ids; the HTTP tests run on the real stack of tests/test_api.py (dev server, worker,
PostgreSQL)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from api.inbound import InvalidKey, SignatureError, sign_hmac_v2, sign_standard, verify_inbound
from tests.test_api import (  # noqa: F401  (the stack fixture)
    SECRETS,
    Stack,
    completion,
    due_journey,
    signed,
    stack,
    timeline_kinds,
    wait_stage,
)

NEW = "whsec_" + "bmV3LXNlY3JldC1mb3ItdGVzdHMtMzItYnl0ZXMhIQ=="
OLD = "whsec_" + "b2xkLXNlY3JldC1mb3ItdGVzdHMtMzItYnl0ZXMhIQ=="
URL = "/api/integrations/session-completed"


def standard(body: bytes, secret: str, message_id: str, at: int | None = None) -> dict[str, str]:
    """Headers signed by the reference library, as a sender builds them."""
    when = datetime.fromtimestamp(at if at is not None else time.time(), UTC)
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, when, body.decode()),
    }


def test_standard_webhooks_and_rotation() -> None:
    body = b'{"x": 1}'
    configured = {"booking": f"{NEW} {OLD}", "emr": SECRETS["emr"]}
    for secret in (NEW, OLD):  # during a rotation either secret verifies
        identity = verify_inbound(
            configured, standard(body, secret, "msg-1"), body, tolerance_seconds=300
        )
        assert (identity.integration, identity.key, identity.scheme) == (
            "booking",
            "msg-1",
            "standard-webhooks",
        )
        assert identity.fact_key == "booking:msg-1"
    # After the rotation only the new secret works.
    with pytest.raises(SignatureError):
        verify_inbound({"booking": NEW}, standard(body, OLD, "msg-1"), body, tolerance_seconds=300)
    headers = standard(body, NEW, "msg-1")
    # The id is signed: a captured request replayed under a new id is refused.
    with pytest.raises(SignatureError):
        verify_inbound(configured, {**headers, "webhook-id": "msg-2"}, body, tolerance_seconds=300)
    # ... and so is a changed body, and a claim to be another integration.
    with pytest.raises(SignatureError):
        verify_inbound(configured, headers, b'{"x": 2}', tolerance_seconds=300)
    with pytest.raises(SignatureError, match="bad signature"):
        verify_inbound(configured, {**headers, "x-integration": "emr"}, body, tolerance_seconds=300)
    stale = standard(body, NEW, "msg-1", at=int(time.time()) - 301)
    with pytest.raises(SignatureError, match="window"):
        verify_inbound(configured, stale, body, tolerance_seconds=300)
    with pytest.raises(InvalidKey):
        verify_inbound(configured, {**headers, "webhook-id": ""}, body, tolerance_seconds=300)


def test_hmac_v2_signs_integration_and_key() -> None:
    body = b'{"x": 1}'
    ts = int(time.time())
    configured = {"emr": "emr-secret", "device": "device-secret"}
    headers = {
        "x-timestamp": str(ts),
        "x-signature": "sha256=" + sign_hmac_v2("emr-secret", ts, "emr", "visit-1", body),
        "idempotency-key": "visit-1",
    }
    identity = verify_inbound(configured, headers, body, tolerance_seconds=300)
    assert (identity.integration, identity.key, identity.scheme) == ("emr", "visit-1", "hmac-v2")
    with pytest.raises(SignatureError):  # the key is signed
        verify_inbound(
            configured, {**headers, "idempotency-key": "visit-2"}, body, tolerance_seconds=300
        )
    with pytest.raises(SignatureError):  # so is the integration
        verify_inbound(
            configured, {**headers, "x-integration": "device"}, body, tolerance_seconds=300
        )
    # The first recipe (timestamp and body only) no longer verifies.
    v1 = hmac.new(b"emr-secret", f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    with pytest.raises(SignatureError):
        verify_inbound(configured, {**headers, "x-signature": v1}, body, tolerance_seconds=300)


async def test_keys_are_scoped_per_integration(stack: Stack) -> None:  # noqa: F811
    """Two integrations send the same key for different facts: each gets its own answer and
    each fact reaches its journey."""
    a, b = await due_journey(stack), await due_journey(stack)
    key = f"visit-{uuid.uuid4()}"
    body_a, body_b = completion(a), completion(b)
    r_emr = await stack.http.post(URL, content=body_a, headers=signed(body_a, key=key))
    r_device = await stack.http.post(
        URL,
        content=body_b,
        headers=signed(body_b, key=key, secret=SECRETS["device"], integration="device"),
    )
    assert r_emr.status_code == r_device.status_code == 202, (r_emr.text, r_device.text)
    assert (r_emr.json()["patient_id"], r_emr.json()["integration"]) == (a, "emr")
    assert (r_device.json()["patient_id"], r_device.json()["integration"]) == (b, "device")
    await wait_stage(stack, a, "recovery")
    await wait_stage(stack, b, "recovery")
    assert (await timeline_kinds(stack, b)).count("session_completed") == 1


async def test_standard_webhook_with_external_ids(stack: Stack) -> None:  # noqa: F811
    pid = await due_journey(stack)
    mapping = {
        "integration": "emr",
        "kind": "appointment",
        "external_id": f"EMR-VISIT-{uuid.uuid4().hex[:8]}",
        "patient_id": pid,
        "session_number": 1,
    }
    r = await stack.http.put("/api/admin/external-ids", json=mapping, headers=stack.auth())
    assert r.status_code == 200, r.text
    r = await stack.http.put(
        "/api/admin/external-ids", json=mapping, headers=stack.auth(stack.staff)
    )
    assert r.status_code == 403  # admins only
    body = json.dumps(
        {
            "external_appointment_id": mapping["external_id"],
            "completed_at": datetime.now(UTC).isoformat(),
        }
    ).encode()
    message_id = f"msg_{uuid.uuid4().hex}"
    ts = int(time.time())
    # A secret that is not "whsec_..." is used as its bytes (api/inbound.py).
    headers = {
        "content-type": "application/json",
        "x-integration": "emr",
        "webhook-id": message_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign_standard(SECRETS["emr"], message_id, ts, body),
    }
    r = await stack.http.post(URL, content=body, headers=headers)
    assert r.status_code == 202, r.text
    assert (r.json()["patient_id"], r.json()["session_number"]) == (pid, 1)
    assert r.json()["idempotency_key"] == message_id
    await wait_stage(stack, pid, "recovery")
    # The same delivery again (a sender's retry): the stored answer, nothing sent.
    again = await stack.http.post(URL, content=body, headers=headers)
    assert (again.status_code, again.json()) == (202, r.json())
    unknown = body.replace(mapping["external_id"].encode(), b"EMR-VISIT-unknown")
    headers_unknown = {
        "content-type": "application/json",
        "webhook-id": f"msg_{uuid.uuid4().hex}",
        "webhook-timestamp": str(int(time.time())),
    }
    headers_unknown["webhook-signature"] = sign_standard(
        SECRETS["emr"],
        headers_unknown["webhook-id"],
        int(headers_unknown["webhook-timestamp"]),
        unknown,
    )
    r = await stack.http.post(URL, content=unknown, headers=headers_unknown)
    assert r.status_code == 422
    nul = body.replace(mapping["external_id"].encode(), b"EMR\\u0000VISIT")
    headers_nul = {**headers_unknown, "webhook-id": f"msg_{uuid.uuid4().hex}"}
    headers_nul["webhook-signature"] = sign_standard(
        SECRETS["emr"], headers_nul["webhook-id"], int(headers_nul["webhook-timestamp"]), nul
    )
    r_nul = await stack.http.post(URL, content=nul, headers=headers_nul)
    assert r_nul.status_code == 422, r_nul.text
    assert r.json()["detail"][0] == {
        "field": "body.external_appointment_id",
        "rule": "unknown_external_id",
        "message": r.json()["detail"][0]["message"],
    }
