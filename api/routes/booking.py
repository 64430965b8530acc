"""A clinic's own booking system (docs/booking-systems.md): its signed appointment events, and
the admin routes that register it and show the id mappings and the event log.

* ``POST /api/booking/{clinic_id}/events``: public, checked by the booking system's Standard
  Webhooks signature (``api/booking/inbox.py`` has the order of checks and every answer).
* ``PUT|GET|DELETE /api/booking/{clinic_id}/system``: register (and subscribe it to the
  session windows), show, disable. Secrets are shown once, in the answer of the ``PUT``.
* ``PUT|GET /api/booking/{clinic_id}/patients``: the booking system's patient ids ↔ ours.
* ``GET /api/booking/{clinic_id}/appointments``, ``GET /api/booking/{clinic_id}/events``.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api import schemas
from api.booking import inbox, store
from api.booking.registration import (
    BookingSystemIn,
    BookingSystemOut,
    BookingSystemRegistered,
    describe,
    register_system,
)
from api.deps import ServiceDep, SettingsDep
from api.service import ServiceUnavailable
from worker.telemetry import get_metrics
from workflows.bounds import safe_text
from workflows.ids import PATIENT_ID_PATTERN

__all__ = ["router"]

router = APIRouter(prefix="/api/booking", tags=["booking"])

CLINIC_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ClinicPath = Annotated[str, Path(min_length=1, max_length=64, pattern=CLINIC_ID_PATTERN)]
EventStatus = Literal["applied", "duplicate", "anomaly", "refused"]

ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": schemas.ErrorBody, "description": "Missing or bad staff token."},
    403: {"model": schemas.ErrorBody, "description": "Not permitted, or another clinic."},
    404: {"model": schemas.ErrorBody, "description": "No booking system registered."},
    409: {"model": schemas.ErrorBody, "description": "An id is already mapped otherwise."},
    422: {"model": schemas.ErrorBody, "description": "A field breaks a rule."},
    503: {"model": schemas.ErrorBody, "description": "PostgreSQL down; retry."},
}


class PatientMapIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_patient_id: safe_text(200, min_length=1)  # type: ignore[valid-type]
    patient_id: str = Field(min_length=1, max_length=64, pattern=PATIENT_ID_PATTERN)


class PatientMapOut(BaseModel):
    clinic_id: str
    external_patient_id: str
    patient_id: str
    mapped_by: str
    created_at: datetime


class PatientMapList(BaseModel):
    data: list[PatientMapOut]
    count: int


class AppointmentOut(BaseModel):
    clinic_id: str
    external_appointment_id: str
    patient_id: str
    workflow_id: str
    course_number: int
    session_number: int
    status: str
    starts_at: datetime | None
    outcome: str
    created_at: datetime
    updated_at: datetime


class AppointmentList(BaseModel):
    data: list[AppointmentOut]
    count: int


class BookingEventOut(BaseModel):
    id: int
    clinic_id: str
    webhook_id: str
    event_type: str
    external_patient_id: str | None
    external_appointment_id: str | None
    patient_id: str | None
    course_number: int | None
    session_number: int | None
    starts_at: datetime | None
    status: EventStatus
    http_status: int
    reasons: list[dict[str, Any]]
    received_at: datetime


class BookingEventList(BaseModel):
    data: list[BookingEventOut]
    count: int


class AppointmentAnswer(BaseModel):
    """The answer to an applied (or duplicate) appointment event."""

    outcome: Literal["applied", "duplicate"]
    duplicate: bool
    webhook_id: str
    event: str
    clinic_id: str
    patient_id: str
    course: int
    session: int
    external_appointment_id: str
    external_patient_id: str | None
    stage: str


def _problem(code: int, field: str | None, rule: str, message: str) -> HTTPException:
    item: dict[str, str] = {"rule": rule, "message": message}
    if field is not None:
        item["field"] = field
    return HTTPException(code, detail=[item])


# ---------------------------------------------------------------- the booking system's events

_EVENT_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


@router.post(
    "/{clinic_id}/events",
    response_model=AppointmentAnswer,
    responses={
        401: {"model": schemas.ErrorBody, "description": "Unsigned, bad or stale signature."},
        404: {"model": schemas.ErrorBody, "description": "The patient has no journey."},
        409: {
            "model": schemas.FactKeptBody,
            "description": (
                "Not applied: kept for staff as an anomaly with the reasons (e.g. outside the "
                "session's allowed days), or the journey is closed."
            ),
        },
        422: {"model": schemas.ErrorBody, "description": "Bad body, ids or webhook-id."},
        503: {"model": schemas.ErrorBody, "description": "Temporal or PostgreSQL down; retry."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["type", "data"],
                        "properties": {
                            "type": {
                                "type": "string",
                                "enum": [
                                    "appointment.created",
                                    "appointment.rescheduled",
                                    "appointment.cancelled",
                                    "appointment.no_show",
                                    "appointment.completed",
                                ],
                            },
                            "timestamp": {"type": "string"},
                            "data": {
                                "type": "object",
                                "required": ["external_appointment_id"],
                                "properties": {
                                    "external_appointment_id": {"type": "string"},
                                    "external_patient_id": {"type": "string"},
                                    "patient_id": {"type": "string"},
                                    "course": {"type": "integer"},
                                    "session": {"type": "integer"},
                                    "starts_at": {"type": "string", "format": "date-time"},
                                    "completed_at": {"type": "string", "format": "date-time"},
                                },
                            },
                        },
                    }
                }
            },
        },
        "parameters": [
            {"name": h, "in": "header", "required": False, "schema": {"type": "string"}}
            for h in _EVENT_HEADERS
        ],
    },
)
async def appointment_event(
    clinic_id: ClinicPath, request: Request, service: ServiceDep, settings: SettingsDep
) -> Any:
    """An appointment event from the clinic's booking system (signed, Standard Webhooks;
    idempotent on ``webhook-id``): ``appointment.created``, ``.rescheduled``, ``.cancelled``,
    ``.no_show``, ``.completed``. 200 once the journey applied it (or had: ``duplicate``);
    409 with the reasons when it could not (kept for staff)."""
    started = time.perf_counter()
    outcome = "error"
    try:
        answer = await inbox.receive(
            service, settings, clinic_id, request.headers, await request.body()
        )
        outcome = answer.outcome
    except ServiceUnavailable:
        outcome = "unavailable"
        raise
    finally:
        get_metrics().observe_webhook_latency(time.perf_counter() - started, "booking", outcome)
    return JSONResponse(answer.body, status_code=answer.status_code, headers=answer.headers)


# ---------------------------------------------------------------- registration (admins)


@router.put(
    "/{clinic_id}/system",
    response_model=BookingSystemRegistered,
    responses=ERRORS,
)
async def register_booking_system(
    clinic_id: ClinicPath, body: BookingSystemIn, service: ServiceDep
) -> BookingSystemRegistered:
    """Register the clinic's booking system and subscribe it to the session windows (and what
    ends or holds them); replaces an earlier registration. The secrets are shown this once."""
    return await register_system(service, clinic_id, body)


@router.get("/{clinic_id}/system", response_model=BookingSystemOut, responses=ERRORS)
async def get_booking_system(clinic_id: ClinicPath, service: ServiceDep) -> BookingSystemOut:
    """The clinic's booking system (no secrets)."""
    reg = await service.db(store.get_registration(service.pool, clinic_id))
    if reg is None:
        raise _problem(404, None, "not_found", "This clinic has no booking system registered.")
    return BookingSystemOut(**await describe(service, reg))


@router.delete("/{clinic_id}/system", response_model=BookingSystemOut, responses=ERRORS)
async def disable_booking_system(clinic_id: ClinicPath, service: ServiceDep) -> BookingSystemOut:
    """Stop taking its events (401 from now on) and sending it windows."""
    reg = await service.db(store.disable(service.pool, clinic_id))
    if reg is None:
        raise _problem(404, None, "not_found", "This clinic has no booking system registered.")
    return BookingSystemOut(**await describe(service, reg))


# ---------------------------------------------------------------- ids and the event log


@router.put("/{clinic_id}/patients", response_model=PatientMapOut, responses=ERRORS)
async def map_booking_patient(
    clinic_id: ClinicPath, body: PatientMapIn, service: ServiceDep
) -> PatientMapOut:
    """Map the booking system's patient id to ours (a patient of this clinic). Mapping an id
    again to the same patient is a no-op; to another patient, 409."""
    found = await service.db(store.journey_of(service.pool, body.patient_id))
    if found is None or found[0] != clinic_id:
        raise _problem(
            422, "body.patient_id", "unknown_patient", f"No such patient in clinic {clinic_id}."
        )
    try:
        await service.db(
            store.map_patient(
                service.pool, clinic_id, body.external_patient_id, body.patient_id, "staff"
            )
        )
    except store.IdConflict as err:
        raise _problem(409, "body.external_patient_id", "id_conflict", str(err)) from None
    rows = await service.db(store.list_patients(service.pool, clinic_id, 1, 0, body.patient_id))
    return PatientMapOut(**rows[0])


@router.get("/{clinic_id}/patients", response_model=PatientMapList, responses=ERRORS)
async def list_booking_patients(
    clinic_id: ClinicPath,
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> PatientMapList:
    """The patient id mappings, newest first."""
    rows = await service.db(store.list_patients(service.pool, clinic_id, limit, offset))
    return PatientMapList(data=[PatientMapOut(**r) for r in rows], count=len(rows))


@router.get("/{clinic_id}/appointments", response_model=AppointmentList, responses=ERRORS)
async def list_booking_appointments(
    clinic_id: ClinicPath,
    service: ServiceDep,
    patient_id: Annotated[
        str | None, Query(min_length=1, max_length=64, pattern=PATIENT_ID_PATTERN)
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> AppointmentList:
    """The booking system's appointments mapped to our sessions, last changed first."""
    rows = await service.db(
        store.list_appointments(service.pool, clinic_id, patient_id, limit, offset)
    )
    return AppointmentList(data=[AppointmentOut(**r) for r in rows], count=len(rows))


@router.get("/{clinic_id}/events", response_model=BookingEventList, responses=ERRORS)
async def list_booking_events(
    clinic_id: ClinicPath,
    service: ServiceDep,
    status_: Annotated[EventStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> BookingEventList:
    """The signed events the booking system sent, newest first, with what became of each."""
    rows = await service.db(store.list_events(service.pool, clinic_id, status_, limit, offset))
    return BookingEventList(data=[BookingEventOut(**r) for r in rows], count=len(rows))
