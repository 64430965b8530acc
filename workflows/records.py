"""Inputs of the activities the journey calls: what it asks the outside world to record or do.

These carry ids and clinical facts only. A notification names its template and the dates it
needs; the dispatcher looks up who to send it to in the patients table.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

NotificationKind = Literal[
    "booking_confirmation",
    "session_reminder",
    "aftercare",
    "recovery_checkin",
    "spf_reminder",
    "review_invite",
    "session_rebooked",
    "journey_paused",
    "journey_withdrawn",
    "rescreen_due",
    "season_waiting",
    "staff_alert",
]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JourneyEvent(_Record):
    """One line of the append-only timeline; unique per (workflow id, key)."""

    key: str
    kind: str
    actor: str
    occurred_at: datetime
    summary: str
    data: dict[str, Any] = {}


class AppointmentRecord(_Record):
    """The latest state of one appointment; unique per (workflow id, course, session)."""

    course_number: int
    session_number: int
    starts_at: datetime
    arrive_by: datetime | None = None
    duration_minutes: int
    status: Literal["planned", "booked", "done", "no_show", "deferred", "cancelled"]


class NotificationRecord(_Record):
    """A message to put in the outbox; unique per (workflow id, key)."""

    key: str
    kind: NotificationKind
    audience: Literal["patient", "staff"] = "patient"
    params: dict[str, str] = {}


class JourneyProjection(_Record):
    """The read-model row of a journey; a row is replaced only by a higher ``version``."""

    patient_id: str
    clinic_id: str
    version: int
    stage: str
    course_number: int
    sessions_planned: int
    sessions_done: int
    next_action: str | None = None
    next_action_at: datetime | None = None
    spf_until: date | None = None
    review_on: date | None = None
    flags: list[str] = []
    protocol_version: str
    status: dict[str, Any] = {}


class StepRecord(_Record):
    """Everything one journey step writes, in one transaction, idempotent on (workflow, step)."""

    workflow_id: str
    step: int
    events: list[JourneyEvent] = []
    projection: JourneyProjection
    appointments: list[AppointmentRecord] = []
    notifications: list[NotificationRecord] = []


class ClinicRef(_Record):
    """Which clinic's settings and protocol to load."""

    clinic_id: str
