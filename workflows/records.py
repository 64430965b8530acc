"""Inputs of the activities the journey calls: what it asks the outside world to record or do.

These carry ids and clinical facts only. A notification names its template and the dates it
needs; the dispatcher looks up who to send it to in the patients table.
"""

from __future__ import annotations

from datetime import datetime
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
    # Issue 18: answers to a patient's reply (activities/replies.py, journey/replies.py).
    "contact_opt_out",
    "contact_opt_in",
    "reply_reschedule_offer",
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
    """A message to put in the outbox; unique per (workflow id, key).

    ``send_at`` (real time) schedules it: a reminder is written with its booking, not by a step
    of its own; a later step may cancel it by key before it is sent.
    """

    key: str
    kind: NotificationKind
    audience: Literal["patient", "staff"] = "patient"
    params: dict[str, str] = {}
    send_at: datetime | None = None


class StepRecord(_Record):
    """Everything one journey step writes, in one transaction, idempotent on (workflow, step).

    ``status_patch`` holds only the top-level fields of the journey's status that changed since
    the previous step (the whole status on the first write of a run): the store merges it into
    the read model and derives the list columns from the merged status.
    """

    workflow_id: str
    step: int
    patient_id: str
    clinic_id: str
    status_patch: dict[str, Any] = {}
    events: list[JourneyEvent] = []
    appointments: list[AppointmentRecord] = []
    notifications: list[NotificationRecord] = []
    cancel_notifications: list[str] = []
    cancel_pending_notifications: bool = False


class ClinicRef(_Record):
    """Which clinic's settings and protocol to load."""

    clinic_id: str
