"""Integrations: a booking system, EMR or laser device reports that a session happened.

``POST /api/integrations/session-completed`` is signed (Standard Webhooks, or HMAC v2; see
:mod:`api.inbound`) with its idempotency key (``webhook-id`` or ``Idempotency-Key``), which is
scoped per integration; the patient and session may be named by the integration's own ids
(``external_patient_id``, ``external_appointment_id``: the ``external_ids`` mapping). It
answers 202 only once the journey has applied the fact (``report_session_completed``), so
nothing acknowledged is lost or merely "received". A repeat with the same key answers exactly
what the first got and sends nothing; two copies racing each other both reach the workflow,
which applies the key once (the key is the fact's ``idempotency_key``; the second answers
``duplicate``). A fact the journey cannot apply now (a wrong session, a date in its future, a
paused journey) is kept for staff as an anomaly and answered 409 ``FactKeptForStaff`` with the
reasons; that answer is not stored, so a resend with the same key reaches the journey again
(it is applied once the journey can take it). Checks run in this order: signature (401), then
the key and the body (422), then the journey (404), then the journey's answer (409).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pydantic
from fastapi import APIRouter, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from activities import repository
from api import schemas
from api.deps import ServiceDep, SettingsDep
from api.inbound import (
    InvalidKey,
    SignatureError,
    UnknownExternalId,
    resolve_external_ids,
    verify_inbound,
)
from api.service import FactKept, JourneyNotFound, ServiceUnavailable
from worker.telemetry import get_metrics

router = APIRouter(prefix="/api/integrations", tags=["integrations"])

IDEMPOTENCY_SCOPE = "session-completed"
MAX_KEY_LENGTH = 200
MAX_BODY_BYTES = 64 * 1024


def _body_error(loc: tuple[str | int, ...], rule: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": loc, "type": rule, "msg": message, "input": None}])


@router.post(
    "/session-completed",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=schemas.SessionCompletedOut,
    responses={
        401: {"model": schemas.ErrorBody, "description": "Unsigned, bad or stale signature."},
        404: {"model": schemas.ErrorBody, "description": "Unknown journey."},
        409: {
            "model": schemas.FactKeptBody,
            "description": "Not applied now: kept for staff as an anomaly, with the reasons.",
        },
        422: {"model": schemas.ErrorBody, "description": "Bad body or Idempotency-Key."},
        503: {"model": schemas.ErrorBody, "description": "Temporal or PostgreSQL down; retry."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schemas.SessionCompletedIn.model_json_schema()}
            },
        },
        "parameters": [
            {
                "name": h,
                "in": "header",
                "required": False,  # one of the two schemes (api/inbound.py)
                "schema": {"type": "string"},
            }
            for h in (
                "webhook-id",
                "webhook-timestamp",
                "webhook-signature",
                "Idempotency-Key",
                "X-Signature",
                "X-Timestamp",
                "X-Integration",
            )
        ],
    },
)
async def session_completed(request: Request, service: ServiceDep, settings: SettingsDep) -> Any:
    """Report a completed session (signed; idempotent on ``Idempotency-Key``).

    Its handling time is recorded in ``webhook_latency_seconds`` by integration and outcome.
    """
    started = time.perf_counter()
    # Until the signature is verified the header is the caller's word: an unknown name is
    # reported as "unknown" so nobody can mint metric series by sending made-up names.
    claimed = request.headers.get("x-integration") or ""
    labels = {
        "integration": claimed if claimed in settings.journey_integration_secrets else "unknown",
        "outcome": "error",
    }
    try:
        response = await _session_completed(request, service, settings, labels)
    except HTTPException as err:
        labels["outcome"] = "bad_signature" if err.status_code == 401 else f"http_{err.status_code}"
        raise
    except RequestValidationError:
        labels["outcome"] = "invalid"
        raise
    except JourneyNotFound:
        labels["outcome"] = "not_found"
        raise
    except ServiceUnavailable:
        labels["outcome"] = "unavailable"
        raise
    finally:
        get_metrics().observe_webhook_latency(
            time.perf_counter() - started, labels["integration"], labels["outcome"]
        )
    return response


async def _session_completed(
    request: Request, service: ServiceDep, settings: SettingsDep, labels: dict[str, str]
) -> JSONResponse:
    """The webhook's checks and effect; sets ``labels["integration"]`` once verified and
    ``labels["outcome"]`` (``accepted``, ``duplicate``) on success, ``kept_for_staff`` when the
    journey kept the fact as an anomaly."""
    raw = await request.body()
    # Standard Webhooks or HMAC v2; both sign the integration (its secret), the key, the
    # timestamp and the body. Keys are scoped per integration (api/inbound.py).
    try:
        identity = verify_inbound(
            settings.journey_integration_secrets,
            request.headers,
            raw,
            tolerance_seconds=settings.journey_webhook_tolerance_seconds,
        )
    except SignatureError as err:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=[{"rule": "bad_signature", "message": f"Refused: {err}."}],
        ) from None
    except InvalidKey as err:
        raise _body_error(("header", err.header), "required", str(err)) from None
    integration, key = identity.integration, identity.key
    labels["integration"] = integration
    if len(raw) > MAX_BODY_BYTES:
        raise _body_error(("body",), "too_large", "The body is larger than 64 KiB.")
    try:
        resolved = await service.db(resolve_external_ids(service.pool, integration, raw))
    except UnknownExternalId as err:
        raise _body_error(("body", err.field), "unknown_external_id", str(err)) from None
    try:
        fact = schemas.SessionCompletedIn.model_validate_json(resolved)
    except pydantic.ValidationError as err:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in err.errors(include_url=False)]
        ) from None
    request_hash = hashlib.sha256(
        json.dumps(fact.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()

    stored = await service.db(
        repository.get_idempotent_response(service.pool, identity.scope(IDEMPOTENCY_SCOPE), key)
    )
    duplicate = stored is not None
    if stored is None:
        try:
            result = await service.complete_session(
                fact.patient_id,
                fact.session_number,
                fact.completed_at,
                idempotency_key=identity.fact_key,
                source=fact.source or integration,
            )
        except FactKept:
            # Not stored as the key's answer: a resend must reach the journey again.
            labels["outcome"] = "kept_for_staff"
            raise
        answer = schemas.SessionCompletedOut(
            outcome=result.outcome,
            duplicate=result.outcome == "duplicate",
            patient_id=fact.patient_id,
            session_number=fact.session_number,
            idempotency_key=key,
            integration=integration,
        )
        # First writer wins: a racing copy gets the same stored answer.
        stored = await service.db(
            repository.save_idempotent_response(
                service.pool,
                identity.scope(IDEMPOTENCY_SCOPE),
                key,
                request_hash,
                status.HTTP_202_ACCEPTED,
                answer.model_dump(mode="json"),
            )
        )
    if stored.request_hash != request_hash:
        raise _body_error(
            ("header", "Idempotency-Key"),
            "idempotency_key_reused",
            "This Idempotency-Key was already used for a different request.",
        )
    labels["outcome"] = "duplicate" if duplicate else "accepted"
    return JSONResponse(stored.response, status_code=stored.status_code)
