"""The generic REST/webhook booking system: JSON events in the Standard Webhooks envelope
(``{"type", "timestamp", "data"}``), our window events as the outbound webhooks send them.

An appointment event (docs/booking-systems.md)::

    {"type": "appointment.created", "timestamp": "2027-03-01T10:00:00Z",
     "data": {"external_appointment_id": "A-1", "external_patient_id": "P-9",
              "patient_id": "p_abc", "course": 1, "session": 1,
              "starts_at": "2027-03-08T10:30:00+01:00"}}

``type`` is one of ``appointment.created``, ``appointment.rescheduled``,
``appointment.cancelled``, ``appointment.no_show``, ``appointment.completed``. Unknown fields
are ignored; every field read is bounded (``workflows/bounds.py``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date
from typing import TYPE_CHECKING, Any, Final, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.booking.adapter import (
    SESSION_WINDOW_KIND,
    BookingSystemAdapter,
    EventInvalid,
    ParsedEvent,
)
from workflows.booking import AppointmentEventKind
from workflows.bounds import ClinicDate, ClinicDateTime, safe_text
from workflows.ids import PATIENT_ID_PATTERN

__all__ = ["ADAPTERS", "EVENT_TYPES", "SUBSCRIBED_EVENT_TYPES", "GenericAdapter", "adapter_for"]

if TYPE_CHECKING:
    ExternalId = str
    ShortText = str
else:
    ExternalId = safe_text(200, min_length=1)
    ShortText = safe_text(64)

EVENT_TYPES: Final[dict[str, AppointmentEventKind]] = {
    "appointment.created": "created",
    "appointment.rescheduled": "rescheduled",
    "appointment.cancelled": "cancelled",
    "appointment.no_show": "no_show",
    "appointment.completed": "completed",
}

SUBSCRIBED_EVENT_TYPES: Final[tuple[str, ...]] = (
    f"journey.{SESSION_WINDOW_KIND}",  # book this session inside these days
    "journey.session_booked",  # the journey booked (or moved) it as the booking system said
    "journey.rescheduled",
    "journey.appointment_cancelled",
    "journey.no_show",  # the journey's own no-show (no report by the day's end + grace)
    "journey.replanned",  # the course's dates changed: new windows follow
    "journey.fact_kept",  # an appointment event the journey kept for staff, with the reasons
    "journey.paused",  # hold the open appointments
    "journey.resumed",
    "journey.deferred",  # a pre-session check deferred the session
    "journey.withdrawn",  # cancel every open appointment
    "journey.excluded",
    "journey.completed",
)
"""What a generic booking system hears by default: the windows and what ends or holds them."""

MAX_BODY_BYTES: Final = 64 * 1024


class _Data(BaseModel):
    model_config = ConfigDict(extra="ignore")

    external_appointment_id: ExternalId
    external_patient_id: ExternalId | None = None
    patient_id: str | None = Field(default=None, pattern=PATIENT_ID_PATTERN)
    session: int | None = Field(default=None, ge=1, le=100)
    course: int | None = Field(default=None, ge=1, le=100)
    starts_at: ClinicDateTime | None = None
    completed_at: ClinicDateTime | None = None


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal[
        "appointment.created",
        "appointment.rescheduled",
        "appointment.cancelled",
        "appointment.no_show",
        "appointment.completed",
    ]
    timestamp: ShortText | None = None
    data: _Data

    @model_validator(mode="after")
    def _start_for_a_booking(self) -> _Envelope:
        if self.type in ("appointment.created", "appointment.rescheduled") and (
            self.data.starts_at is None
        ):
            raise ValueError(f"{self.type} needs data.starts_at (the appointment's start)")
        if self.type == "appointment.completed" and (
            self.data.completed_at is None and self.data.starts_at is None
        ):
            raise ValueError("appointment.completed needs data.completed_at (when it was done)")
        return self


class _WindowDetails(BaseModel):
    model_config = ConfigDict(extra="ignore")

    session: int = Field(ge=1, le=100)
    course: int = Field(default=1, ge=1, le=100)
    allowed_days: list[ClinicDate] = Field(max_length=400)
    earliest: ClinicDate | None = None
    latest: ClinicDate | None = None
    preferred_on: ClinicDate | None = None
    duration_minutes: int | None = Field(default=None, ge=1, le=24 * 60)


class _WindowData(BaseModel):
    model_config = ConfigDict(extra="ignore")

    event_id: ShortText
    sequence: int
    journey_id: ShortText
    patient_id: str = Field(pattern=PATIENT_ID_PATTERN)
    clinic_id: ShortText
    kind: Literal["session_window"]
    occurred_at: ShortText | None = None
    details: _WindowDetails


def _errors(err: pydantic.ValidationError) -> list[dict[str, str]]:
    return [
        {
            "field": ".".join(["body", *(str(p) for p in e["loc"])]),
            "rule": e["type"],
            "message": e["msg"],
        }
        for e in err.errors(include_url=False)
    ]


class GenericAdapter:
    """A booking system that speaks our generic JSON (see the module docstring)."""

    kind = "generic"

    def parse_event(self, headers: Mapping[str, str], body: bytes) -> ParsedEvent:
        if len(body) > MAX_BODY_BYTES:
            raise EventInvalid(
                [{"field": "body", "rule": "too_large", "message": "The body is over 64 KiB."}]
            )
        try:
            envelope = _Envelope.model_validate_json(body)
        except pydantic.ValidationError as err:
            raise EventInvalid(_errors(err), _claimed_type(body)) from None
        d = envelope.data
        return ParsedEvent(
            kind=EVENT_TYPES[envelope.type],
            event_type=envelope.type,
            external_appointment_id=d.external_appointment_id,
            external_patient_id=d.external_patient_id,
            patient_id=d.patient_id,
            session_number=d.session,
            course_number=d.course,
            starts_at=d.starts_at,
            completed_at=d.completed_at,
        )

    def window_payload(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The window as a flat document (the generic booking system's view of the outbound
        ``journey.session_window`` webhook): which patient, which session, on which days."""
        if event.get("type") != f"journey.{SESSION_WINDOW_KIND}":
            raise ValueError("not a journey.session_window event")
        try:
            data = _WindowData.model_validate(event.get("data"))
        except pydantic.ValidationError as err:
            raise ValueError(f"not a session window: {err.error_count()} problem(s)") from None
        w = data.details

        def iso(day: date | None) -> str | None:
            return day.isoformat() if day else None

        days = sorted(w.allowed_days)
        return {
            "window_id": data.event_id,
            "sequence": data.sequence,
            "clinic_id": data.clinic_id,
            "journey_id": data.journey_id,
            "patient_id": data.patient_id,
            "course": w.course,
            "session": w.session,
            "allowed_days": [d.isoformat() for d in days],
            "earliest": iso(w.earliest or (days[0] if days else None)),
            "latest": iso(w.latest or (days[-1] if days else None)),
            "preferred_on": iso(w.preferred_on),
            "duration_minutes": w.duration_minutes,
        }

    def event_types(self) -> list[str]:
        return list(SUBSCRIBED_EVENT_TYPES)


def _claimed_type(body: bytes) -> str:
    """The ``type`` a refused body claimed, bounded, for the event log."""
    try:
        value = json.loads(body).get("type")
    except (ValueError, AttributeError, RecursionError):
        return "invalid"
    if isinstance(value, str) and 0 < len(value) <= 64 and value.isprintable():
        return value
    return "invalid"


ADAPTERS: Final[dict[str, BookingSystemAdapter]] = {"generic": GenericAdapter()}


def adapter_for(kind: str) -> BookingSystemAdapter:
    """The adapter registered under ``kind`` (``booking_systems.adapter``).

    Raises:
        KeyError: no such adapter.
    """
    return ADAPTERS[kind]
