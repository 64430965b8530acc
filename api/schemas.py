"""Request and response models of the HTTP API (and the CLI's ``--json`` output).

Separate from the workflow contract (``workflows.messages``) on purpose: the API may rename,
group or hide fields without touching history, and the workflow may add fields without
changing the public API. Lists use the ``{data, count}`` envelope; ``count`` is the total
number matching the filters, not the page size.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from workflows.messages import Reaction, Severity, Stage
from workflows.protocol import DateRange
from workflows.screening import ScreeningAnswers

__all__ = [
    "Accepted",
    "ControlOut",
    "EnrolRequest",
    "EnrolResponse",
    "ErrorBody",
    "ErrorItem",
    "JourneyDetail",
    "JourneyList",
    "JourneySummary",
    "MyJourney",
    "MyReaction",
    "MyReschedule",
    "MySession",
    "MySpfAttestation",
    "PatientIn",
    "PatientPublic",
    "PlanPreviewOut",
    "PlanPreviewRequest",
    "PreSessionCheckBody",
    "PreSessionCheckOut",
    "ReadyOut",
    "ReasonBody",
    "ReasonOut",
    "RescheduleBody",
    "RescheduleOut",
    "ReviewBody",
    "ReviewOut",
    "ScreeningBody",
    "ScreeningOut",
    "SessionCompletedIn",
    "SessionCompletedOut",
    "SessionOut",
    "TimelineEvent",
]

PoreGrade = Literal["small", "moderate", "large"]


class _In(BaseModel):
    """Request bodies refuse unknown fields: a typo must be a 422, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# ---------------------------------------------------------------- errors


class ErrorItem(BaseModel):
    """One problem: the field it is about (when there is one), the rule and plain words."""

    field: str | None = None
    rule: str
    message: str


class ErrorBody(BaseModel):
    """Every 4xx/5xx body: ``{"detail": [...]}``; ``error`` names a refusal's type (409)."""

    detail: list[ErrorItem]
    error: str | None = None


class ReasonOut(_Out):
    """Why a rule refused, deferred or moved something (``rule`` for software, ``message`` for
    people)."""

    rule: str
    message: str


# ---------------------------------------------------------------- staff: journeys


class PatientIn(_In):
    """The patient's personal data (stored in PostgreSQL only, never in Temporal)."""

    full_name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    phone: str | None = Field(default=None, max_length=32, pattern=r"^\+?[0-9 ()-]{5,32}$")
    preferred_channel: Literal["email", "sms"] = "email"


class EnrolRequest(_In):
    """Enrol a patient: personal data, clinic, grade, numbing cream, screening and trips."""

    patient: PatientIn
    clinic_id: str = Field(default="default", min_length=1, max_length=64)
    pore_grade: PoreGrade
    numbing_cream: bool = False
    screening: ScreeningAnswers = ScreeningAnswers()
    trips: list[DateRange] = Field(default_factory=list, max_length=50)
    time_scale: float = Field(
        default=1.0,
        ge=1.0,
        le=10_000_000.0,
        description="Simulation clock for training sandboxes and demos; 1 in production.",
    )
    earliest_start: date | None = None


class EnrolResponse(_Out):
    """The started journey and the patient's link (show it once; it is a credential)."""

    patient_id: str
    workflow_id: str
    run_id: str | None
    clinic_id: str
    stage: Stage
    patient_link: str
    link_valid_days: int


class JourneySummary(_Out):
    """One row of the journeys list (the read model)."""

    patient_id: str
    patient_name: str | None
    clinic_id: str
    stage: str
    course_number: int
    sessions_planned: int
    sessions_done: int
    next_action: str | None
    next_action_at: datetime | None
    spf_until: date | None
    review_on: date | None
    flags: list[str]
    updated_at: datetime


class JourneyList(BaseModel):
    """A page of journeys and the total number matching the filters."""

    data: list[JourneySummary]
    count: int


class TimelineEvent(_Out):
    """One line of the journey's timeline."""

    kind: str
    actor: str
    occurred_at: datetime
    summary: str
    data: dict[str, Any]


class PatientPublic(_Out):
    """The patient's record as staff see it."""

    patient_id: str
    full_name: str
    email: str | None
    phone: str | None
    preferred_channel: str
    clinic_id: str


class SessionOut(_Out):
    """One session of the current course."""

    number: int
    planned_on: date
    starts_at: datetime | None = None
    arrive_by: datetime | None = None
    state: str
    completed_at: datetime | None = None
    pre_session_checked: bool = False
    reaction: str | None = None


class JourneyDetail(BaseModel):
    """A journey's live status (from the workflow), the patient and the timeline."""

    patient: PatientPublic | None
    status: dict[str, Any]
    stage: str
    sessions: list[SessionOut]
    timeline: list[TimelineEvent]


class ReasonBody(_In):
    """Why staff pause, resume or withdraw (kept in the timeline)."""

    reason: str = Field(min_length=1, max_length=500)


class ControlOut(_Out):
    """The stage after a pause, resume or withdraw."""

    stage: str
    previous_stage: str


class ReviewBody(_In):
    """The 3-month review outcome (clinicians and admins only)."""

    outcome: Literal["complete", "further_course"]
    further_sessions: int | None = Field(default=None, ge=1)
    note_ref: str | None = Field(default=None, max_length=200)


class ReviewOut(_Out):
    """What follows the review."""

    outcome: str
    next_course_number: int | None = None
    stage: str


class ScreeningBody(_In):
    """Re-screen answers."""

    answers: ScreeningAnswers


class ScreeningOut(_Out):
    """The screening outcome, with a reason per contraindication."""

    outcome: str
    until: date | None = None
    reasons: list[ReasonOut] = []
    stage: str


class PreSessionCheckBody(_In):
    """The answers on the day of a session."""

    session_number: int = Field(ge=1)
    answers: ScreeningAnswers


class PreSessionCheckOut(_Out):
    """Cleared, or the session is deferred."""

    cleared: bool
    reasons: list[ReasonOut] = []
    deferred_until: date | None = None
    stage: str


class RescheduleBody(_In):
    """Move a session to a date (and optionally a local time)."""

    session_number: int = Field(ge=1)
    new_date: date
    new_time: time | None = None


class RescheduleOut(_Out):
    """The accepted plan."""

    session_number: int
    new_dates: list[date]
    sessions: list[SessionOut]


# ---------------------------------------------------------------- integrations


class SessionCompletedIn(_In):
    """A session happened (from the booking system, EMR or laser device)."""

    patient_id: str = Field(min_length=1, max_length=64)
    session_number: int = Field(ge=1)
    completed_at: AwareDatetime
    source: str | None = Field(default=None, min_length=1, max_length=64)


class SessionCompletedOut(_Out):
    """Temporal accepted the fact; the journey applies it once per idempotency key."""

    accepted: bool = True
    patient_id: str
    session_number: int
    idempotency_key: str
    integration: str


# ---------------------------------------------------------------- patients


class MySession(_Out):
    """A session as the patient sees it."""

    number: int
    date: date
    starts_at: datetime | None
    arrive_by: datetime | None
    state: str
    text: str


class MyJourney(BaseModel):
    """The patient's plan in plain words."""

    patient_id: str
    stage: str
    headline: str
    next_step: str | None
    sessions: list[MySession]
    spf_until: date | None
    review_on: date | None
    lines: list[str]


class MyReschedule(_In):
    """Ask to move a session."""

    session_number: int = Field(ge=1)
    new_date: date
    new_time: time | None = None


class MySpfAttestation(_In):
    """I used SPF 50 on this date."""

    on: date


class MyReaction(_In):
    """How my skin is after a session; ``severity`` reports an adverse event instead."""

    session_number: int = Field(ge=1)
    day: int = Field(ge=0, le=60)
    reaction: Reaction = "expected"
    severity: Severity | None = None
    note: str | None = Field(default=None, max_length=500)


class Accepted(BaseModel):
    """A fact was accepted by Temporal and will be applied once."""

    accepted: bool = True
    message: str


# ---------------------------------------------------------------- plans and health


class PlanPreviewRequest(_In):
    """A prospective patient: the planner's answer without enrolling anyone."""

    clinic_id: str = Field(default="default", min_length=1, max_length=64)
    pore_grade: PoreGrade
    earliest: date | None = None
    trips: list[DateRange] = Field(default_factory=list, max_length=50)
    conservative: bool = False
    screening: ScreeningAnswers | None = None


class PlanPreviewOut(BaseModel):
    """The course the planner would book, with every reason a date moved."""

    clinic_id: str
    protocol_version: str
    requested_from: date
    sessions: list[date]
    starts_on: date | None
    last_session_on: date | None
    spf_until: date | None
    review_on: date | None
    waiting_reason: str | None
    reasons: list[ReasonOut]
    interval_days: tuple[int, int]
    conservative: bool
    screening_outcome: str | None = None
    screening_reasons: list[ReasonOut] = []


class ReadyOut(BaseModel):
    """Readiness: every dependency reachable."""

    status: Literal["ready", "unavailable"]
    temporal: bool
    database: bool
