"""The SMS provider's delivery-status callback (issue 18, docs/messaging.md).

``POST /api/messaging/sms-status`` takes what a Twilio-compatible provider posts to a message's
``StatusCallback`` (form fields ``MessageSid``, ``MessageStatus``, ``ErrorCode``,
``ErrorMessage``), signed with the account's auth token the provider's way
(``X-Twilio-Signature``: base64 HMAC-SHA1 of the callback URL followed by every field's name and
value, sorted by name). The URL signed is ``SETTINGS.sms_status_callback_url`` (the public URL
the channel gave the provider), not the one the request arrived at, so a proxy in front does not
break the check. The status moves the outbox row's ``delivery_status`` forward only; ``failed``
hands the message on to the patient's other channel or to staff (activities/delivery.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Literal
from urllib.parse import parse_qsl

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from activities.channels import PROVIDER_STATUSES
from activities.delivery import record_delivery_status
from api import schemas
from api.deps import ServiceDep, SettingsDep

router = APIRouter(prefix="/api/messaging", tags=["messaging"])

SIGNATURE_HEADER = "X-Twilio-Signature"


class DeliveryStatusOut(BaseModel):
    """What became of the callback: ``applied`` (the row moved forward), ``stale`` (a late or
    repeated status; nothing changed) or ``unknown`` (no message with that id: ignored)."""

    result: Literal["applied", "stale", "unknown"]


def provider_signature(token: str, url: str, params: dict[str, str]) -> str:
    """The ``X-Twilio-Signature`` of a form post to ``url``."""
    data = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@router.post(
    "/sms-status",
    response_model=DeliveryStatusOut,
    responses={
        401: {"model": schemas.ErrorBody, "description": "Unsigned or badly signed."},
        422: {"model": schemas.ErrorBody, "description": "No message id or unknown status."},
        503: {"model": schemas.ErrorBody, "description": "PostgreSQL down; the provider retries."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "MessageSid": {"type": "string"},
                            "MessageStatus": {"type": "string"},
                            "ErrorCode": {"type": "string"},
                            "ErrorMessage": {"type": "string"},
                        },
                    }
                }
            },
        },
        "parameters": [
            {
                "name": SIGNATURE_HEADER,
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
            }
        ],
    },
)
async def sms_status(
    request: Request, service: ServiceDep, settings: SettingsDep
) -> DeliveryStatusOut:
    """Record an SMS's delivery status reported by the provider."""
    body = await request.body()
    try:
        params = dict(parse_qsl(body.decode(), keep_blank_values=True))
    except UnicodeDecodeError:
        params = {}
    token = settings.sms_auth_token
    expected = (
        provider_signature(token.get_secret_value(), settings.sms_status_callback_url, params)
        if token is not None
        else None
    )
    given = request.headers.get(SIGNATURE_HEADER, "")
    if expected is None or not hmac.compare_digest(expected.encode(), given.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=[{"rule": "bad_signature", "message": "Missing or bad provider signature."}],
        )
    sid = params.get("MessageSid") or params.get("SmsSid")
    new_status = PROVIDER_STATUSES.get(params.get("MessageStatus") or params.get("SmsStatus", ""))
    if not sid or new_status is None:
        raise RequestValidationError(
            [
                {
                    "loc": ("body", "MessageStatus"),
                    "type": "unknown_status",
                    "msg": "MessageSid and a known MessageStatus are required.",
                    "input": None,
                }
            ]
        )
    reason = " ".join(
        part for part in (params.get("ErrorCode"), params.get("ErrorMessage")) if part
    )
    applied = await record_delivery_status(
        service.pool, sid, new_status, reason or f"provider status {params.get('MessageStatus')}"
    )
    return DeliveryStatusOut(
        result="unknown" if applied is None else "applied" if applied else "stale"
    )
