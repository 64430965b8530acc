"""Calendar files (``text/calendar``, RFC 5545; see :mod:`activities.ics`).

* One session as an invitation: ``GET /api/journeys/{patient_id}/sessions/{n}.ics`` (staff) and
  ``GET /api/me/sessions/{n}.ics`` (the patient): ``METHOD:REQUEST``, or ``METHOD:CANCEL`` for a
  cancelled or deferred session.
* Subscription feeds behind a private link, ``GET /calendar/feeds/{token}.ics``
  (``METHOD:PUBLISH``): one per patient (made by staff or by the patient, revocable by either)
  and one per clinic for staff (made and revoked by an admin). Only the sha256 of a feed token
  is stored; a revoked or unknown token is a 404, so a link says nothing about why it stopped.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, status
from fastapi.responses import Response
from pydantic import BaseModel

from activities import ics
from activities.repository import StaffRow, hash_token
from api import schemas
from api.deps import PatientDep, ServiceDep, SettingsDep, StaffDep, require_role
from workflows.ids import workflow_id

router = APIRouter(tags=["calendar"])

MEDIA_TYPE = "text/calendar; charset=utf-8"
FEED_TOKEN_PREFIX = "cal_"
FEED_REFRESH = timedelta(hours=1)
FEED_HISTORY = timedelta(days=180)  # the clinic feed shows sessions from this long ago on

ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": schemas.ErrorBody, "description": "Missing or bad token."},
    403: {"model": schemas.ErrorBody, "description": "A token outside its scope or role."},
    404: {"model": schemas.ErrorBody, "description": "Unknown journey, session or feed."},
    422: {"model": schemas.ErrorBody, "description": "A parameter breaks a rule."},
    503: {"model": schemas.ErrorBody, "description": "PostgreSQL down; retry."},
}
ICS_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"text/calendar": {"schema": {"type": "string"}}}, "description": "iCal"},
    **ERRORS,
}
PatientIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
SessionPath = Annotated[int, Path(ge=1, le=100)]
AdminDep = Annotated[StaffRow, Depends(require_role("admin"))]


class CalendarFeedOut(BaseModel):
    """A new private feed link (shown once: only its hash is stored)."""

    id: int
    scope: Literal["patient", "clinic"]
    url: str
    created_at: datetime


class RevokedOut(BaseModel):
    """How many feed links stopped working."""

    revoked: int


def _not_found(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_404_NOT_FOUND, detail=[{"rule": "not_found", "message": message}]
    )


def _ics(body: bytes, filename: str) -> Response:
    return Response(
        body,
        media_type=MEDIA_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "private, no-store",
        },
    )


async def _session_file(service: ServiceDep, patient_id: str, session: int) -> Response:
    journey = await service.db(
        service.pool.fetchrow(
            "SELECT workflow_id, course_number FROM journeys WHERE patient_id = $1", patient_id
        )
    )
    if journey is None:
        raise _not_found("No journey for this patient.")
    found = await service.db(
        ics.journey_sessions(
            service.pool,
            journey["workflow_id"],
            course_number=journey["course_number"],
            session_number=session,
        )
    )
    if not found:
        raise _not_found("This session has no appointment yet.")
    method: ics.Method = "CANCEL" if found[0].cancelled else "REQUEST"
    return _ics(ics.build_calendar(found, method=method), f"session-{session}.ics")


@router.get(
    "/api/journeys/{patient_id}/sessions/{session}.ics",
    responses=ICS_RESPONSES,
    response_class=Response,
)
async def staff_session_ics(
    patient_id: PatientIdPath, session: SessionPath, service: ServiceDep, staff: StaffDep
) -> Response:
    """One session of the current course as an invitation (REQUEST, or CANCEL)."""
    return await _session_file(service, patient_id, session)


@router.get("/api/me/sessions/{session}.ics", responses=ICS_RESPONSES, response_class=Response)
async def my_session_ics(
    session: SessionPath, service: ServiceDep, patient: PatientDep
) -> Response:
    """The patient's own session as an invitation (REQUEST, or CANCEL)."""
    return await _session_file(service, patient, session)


async def _new_feed(
    service: ServiceDep,
    settings: SettingsDep,
    scope: Literal["patient", "clinic"],
    patient_id: str | None,
    clinic_id: str | None,
) -> CalendarFeedOut:
    token = FEED_TOKEN_PREFIX + secrets.token_urlsafe(24)
    row = await service.db(
        service.pool.fetchrow(
            """
            INSERT INTO calendar_feeds (token_hash, scope, patient_id, clinic_id)
            VALUES ($1, $2, $3, $4) RETURNING id, created_at
            """,
            hash_token(token),
            scope,
            patient_id,
            clinic_id,
        )
    )
    assert row is not None  # INSERT … RETURNING always returns the row
    base = str(settings.journey_public_url).rstrip("/")
    return CalendarFeedOut(
        id=row["id"],
        scope=scope,
        url=f"{base}/calendar/feeds/{token}.ics",
        created_at=row["created_at"],
    )


async def _require_journey(service: ServiceDep, patient_id: str) -> None:
    exists = await service.db(
        service.pool.fetchval("SELECT 1 FROM journeys WHERE patient_id = $1", patient_id)
    )
    if not exists:
        raise _not_found("No journey for this patient.")


@router.post(
    "/api/journeys/{patient_id}/calendar-feeds",
    status_code=status.HTTP_201_CREATED,
    response_model=CalendarFeedOut,
    responses=ERRORS,
)
async def create_patient_feed(
    patient_id: PatientIdPath, service: ServiceDep, settings: SettingsDep, staff: StaffDep
) -> CalendarFeedOut:
    """A private calendar feed of the patient's sessions (give the link to the patient)."""
    await _require_journey(service, patient_id)
    return await _new_feed(service, settings, "patient", patient_id, None)


@router.delete(
    "/api/journeys/{patient_id}/calendar-feeds", response_model=RevokedOut, responses=ERRORS
)
async def revoke_patient_feeds(
    patient_id: PatientIdPath, service: ServiceDep, staff: StaffDep
) -> RevokedOut:
    """Stop every feed link of the patient."""
    return await _revoke(service, "patient_id = $1", patient_id)


@router.post(
    "/api/me/calendar-feeds",
    status_code=status.HTTP_201_CREATED,
    response_model=CalendarFeedOut,
    responses=ERRORS,
)
async def create_my_feed(
    service: ServiceDep, settings: SettingsDep, patient: PatientDep
) -> CalendarFeedOut:
    """The patient makes a feed link for their own calendar program."""
    await _require_journey(service, patient)
    return await _new_feed(service, settings, "patient", patient, None)


@router.delete("/api/me/calendar-feeds", response_model=RevokedOut, responses=ERRORS)
async def revoke_my_feeds(service: ServiceDep, patient: PatientDep) -> RevokedOut:
    """The patient stops every feed link of their own."""
    return await _revoke(service, "patient_id = $1", patient)


@router.post(
    "/api/admin/clinics/{clinic_id}/calendar-feeds",
    status_code=status.HTTP_201_CREATED,
    response_model=CalendarFeedOut,
    responses=ERRORS,
)
async def create_clinic_feed(
    clinic_id: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")],
    service: ServiceDep,
    settings: SettingsDep,
    admin: AdminDep,
) -> CalendarFeedOut:
    """A staff feed of every session of the clinic (titles name patient ids, not names)."""
    exists = await service.db(
        service.pool.fetchval("SELECT 1 FROM clinics WHERE clinic_id = $1", clinic_id)
    )
    if not exists:
        raise _not_found("No clinic has this id.")
    return await _new_feed(service, settings, "clinic", None, clinic_id)


@router.delete("/api/admin/calendar-feeds/{feed_id}", response_model=RevokedOut, responses=ERRORS)
async def revoke_feed(
    feed_id: Annotated[int, Path(ge=1, le=2**62)], service: ServiceDep, admin: AdminDep
) -> RevokedOut:
    """Stop one feed link (patient or clinic)."""
    return await _revoke(service, "id = $1", feed_id)


async def _revoke(service: ServiceDep, condition: str, value: object) -> RevokedOut:
    done = await service.db(
        service.pool.execute(
            f"UPDATE calendar_feeds SET revoked_at = now() WHERE {condition} "
            "AND revoked_at IS NULL",
            value,
        )
    )
    return RevokedOut(revoked=int(done.split()[-1]))


@router.get("/calendar/feeds/{token}.ics", responses=ICS_RESPONSES, response_class=Response)
async def feed(
    token: Annotated[str, Path(min_length=8, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")],
    service: ServiceDep,
) -> Response:
    """A subscription feed (METHOD:PUBLISH); the link is the credential."""
    row = await service.db(
        service.pool.fetchrow(
            """
            SELECT f.scope, f.patient_id, f.clinic_id, c.name AS clinic_name
            FROM calendar_feeds f LEFT JOIN clinics c ON c.clinic_id = f.clinic_id
            WHERE f.token_hash = $1 AND f.revoked_at IS NULL
            """,
            hash_token(token),
        )
    )
    if row is None:
        raise _not_found("No such calendar feed.")
    if row["scope"] == "patient":
        sessions = await service.db(
            ics.journey_sessions(service.pool, workflow_id(row["patient_id"]))
        )
        body = ics.build_calendar(
            sessions,
            method="PUBLISH",
            name="My laser sessions",
            calendar_uid=f"feed.{workflow_id(row['patient_id'])}@{ics.UID_DOMAIN}",
            refresh=FEED_REFRESH,
        )
    else:
        sessions = await service.db(
            ics.clinic_sessions(
                service.pool, row["clinic_id"], since=datetime.now(UTC) - FEED_HISTORY
            )
        )
        body = ics.build_calendar(
            sessions,
            method="PUBLISH",
            audience="staff",
            name=f"Laser sessions: {row['clinic_name'] or row['clinic_id']}",
            calendar_uid=f"feed.clinic.{row['clinic_id']}@{ics.UID_DOMAIN}",
            refresh=FEED_REFRESH,
        )
    return _ics(body, "sessions.ics")
