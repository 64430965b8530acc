"""The SMS provider's delivery-status callback and the patients' replies (issue 18,
docs/messaging.md).

Replies: ``POST /api/messaging/sms-reply`` (the provider's inbound-message webhook, form fields
``MessageSid``, ``From``, ``Body``, signed like the status callback over
``{JOURNEY_PUBLIC_URL}/api/messaging/sms-reply``) and ``POST /api/messaging/email-reply`` (the
mail relay's JSON, Standard Webhooks signed with ``MAIL_RELAY_SECRET``). Both keep the reply in PostgreSQL, apply STOP/START at once
and report the reply to the journey (``report_reply``: id, kind and session only).

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
from datetime import datetime
from typing import Any, Literal
from urllib.parse import parse_qsl

import pydantic
from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from activities.channels import PROVIDER_STATUSES
from activities.delivery import record_delivery_status
from activities.replies import StoredReply, record_outcome, store_reply
from api import schemas
from api.deps import ServiceDep, SettingsDep
from api.inbound import InvalidKey, SignatureError, verify_inbound
from api.routes.scheduling import session_free_times
from api.service import InvalidRequest, JourneyNotFound, JourneyService, RequestRefused
from worker.settings import Settings
from workflows.replies import PatientReplyReport, ReplyKind, reply_key

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


def _provider_form(*fields: str) -> dict[str, Any]:
    """The OpenAPI of a provider's signed form post (the status callback, an inbound SMS)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {f: {"type": "string"} for f in fields},
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
    }


def _signed_form(request: Request, body: bytes, settings: Settings, url: str) -> dict[str, str]:
    """The provider's form fields, once its signature over ``url`` and them checked (401 if not)."""
    try:
        params = dict(parse_qsl(body.decode(), keep_blank_values=True))
    except UnicodeDecodeError:
        params = {}
    token = settings.sms_auth_token
    expected = (
        provider_signature(token.get_secret_value(), url, params) if token is not None else None
    )
    given = request.headers.get(SIGNATURE_HEADER, "")
    if expected is None or not hmac.compare_digest(expected.encode(), given.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=[{"rule": "bad_signature", "message": "Missing or bad provider signature."}],
        )
    return params


@router.post(
    "/sms-status",
    response_model=DeliveryStatusOut,
    responses={
        401: {"model": schemas.ErrorBody, "description": "Unsigned or badly signed."},
        422: {"model": schemas.ErrorBody, "description": "No message id or unknown status."},
        503: {"model": schemas.ErrorBody, "description": "PostgreSQL down; the provider retries."},
    },
    openapi_extra=_provider_form("MessageSid", "MessageStatus", "ErrorCode", "ErrorMessage"),
)
async def sms_status(
    request: Request, service: ServiceDep, settings: SettingsDep
) -> DeliveryStatusOut:
    """Record an SMS's delivery status reported by the provider."""
    body = await request.body()
    params = _signed_form(request, body, settings, settings.sms_status_callback_url)
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


# ---------------------------------------------------------------- replies (issue 18 items 2-3)

SMS_REPLY_PATH = "/api/messaging/sms-reply"
MAIL_RELAY = "mail-relay"
"""The sender name the mail relay's signature is checked under (its secret: MAIL_RELAY_SECRET)."""
MAX_REPLY_BYTES = 64 * 1024
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

ReplyResult = Literal["applied", "staff_task", "duplicate", "unmatched", "journey_closed"]


class ReplyOut(BaseModel):
    """What became of a reply: ``applied`` (confirmed, reschedule times sent, opt-out or opt-in
    recorded), ``staff_task`` (a person answers it), ``duplicate`` (that message id was handled
    before), ``unmatched`` (no patient has that number or address: kept, nothing else),
    ``journey_closed`` (kept; STOP/START still applied)."""

    result: ReplyResult
    kind: ReplyKind
    reply_id: int


class EmailReplyIn(BaseModel):
    """An inbound e-mail, as the mail relay posts it (Standard Webhooks signed JSON)."""

    model_config = ConfigDict(extra="ignore")

    message_id: str = Field(min_length=1, max_length=998, description="The e-mail's Message-ID.")
    sender: str = Field(
        min_length=3, max_length=320, alias="from", description="The sender's address."
    )
    subject: str = Field(default="", max_length=998)
    text: str = Field(max_length=MAX_REPLY_BYTES, description="The plain-text body.")


def sms_reply_url(settings: Settings) -> str:
    """The inbound-SMS webhook URL the provider is configured with (and signs)."""
    return settings.journey_public_url.rstrip("/") + SMS_REPLY_PATH


async def handle_reply(
    service: JourneyService,
    *,
    channel: Literal["email", "sms"],
    provider_message_id: str,
    sender: str,
    body: str,
) -> ReplyOut:
    """Keep the reply, apply STOP/START at once, and report it to the journey."""
    stored = await service.db(
        store_reply(
            service.pool,
            provider_message_id=provider_message_id,
            channel=channel,
            sender=sender,
            body=body,
        )
    )
    if stored.patient_id is None:
        return ReplyOut(result="unmatched", kind=stored.kind, reply_id=stored.id)
    if not stored.new and stored.outcome is not None:
        return ReplyOut(result="duplicate", kind=stored.kind, reply_id=stored.id)
    report = PatientReplyReport(
        idempotency_key=reply_key(channel, provider_message_id),
        reply_id=stored.id,
        kind=stored.kind,
        session_number=stored.session_number,
        channel=channel,
        offers=await _free_offers(service, stored.patient_id, stored)
        if stored.kind == "reschedule"
        else [],
    )
    try:
        answer = await service.report_reply(stored.patient_id, report)
    except RequestRefused as refused:  # the journey is closed (or gone)
        await service.db(record_outcome(service.pool, stored.id, "journey_closed", str(refused)))
        return ReplyOut(result="journey_closed", kind=stored.kind, reply_id=stored.id)
    except JourneyNotFound:
        await service.db(record_outcome(service.pool, stored.id, "journey_closed", "no journey"))
        return ReplyOut(result="journey_closed", kind=stored.kind, reply_id=stored.id)
    result: ReplyResult = "staff_task" if stored.kind == "other" or answer.reasons else "applied"
    detail = "; ".join(r.message for r in answer.reasons)
    if answer.outcome == "duplicate":
        # The journey took this reply before (an attempt whose answer was lost, or a retry
        # racing the first): the first recorded outcome stands.
        detail = "reported again: the journey had it already"
    await service.db(record_outcome(service.pool, stored.id, result, detail))
    return ReplyOut(
        result="duplicate" if answer.outcome == "duplicate" else result,
        kind=stored.kind,
        reply_id=stored.id,
    )


@router.post(
    "/sms-reply",
    response_class=Response,
    responses={
        200: {
            "description": "Received (empty TwiML). ``X-Reply-Result`` says what became of it.",
            "content": {"application/xml": {"schema": {"type": "string"}}},
        },
        401: {"model": schemas.ErrorBody, "description": "Unsigned or badly signed."},
        422: {"model": schemas.ErrorBody, "description": "No MessageSid or From."},
        503: {"model": schemas.ErrorBody, "description": "Temporal or PostgreSQL down; retry."},
    },
    openapi_extra=_provider_form("MessageSid", "From", "To", "Body"),
)
async def sms_reply(request: Request, service: ServiceDep, settings: SettingsDep) -> Response:
    """An SMS a patient sent to the clinic's number (the provider's inbound-message webhook)."""
    body = await request.body()
    if len(body) > MAX_REPLY_BYTES:
        raise _invalid("Body", "too_large", "The request is larger than 64 KiB.")
    params = _signed_form(request, body, settings, sms_reply_url(settings))
    sid = params.get("MessageSid") or params.get("SmsSid") or ""
    sender = params.get("From", "")
    if not sid or not sender or len(sid) > 200 or len(sender) > 64:
        raise _invalid("MessageSid", "required", "MessageSid and From are required.")
    out = await handle_reply(
        service,
        channel="sms",
        provider_message_id=sid,
        sender=sender,
        body=params.get("Body", "")[:5000],
    )
    return Response(
        EMPTY_TWIML,
        media_type="application/xml",
        headers={"X-Reply-Result": out.result, "X-Reply-Kind": out.kind},
    )


@router.post(
    "/email-reply",
    response_model=ReplyOut,
    responses={
        401: {"model": schemas.ErrorBody, "description": "Unsigned, badly signed or stale."},
        422: {"model": schemas.ErrorBody, "description": "A field is missing or too long."},
        503: {"model": schemas.ErrorBody, "description": "Temporal or PostgreSQL down; retry."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": EmailReplyIn.model_json_schema()}},
        },
        "parameters": [
            {"name": h, "in": "header", "required": True, "schema": {"type": "string"}}
            for h in ("webhook-id", "webhook-timestamp", "webhook-signature")
        ],
    },
)
async def email_reply(request: Request, service: ServiceDep, settings: SettingsDep) -> ReplyOut:
    """An e-mail a patient sent in answer to a message, posted by the mail relay as JSON signed
    with the Standard Webhooks scheme and ``MAIL_RELAY_SECRET``."""
    raw = await request.body()
    # Its own secret, not an integration's: a mail relay may not report sessions.
    secret = settings.mail_relay_secret
    relay = {MAIL_RELAY: secret} if secret is not None else {}
    try:
        verify_inbound(
            relay,
            {**request.headers, "x-integration": MAIL_RELAY},
            raw,
            tolerance_seconds=settings.journey_webhook_tolerance_seconds,
        )
    except (SignatureError, InvalidKey) as err:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=[{"rule": "bad_signature", "message": f"Refused: {err}."}],
        ) from None
    if len(raw) > MAX_REPLY_BYTES + 4096:
        raise _invalid("text", "too_large", "The body is larger than 64 KiB.")
    try:
        mail = EmailReplyIn.model_validate_json(raw)
    except pydantic.ValidationError as err:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in err.errors(include_url=False)]
        ) from None
    return await handle_reply(
        service,
        channel="email",
        provider_message_id=mail.message_id,
        sender=mail.sender,
        body=mail.text,
    )


async def _free_offers(
    service: JourneyService, patient_id: str, stored: StoredReply
) -> list[datetime]:
    """Up to three free start times for the session the reply is about (the clinic's slots;
    empty for a clinic without resources on file, or when there is no session to move)."""
    if stored.session_number is None:
        return []
    try:
        found = await session_free_times(service, patient_id, stored.session_number, 3)
    except (InvalidRequest, JourneyNotFound):
        return []
    return [t.starts_at for t in found.free_times[:3]]


def _invalid(field: str, rule: str, message: str) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": ("body", field), "type": rule, "msg": message, "input": None}]
    )
