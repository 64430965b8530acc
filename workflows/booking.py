"""The booking contract: how a journey gets a concrete slot for a session, and how a clinic's
own booking system reports appointments to it (issue 17, docs/scheduling.md).

Two modes, per clinic (``ClinicSettings.booking``):

- ``builtin``: the journey computes the session's allowed days from the clinical rules and asks
  the ``reserve_slot`` activity for a free slot inside them. The reservation lives in
  PostgreSQL under an exclusion constraint over (resource, time range), so two journeys can
  never hold the same laser or practitioner at once. A clinic with no resources on file has no
  known capacity: the session gets the clinic's default start time, as before.
- ``external``: the clinic's booking system owns the slots. The journey publishes the allowed
  window (a ``session_window`` journey event, fanned out by the outbound webhooks) and waits
  for the booking system's appointment events (``report_appointment``).

Every model carries ids only, never names of people (PHI stays in PostgreSQL).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from workflows.bounds import ClinicDate, ClinicDateTime, IdempotencyKeyText, safe_text
from workflows.calendar import local_datetime

if TYPE_CHECKING:
    RefText = str
else:
    RefText = safe_text(200, min_length=1)

BookingMode = Literal["builtin", "external"]
ResourceKind = Literal["device", "room", "practitioner"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SlotRequest(_Model):
    """Reserve a slot for one session (idempotent per journey, course and session: asking
    again returns the live reservation if it still fits, or moves it)."""

    clinic_id: str
    patient_id: str
    workflow_id: str
    course_number: int
    session_number: int
    pore_grade: str = "moderate"
    allowed_days: list[date] = Field(max_length=400)
    """The days the clinical rules allow, ascending (interval, season cutoff, trips, open
    days). The slot is searched on these days only."""
    preferred_on: date
    """The planner's day: the search starts there and prefers it, then the nearest days."""
    exact_time: time | None = None
    """A local start the patient or staff asked for (a reschedule): that start or nothing."""
    timezone: str = "UTC"
    default_start: time = time(9, 0)
    """The clinic's default start, used when it has no resources on file."""
    duration_minutes: int = Field(default=45, ge=1, le=24 * 60)
    """The protocol's session length, used when the clinic has no slot length on file."""
    not_before: datetime | None = None
    """No slot starts before this instant (pass the journey's now: with a booking notice of 0
    days, today's earlier times are gone). None: no bound."""


class SlotResource(_Model):
    resource_id: str
    kind: ResourceKind
    label: str = ""
    """A display label (a device or room name, a practitioner's initials or code): no PHI."""


class BookedSlot(_Model):
    starts_at: datetime
    ends_at: datetime
    resources: list[SlotResource] = []


class NextOption(_Model):
    """Why no slot was found inside the allowed days, and the best next step."""

    kind: Literal["waiting_list", "later_day", "next_season"]
    reason: str
    first_free_on: date | None = None
    """The first day after the allowed window with a free slot, if any was found."""


class SlotResult(_Model):
    slot: BookedSlot | None = None
    next_option: NextOption | None = None
    capacity_known: bool = True
    """False: the clinic has no resources on file; the slot is its default time."""


def default_slot(request: SlotRequest) -> SlotResult:
    """The answer for a clinic with no resources on file (no known capacity): the preferred
    day at the requested or the clinic's default start."""
    starts_at = local_datetime(
        request.preferred_on, request.exact_time or request.default_start, request.timezone
    )
    return SlotResult(
        slot=BookedSlot(
            starts_at=starts_at,
            ends_at=starts_at + timedelta(minutes=request.duration_minutes),
        ),
        capacity_known=False,
    )


class SlotRelease(_Model):
    workflow_id: str
    course_number: int
    session_number: int


AppointmentEventKind = Literal["created", "rescheduled", "cancelled", "no_show", "completed"]


class AppointmentReport(_Model):
    """An appointment event from the clinic's booking system (``external`` mode), already mapped
    from the booking system's ids to ours. Applied once per idempotency key; one the rules
    refuse is answered with the reasons and kept as an anomaly for staff."""

    event: AppointmentEventKind
    session_number: int = Field(ge=1, le=100)
    starts_at: ClinicDateTime | None = None
    """The appointment's start (created, rescheduled); the completion time (completed)."""
    external_appointment_id: RefText
    idempotency_key: IdempotencyKeyText
    source: RefText = "booking"


class FreeTime(_Model):
    """A free start time offered to a patient or staff member moving a session."""

    on: ClinicDate
    starts_at: ClinicDateTime
    local_time: time
    resources: list[SlotResource] = []
