"""Request and response models of the HTTP API (and the CLI's ``--json`` output).

Separate from the workflow contract (``workflows.messages``) on purpose: the API may rename,
group or hide fields without touching history, and the workflow may add fields without
changing the public API. Lists use the ``{data, count}`` envelope; ``count`` is the total
number matching the filters, not the page size.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from activities.i18n import Language
from scheduling.preferences import SlotPreferences
from workflows.bounds import (
    ClinicDate,
    ClinicDateTime,
    bounded_list,
    bounded_tuple,
    check_text,
    safe_multiline_text,
    safe_text,
)
from workflows.ids import PATIENT_ID_PATTERN
from workflows.messages import Reaction, Severity, Stage, Text500
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
    "ScreeningAnswersIn",
    "ScreeningBody",
    "ScreeningOut",
    "SessionCompletedIn",
    "SessionCompletedOut",
    "SessionOut",
    "TimelineEvent",
    "TripIn",
]

PoreGrade = Literal["small", "moderate", "large"]

# The bounds of this API (docs/security.md): the shared types of workflows/bounds.py plus the
# numbers below. A value outside them is a 422 naming the field.
MAX_TRIPS: Final = 20  # as JourneyStartRequest.trips (workflows/messages.py)
MAX_TRIP_DAYS: Final = 366  # a trip longer than a year is a typo (a 10-year trip stalls planning)
MAX_SESSION_NUMBER: Final = 50
MAX_FURTHER_SESSIONS: Final = (
    100  # a sanity bound; the protocol's limit answers 409 with its reason
)
MAX_DRUGS: Final = 20
MAX_DRUG_NAME: Final = 100
MAX_NOTE: Final = 1000

ClinicId = safe_text(64, min_length=1)
PatientId = Annotated[str, Field(min_length=1, max_length=64, pattern=PATIENT_ID_PATTERN)]
SessionNumber = Annotated[int, Field(ge=1, le=MAX_SESSION_NUMBER)]
EmailText = Annotated[
    str,
    Field(max_length=320, pattern=r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f]+$"),
    AfterValidator(check_text),
]


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


class FactKeptBody(ErrorBody):
    """409 for a reported fact. When the journey could not apply it now (``error``:
    ``FactKeptForStaff``) it is kept for staff: ``outcome`` is ``kept_for_staff``, with
    ``anomaly_id`` and ``stage``; nothing is lost, and a resend with the same idempotency key
    reaches the journey again. Any other 409 (a closed journey) has the plain error body.
    ``detail``: why."""

    outcome: Literal["kept_for_staff"] | None = None
    anomaly_id: int | None = None
    stage: str | None = None


class ReasonOut(_Out):
    """Why a rule refused, deferred or moved something (``rule`` for software, ``message`` for
    people)."""

    rule: str
    message: str


# ---------------------------------------------------------------- staff: journeys


class PatientIn(_In):
    """The patient's personal data (stored in PostgreSQL only, never in Temporal)."""

    full_name: safe_text(200, min_length=1)  # type: ignore[valid-type]
    email: EmailText | None = None
    phone: str | None = Field(default=None, max_length=32, pattern=r"^\+?[0-9 ()-]{5,32}$")
    preferred_channel: Literal["email", "sms"] = "email"
    language: Language | None = Field(
        default=None,
        description=(
            "The language of the patient's messages, page and calendar invitations "
            "(docs/languages.md); the clinic's default language when omitted."
        ),
    )


class LanguageIn(_In):
    """A patient's language (docs/languages.md)."""

    language: Language


class PatientLanguageOut(_Out):
    """The patient's language now."""

    patient_id: str
    language: Language


class ClinicLanguageOut(_Out):
    """The language a clinic's new patients get when enrolment names none."""

    clinic_id: str
    default_language: Language


class TripIn(DateRange):
    """A planned trip with sun exposure: both ends inclusive, inside the date window, at most
    ``MAX_TRIP_DAYS`` days long (``end`` before ``start`` is refused too)."""

    start: ClinicDate
    end: ClinicDate

    @model_validator(mode="before")
    @classmethod
    def _from_workflow_type(cls, data: Any) -> Any:
        # Callers in Python (the CLI, the demo) may hand the workflow's own type.
        if isinstance(data, DateRange) and not isinstance(data, cls):
            return data.model_dump()
        return data

    @model_validator(mode="after")
    def _not_absurdly_long(self) -> TripIn:
        days = (self.end - self.start).days + 1
        if days > MAX_TRIP_DAYS:
            raise ValueError(
                f"a trip of {days} days is longer than {MAX_TRIP_DAYS} days; check the dates"
            )
        return self

    def to_range(self) -> DateRange:
        """The workflow's type (the API's subclass never reaches Temporal)."""
        return DateRange(start=self.start, end=self.end)


class ScreeningAnswersIn(ScreeningAnswers):
    """Screening answers as the API accepts them: the workflow's fields, bounded.

    Dates inside the date window, at most ``MAX_DRUGS`` drug names of ``MAX_DRUG_NAME``
    characters, free text of at most ``MAX_NOTE`` characters, no control characters. Setting
    ``clinician_override_reason`` or ``drug_washout_until`` needs the clinician role (403).
    """

    pregnancy_recheck_on: ClinicDate | None = None
    isotretinoin_last_dose_on: ClinicDate | None = None
    photosensitising_drugs: bounded_tuple(  # type: ignore[valid-type]
        safe_text(MAX_DRUG_NAME, min_length=1), MAX_DRUGS
    ) = ()
    drug_washout_until: ClinicDate | None = None
    other_condition: safe_multiline_text(MAX_NOTE) | None = None  # type: ignore[valid-type]
    clinician_override_reason: safe_multiline_text(MAX_NOTE) | None = None  # type: ignore[valid-type]

    @model_validator(mode="before")
    @classmethod
    def _from_workflow_type(cls, data: Any) -> Any:
        # Callers in Python (the CLI, the demo) may hand the workflow's own type.
        if isinstance(data, ScreeningAnswers) and not isinstance(data, cls):
            return data.model_dump()
        return data

    def to_answers(self) -> ScreeningAnswers:
        """The workflow's type (the API's subclass never reaches Temporal)."""
        return ScreeningAnswers.model_validate(self.model_dump())

    @property
    def needs_clinician(self) -> list[str]:
        """The fields only a clinician may set (empty when none is set)."""
        return [
            name
            for name in ("clinician_override_reason", "drug_washout_until")
            if getattr(self, name) is not None
        ]


class EnrolRequest(_In):
    """Enrol a patient: personal data, clinic, grade, numbing cream, screening and trips.

    ``time_scale`` other than 1 is refused (422) outside development unless the clinic is a
    sandbox (``ClinicSettings.sandbox``).
    """

    patient: PatientIn
    clinic_id: ClinicId = "default"  # type: ignore[valid-type]
    pore_grade: PoreGrade
    numbing_cream: bool = False
    screening: ScreeningAnswersIn = ScreeningAnswersIn()
    trips: bounded_list(TripIn, MAX_TRIPS) = Field(default_factory=list)  # type: ignore[valid-type]
    time_scale: float = Field(
        default=1.0,
        ge=1.0,
        le=10_000_000.0,
        description=(
            "Simulation clock for training sandboxes and demos; 1 in production "
            "(other values only in development or a sandbox clinic)."
        ),
    )
    earliest_start: ClinicDate | None = None
    sim_start: ClinicDateTime | None = Field(
        default=None,
        description=(
            "Where the journey's simulation clock starts (the season simulation puts every "
            "journey on one calendar); used only with a time_scale other than 1."
        ),
    )
    scheduling_preferences: SlotPreferences | None = Field(
        default=None,
        description="Preferred weekdays and times for the sessions (built-in scheduling: "
        "they order the offered slots, never exclude one; docs/scheduling.md).",
    )


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
    language: str = "en"


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
    confirmed_at: datetime | None = None
    """When the patient confirmed it by replying to a message (issue 18)."""


class JourneyDetail(BaseModel):
    """A journey's live status (from the workflow), the patient and the timeline."""

    patient: PatientPublic | None
    status: dict[str, Any]
    stage: str
    sessions: list[SessionOut]
    timeline: list[TimelineEvent]


class ReasonBody(_In):
    """Why staff pause, resume or withdraw (kept in the timeline)."""

    reason: safe_multiline_text(500, min_length=1)  # type: ignore[valid-type]


class ControlOut(_Out):
    """The stage after a pause, resume or withdraw."""

    stage: str
    previous_stage: str


class ResolveAnomalyBody(_In):
    """Staff apply a fact the journey kept (when it can now take it) or dismiss it, with a
    note for the timeline."""

    action: Literal["apply", "dismiss"]
    note: safe_multiline_text(500, min_length=1)  # type: ignore[valid-type]


class ReplyAnsweredBody(_In):
    """Staff answered a patient's reply that became their task: a note for the timeline."""

    note: safe_multiline_text(500, min_length=1)  # type: ignore[valid-type]


class ReplyAnsweredOut(_Out):
    """The reply whose task closed."""

    reply_id: int
    tasks_closed: int


class ResolveAnomalyOut(_Out):
    """The anomaly after staff resolved it, and the journey's stage."""

    anomaly_id: int
    resolution: Literal["applied", "dismissed"]
    stage: str


class ReviewBody(_In):
    """The 3-month review outcome (clinicians and admins only)."""

    outcome: Literal["complete", "further_course"]
    further_sessions: int | None = Field(default=None, ge=1, le=MAX_FURTHER_SESSIONS)
    note_ref: safe_text(200) | None = None  # type: ignore[valid-type]
    # The clinician's outcome (issue 19): grades 1-5 and a short adverse-events summary.
    global_improvement: int | None = Field(default=None, ge=1, le=5)
    pore_visibility: int | None = Field(default=None, ge=1, le=5)
    adverse_events_summary: Text500 | None = None


class ReviewOut(_Out):
    """What follows the review."""

    outcome: str
    next_course_number: int | None = None
    stage: str


class ScreeningBody(_In):
    """Re-screen answers."""

    answers: ScreeningAnswersIn


class ScreeningOut(_Out):
    """The screening outcome, with a reason per contraindication."""

    outcome: str
    until: date | None = None
    reasons: list[ReasonOut] = []
    stage: str


class PreSessionCheckBody(_In):
    """The answers on the day of a session."""

    session_number: SessionNumber
    answers: ScreeningAnswersIn


class PreSessionCheckOut(_Out):
    """Cleared, or the session is deferred."""

    cleared: bool
    reasons: list[ReasonOut] = []
    deferred_until: date | None = None
    stage: str


class RescheduleBody(_In):
    """Move a session to a date (and optionally a local time)."""

    session_number: SessionNumber
    new_date: ClinicDate
    new_time: time | None = None


class RescheduleOut(_Out):
    """The accepted plan."""

    session_number: int
    new_dates: list[date]
    sessions: list[SessionOut]


# ---------------------------------------------------------------- integrations


class SessionCompletedIn(_In):
    """A session happened (from the booking system, EMR or laser device)."""

    patient_id: PatientId
    session_number: SessionNumber
    completed_at: ClinicDateTime
    source: safe_text(64, min_length=1) | None = None  # type: ignore[valid-type]


class SessionCompletedOut(_Out):
    """The journey applied the fact (``outcome``: ``applied``), or had applied this idempotency
    key before (``duplicate``). A fact it cannot apply is answered 409 (:class:`FactKeptBody`)."""

    accepted: bool = True
    outcome: Literal["applied", "duplicate"] = "applied"
    duplicate: bool = False
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

    session_number: SessionNumber
    new_date: ClinicDate
    new_time: time | None = None


class MySpfAttestation(_In):
    """I used SPF 50 on this date."""

    on: ClinicDate


class MyReaction(_In):
    """How my skin is after a session; ``severity`` reports an adverse event instead."""

    session_number: SessionNumber
    day: int = Field(ge=0, le=60)
    reaction: Reaction = "expected"
    severity: Severity | None = None
    note: safe_multiline_text(500) | None = None  # type: ignore[valid-type]


class Accepted(BaseModel):
    """The journey applied the fact (``outcome``: ``applied``), or had applied it before
    (``duplicate``: the same answer, nothing changed). A fact it cannot apply is answered 409
    (:class:`FactKeptBody`)."""

    accepted: bool = True
    outcome: Literal["applied", "duplicate"] = "applied"
    duplicate: bool = False
    message: str


# ---------------------------------------------------------------- plans and health


class PlanPreviewRequest(_In):
    """A prospective patient: the planner's answer without enrolling anyone."""

    clinic_id: ClinicId = "default"  # type: ignore[valid-type]
    pore_grade: PoreGrade
    earliest: ClinicDate | None = None
    trips: bounded_list(TripIn, MAX_TRIPS) = Field(default_factory=list)  # type: ignore[valid-type]
    conservative: bool = False
    screening: ScreeningAnswersIn | None = None


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
