"""Admins: outbound webhook subscribers, their deliveries and the dead-letter list, and the
external ids integrations use (``/api/admin/...``). Admin role only (others: 403).

A subscriber's secret is shown once, in the answer that creates it; lists never show it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field

from activities import webhooks
from activities.repository import StaffRow
from api import schemas
from api.deps import ServiceDep, require_role
from workflows.bounds import safe_text

router = APIRouter(prefix="/api/admin", tags=["admin-integrations"])

AdminDep = Annotated[StaffRow, Depends(require_role("admin"))]
ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": schemas.ErrorBody, "description": "Missing or bad staff token."},
    403: {"model": schemas.ErrorBody, "description": "Not an admin."},
    404: {"model": schemas.ErrorBody, "description": "No such subscriber or delivery."},
    422: {"model": schemas.ErrorBody, "description": "A field breaks a rule."},
    503: {"model": schemas.ErrorBody, "description": "PostgreSQL down; retry."},
}

CLINIC_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
EventType = Annotated[str, Field(pattern=r"^(\*|journey\.[a-z_]{1,60})$")]
DeliveryStatus = Literal["pending", "sending", "delivered", "dead"]


class SubscriberCreate(BaseModel):
    """A new subscriber: the clinic whose journeys it hears, where, and which event types
    (``journey.<kind>``, e.g. ``journey.session_booked``; empty or ``*``: every type)."""

    model_config = ConfigDict(extra="forbid")

    clinic_id: str = Field(min_length=1, max_length=64, pattern=CLINIC_ID_PATTERN)
    url: str = Field(min_length=8, max_length=2000, pattern=r"^https?://[\x21-\x7e]+$")
    event_types: list[EventType] = Field(default=[], max_length=50)
    description: safe_text(200) = ""  # type: ignore[valid-type]
    secret: str | None = Field(
        default=None,
        pattern=r"^whsec_[A-Za-z0-9+/=]{24,200}$",
        description="Your own Standard Webhooks secret; one is generated when omitted.",
    )


class SubscriberOut(BaseModel):
    """A subscriber as listed (no secret)."""

    id: int
    clinic_id: str
    url: str
    event_types: list[str]
    description: str
    created_at: datetime
    disabled_at: datetime | None


class SubscriberCreated(SubscriberOut):
    """The new subscriber and its signing secret (shown this once)."""

    secret: str


class SubscriberList(BaseModel):
    data: list[SubscriberOut]
    count: int


class DeliveryOut(BaseModel):
    """One delivery of one event to one subscriber."""

    id: int
    subscriber_id: int
    event_id: int
    message_id: str
    workflow_id: str
    event_type: str
    status: DeliveryStatus
    attempts: int
    replays: int
    next_attempt_at: datetime
    last_error: str | None
    last_status: int | None
    created_at: datetime
    delivered_at: datetime | None
    dead_at: datetime | None
    payload: dict[str, Any]


class DeliveryList(BaseModel):
    data: list[DeliveryOut]
    count: int


class ReplayResult(BaseModel):
    """How many dead deliveries were put back in line."""

    replayed: int


class ExternalIdIn(BaseModel):
    """Map an integration's own id to our patient (``kind=patient``) or to one session of the
    patient's journey (``kind=appointment``, with ``session_number``)."""

    model_config = ConfigDict(extra="forbid")

    integration: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["patient", "appointment"]
    external_id: str = Field(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")
    patient_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
    session_number: int | None = Field(default=None, ge=1, le=100)


class ExternalIdOut(ExternalIdIn):
    created_at: datetime


def _not_found(what: str) -> HTTPException:
    return HTTPException(
        status.HTTP_404_NOT_FOUND, detail=[{"rule": "not_found", "message": f"No such {what}."}]
    )


def _invalid(field: str, rule: str, message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[{"field": field, "rule": rule, "message": message}],
    )


_SUBSCRIBER_COLUMNS = "id, clinic_id, url, event_types, description, created_at, disabled_at"


@router.post(
    "/webhooks/subscribers",
    status_code=status.HTTP_201_CREATED,
    response_model=SubscriberCreated,
    responses=ERRORS,
)
async def create_subscriber(
    body: SubscriberCreate, service: ServiceDep, admin: AdminDep
) -> SubscriberCreated:
    """Register a subscriber; the answer holds its secret, shown this once."""
    secret = body.secret or webhooks.new_secret()
    try:
        row = await service.db(
            service.pool.fetchrow(
                f"""
                INSERT INTO webhook_subscribers (clinic_id, url, event_types, description, secret)
                VALUES ($1, $2, $3, $4, $5) RETURNING {_SUBSCRIBER_COLUMNS}
                """,
                body.clinic_id,
                body.url,
                sorted(set(body.event_types) - {"*"}),
                body.description,
                secret,
            )
        )
    except asyncpg.ForeignKeyViolationError:
        raise _invalid("body.clinic_id", "unknown_clinic", "No clinic has this id.") from None
    assert row is not None  # INSERT … RETURNING always returns the row
    return SubscriberCreated(**dict(row), secret=secret)


@router.get("/webhooks/subscribers", response_model=SubscriberList, responses=ERRORS)
async def list_subscribers(
    service: ServiceDep,
    admin: AdminDep,
    clinic: Annotated[str | None, Query(max_length=64, pattern=CLINIC_ID_PATTERN)] = None,
) -> SubscriberList:
    """Every subscriber (of one clinic with ``clinic``), newest first, secrets left out."""
    rows = await service.db(
        service.pool.fetch(
            f"""
            SELECT {_SUBSCRIBER_COLUMNS} FROM webhook_subscribers
            WHERE $1::text IS NULL OR clinic_id = $1 ORDER BY id DESC
            """,
            clinic,
        )
    )
    data = [SubscriberOut(**dict(r)) for r in rows]
    return SubscriberList(data=data, count=len(data))


@router.delete(
    "/webhooks/subscribers/{subscriber_id}", response_model=SubscriberOut, responses=ERRORS
)
async def disable_subscriber(
    subscriber_id: Annotated[int, Path(ge=1, le=2**62)],
    service: ServiceDep,
    admin: AdminDep,
) -> SubscriberOut:
    """Stop sending to a subscriber (its open deliveries stay listed; events after this are not
    fanned out to it)."""
    row = await service.db(
        service.pool.fetchrow(
            f"""
            UPDATE webhook_subscribers SET disabled_at = coalesce(disabled_at, now())
            WHERE id = $1 RETURNING {_SUBSCRIBER_COLUMNS}
            """,
            subscriber_id,
        )
    )
    if row is None:
        raise _not_found("subscriber")
    return SubscriberOut(**dict(row))


@router.get("/webhooks/deliveries", response_model=DeliveryList, responses=ERRORS)
async def list_deliveries(
    service: ServiceDep,
    admin: AdminDep,
    status_: Annotated[DeliveryStatus | None, Query(alias="status")] = None,
    subscriber_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    journey_id: Annotated[
        str | None, Query(max_length=80, pattern=r"^journey-[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> DeliveryList:
    """Deliveries, newest event first; ``status=dead`` is the dead-letter list."""
    where = """
        WHERE ($1::text IS NULL OR status = $1) AND ($2::bigint IS NULL OR subscriber_id = $2)
          AND ($3::text IS NULL OR workflow_id = $3)
    """
    async with service.pool.acquire() as conn:
        total = await service.db(
            conn.fetchval(
                f"SELECT count(*) FROM webhook_deliveries {where}",
                status_,
                subscriber_id,
                journey_id,
            )
        )
        rows = await service.db(
            conn.fetch(
                f"""
                SELECT * FROM webhook_deliveries {where}
                ORDER BY event_id DESC, id DESC LIMIT $4 OFFSET $5
                """,
                status_,
                subscriber_id,
                journey_id,
                limit,
                offset,
            )
        )
    return DeliveryList(
        data=[DeliveryOut.model_validate(dict(r)) for r in rows], count=int(total or 0)
    )


@router.post(
    "/webhooks/deliveries/{delivery_id}/replay", response_model=ReplayResult, responses=ERRORS
)
async def replay_delivery(
    delivery_id: Annotated[int, Path(ge=1, le=2**62)], service: ServiceDep, admin: AdminDep
) -> ReplayResult:
    """Send a dead delivery again (same ``webhook-id``, attempts from zero)."""
    if not await service.db(webhooks.replay(service.pool, delivery_id)):
        raise _not_found("dead delivery")
    return ReplayResult(replayed=1)


@router.post(
    "/webhooks/subscribers/{subscriber_id}/replay-dead",
    response_model=ReplayResult,
    responses=ERRORS,
)
async def replay_dead(
    subscriber_id: Annotated[int, Path(ge=1, le=2**62)], service: ServiceDep, admin: AdminDep
) -> ReplayResult:
    """Send every dead delivery of a subscriber again, oldest event first."""
    done = await service.db(
        service.pool.execute(
            """
            UPDATE webhook_deliveries
            SET status = 'pending', attempts = 0, next_attempt_at = now(), dead_at = NULL,
                replays = replays + 1
            WHERE subscriber_id = $1 AND status = 'dead'
            """,
            subscriber_id,
        )
    )
    return ReplayResult(replayed=int(done.split()[-1]))


@router.put("/external-ids", response_model=ExternalIdOut, responses=ERRORS)
async def put_external_id(
    body: ExternalIdIn, service: ServiceDep, admin: AdminDep
) -> ExternalIdOut:
    """Map an integration's id to our patient or session (replaces an earlier mapping of the
    same id)."""
    if body.kind == "appointment" and body.session_number is None:
        raise _invalid("body.session_number", "required", "An appointment needs its session.")
    try:
        row = await service.db(
            service.pool.fetchrow(
                """
                INSERT INTO external_ids (integration, kind, external_id, patient_id,
                                          session_number)
                VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (integration, kind, external_id) DO UPDATE SET
                    patient_id = EXCLUDED.patient_id, session_number = EXCLUDED.session_number
                RETURNING *
                """,
                body.integration,
                body.kind,
                body.external_id,
                body.patient_id,
                body.session_number if body.kind == "appointment" else None,
            )
        )
    except asyncpg.ForeignKeyViolationError:
        raise _invalid("body.patient_id", "unknown_patient", "No patient has this id.") from None
    assert row is not None  # INSERT … RETURNING always returns the row
    return ExternalIdOut.model_validate(dict(row))
