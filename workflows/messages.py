"""The PatientJourney contract: start input, signals, updates and the status query result.

Names here are the integration contract (README, "Temporal contract"). Every model carries ids
and clinical facts only: names and contact details live in PostgreSQL, never in history. New
fields always get a default so old histories still deserialise.
"""

from __future__ import annotations

import sys
from datetime import date, datetime, time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workflows.bounds import (
    ClinicDate,
    ClinicDateTime,
    IdempotencyKeyText,
    safe_multiline_text,
    safe_text,
)

# Re-exported: the stage names and the closed stages live in the guard table.
from workflows.guards import CLOSED_STAGES as CLOSED_STAGES
from workflows.guards import Stage as Stage
from workflows.ids import PATIENT_ID_PATTERN
from workflows.protocol import ClinicProtocol, DateRange
from workflows.reasons import Reason
from workflows.screening import ScreeningAnswers

SessionState = Literal["planned", "booked", "done", "no_show", "deferred", "cancelled"]
Reaction = Literal["none", "expected", "prolonged"]
Actor = Literal["patient", "staff", "clinician", "integration", "system"]
Severity = Literal["mild", "moderate", "severe"]

# Every value from outside is bounded here too (workflows/bounds.py), so a message sent straight
# to Temporal cannot carry what the API would refuse: a date the journey cannot compute with,
# a control character PostgreSQL refuses, a string of megabytes.
if TYPE_CHECKING:
    Text64 = str
    Text200 = str
    Text500 = str
    StaffRef = str
else:
    Text64 = safe_text(64, min_length=1)
    Text200 = safe_text(200, min_length=1)
    Text500 = safe_multiline_text(500, min_length=1)
    StaffRef = safe_text(64)


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- start input


class CourseSummary(_Message):
    """What a finished course leaves for the next one (carried through continue-as-new)."""

    course_number: int
    sessions_done: int
    last_session_on: date | None = None
    outcome: str = ""
    global_improvement: int | None = None
    pore_visibility: int | None = None


class JourneyStartRequest(_Message):
    """Input of ``PatientJourney.run``.

    ``time_scale`` is the simulation clock (a training sandbox, demos, the load benchmark):
    every wait is shortened by that factor while the journey's dates advance as simulated
    dates. Only a clinic marked ``sandbox`` runs it; elsewhere the journey runs in real time
    and says so on its timeline. Production journeys use 1.

    ``screening_by`` says who took the intake answers: only a clinician's answers may override
    a permanent contraindication or set a drug washout.
    """

    patient_id: str = Field(pattern=PATIENT_ID_PATTERN)
    clinic_id: str = Field(default="default", min_length=1, max_length=64)
    pore_grade: Literal["small", "moderate", "large"]
    numbing_cream: bool = False
    screening: ScreeningAnswers = ScreeningAnswers()
    screening_by: Actor = "staff"
    trips: list[DateRange] = Field(default=[], max_length=20)
    time_scale: float = Field(default=1.0, ge=1.0, le=10_000_000.0)
    sim_start: ClinicDateTime | None = None
    """Where the simulation clock starts (a season simulation puts every journey on one
    calendar). Honoured only with the simulation clock, i.e. in a sandbox clinic."""
    earliest_start: ClinicDate | None = None
    clinic_protocol: ClinicProtocol | None = None
    # Set only by continue-as-new: everything the journey knows, handed whole to the next run.
    carried: JourneyState | None = None


# ---------------------------------------------------------------- signals (facts)


class SessionCompletedSignal(_Message):
    """An integration (booking, EMR, the laser device) reports that a session happened."""

    idempotency_key: IdempotencyKeyText
    session_number: int = Field(ge=1, le=100)
    completed_at: ClinicDateTime
    source: Text64 = "integration"


class RecoveryCheckinSignal(_Message):
    """The recovery check-in after a session (by phone, the patient page or the EMR)."""

    idempotency_key: IdempotencyKeyText
    session_number: int = Field(ge=1, le=100)
    day: int = Field(ge=0, le=60)
    reaction: Reaction
    reported_by: Actor = "patient"


class SpfAttestedSignal(_Message):
    """The patient attests SPF-50 use on a date of the compliance window."""

    idempotency_key: IdempotencyKeyText
    on: ClinicDate
    reported_by: Actor = "patient"


class AdverseEventSignal(_Message):
    """An adverse reaction; the journey pauses and a clinician is flagged."""

    idempotency_key: IdempotencyKeyText
    severity: Severity
    note_ref: Text200 = Field(description="Id of the clinician's note.")
    reported_by: Actor = "clinician"


# ---------------------------------------------------------------- updates (requests)


class ScreeningRequest(_Message):
    """Answers of a re-screen (after a deferral, or before a further course).

    Only ``requested_by="clinician"`` may override a permanent contraindication or set a drug
    washout; ``staff_ref`` names the staff member on the timeline (an id, never a patient's
    personal data).
    """

    answers: ScreeningAnswers
    requested_by: Actor = "staff"
    staff_ref: StaffRef | None = None


class ScreeningDecision(_Message):
    """The outcome of a screening, with a reason per contraindication."""

    outcome: Literal["eligible", "deferred", "excluded"]
    until: date | None = None
    reasons: list[Reason] = []
    stage: Stage


class PreSessionCheckRequest(_Message):
    """The answers on the day of a session, before it starts."""

    session_number: int = Field(ge=1, le=100)
    answers: ScreeningAnswers
    checked_by: Actor = "staff"
    staff_ref: StaffRef | None = None


class PreSessionCheckResult(_Message):
    """Cleared, or the session is deferred (with the reasons and the new plan)."""

    cleared: bool
    reasons: list[Reason] = []
    deferred_until: date | None = None
    stage: Stage


class RescheduleRequest(_Message):
    """Move a session: to a date (the clinic's default time) or a date and local time."""

    session_number: int = Field(ge=1, le=100)
    new_date: ClinicDate
    new_time: time | None = None
    requested_by: Literal["patient", "staff"] = "patient"


class RescheduleResult(_Message):
    """The accepted plan: the moved session and any later ones shifted to keep the interval."""

    session_number: int
    new_dates: list[date]
    sessions: list[SessionStatus]


class PauseRequest(_Message):
    """Hold every timer-driven step until resumed."""

    reason: Text500
    requested_by: Actor = "staff"


class ResumeRequest(_Message):
    """Resume a paused journey where it left off (replanning dates that passed)."""

    reason: Text500
    requested_by: Actor = "staff"


class WithdrawRequest(_Message):
    """End the journey for good, with the reason."""

    reason: Text500
    requested_by: Actor = "staff"


class ControlResult(_Message):
    """The stage after a pause, resume or withdraw."""

    stage: Stage
    previous_stage: Stage


class ReviewRequest(_Message):
    """The review of the result: the course is complete, or a further course is needed.

    The clinician's outcome: ``global_improvement`` (a global aesthetic improvement grade,
    1 = worse … 5 = very much improved), ``pore_visibility`` (1 = no visible pores … 5 = very
    visible), and a short summary of any adverse events. They are written on the timeline with
    the review (the reports read them there), never patient-identifying text.
    """

    outcome: Literal["complete", "further_course"]
    further_sessions: int | None = Field(default=None, ge=1, le=100)
    reviewed_by: Actor = "clinician"
    staff_ref: StaffRef | None = None
    note_ref: Text200 | None = None
    global_improvement: int | None = Field(default=None, ge=1, le=5)
    pore_visibility: int | None = Field(default=None, ge=1, le=5)
    adverse_events_summary: Text500 | None = None


class ReviewResult(_Message):
    """What follows the review."""

    outcome: Literal["complete", "further_course"]
    next_course_number: int | None = None
    stage: Stage


class FactResult(_Message):
    """What became of a fact reported through an update (the honest answer to its sender).

    ``applied``: the journey applied it now. ``duplicate``: its idempotency key was applied
    before (nothing changed). ``anomaly``: the journey cannot apply it now; it is kept, with the
    reasons, for staff to resolve (a clinician task), and its key stays free for a resend.
    """

    outcome: Literal["applied", "duplicate", "anomaly"]
    reasons: list[Reason] = []
    anomaly_id: int | None = None
    stage: Stage


class ConsentRequest(_Message):
    """Informed consent was given: signed by the patient on their page, or on paper (staff
    record its reference). ``version`` is the clinic's consent text version; ``reference`` the
    consent record's id in PostgreSQL (never the signature itself)."""

    version: Text64
    kind: Literal["patient_signed", "paper"]
    reference: Text200 | None = None
    signed_at: ClinicDateTime
    requested_by: Actor = "patient"
    staff_ref: StaffRef | None = None


class ConsentRequiredRequest(_Message):
    """The clinic made a new consent version required: the journey asks again."""

    version: Text64
    requested_by: Actor = "staff"
    staff_ref: StaffRef | None = None


class ConsentWithdrawRequest(_Message):
    """The patient withdrew consent: the journey pauses until a new consent and a resume."""

    reason: Text500
    requested_by: Actor = "patient"
    staff_ref: StaffRef | None = None


class ConsentResult(_Message):
    """The journey's consent after the request."""

    consent_valid: bool
    version: str | None = None
    required_version: str | None = None
    stage: Stage


class ResolveAnomalyRequest(_Message):
    """Staff resolve a kept fact: apply it now (if the journey can) or dismiss it."""

    anomaly_id: int = Field(ge=1, le=1_000_000)
    action: Literal["apply", "dismiss"]
    note: Text500
    requested_by: Actor = "staff"
    staff_ref: StaffRef | None = None


class ResolveAnomalyResult(_Message):
    """The anomaly after staff resolved it."""

    anomaly_id: int
    resolution: Literal["applied", "dismissed"]
    stage: Stage


# ---------------------------------------------------------------- status query


class SessionStatus(_Message):
    """One session of the current course."""

    number: int
    planned_on: date
    starts_at: datetime | None = None
    arrive_by: datetime | None = None
    state: SessionState = "planned"
    completed_at: datetime | None = None
    source: str | None = None
    pre_session_checked: bool = False
    reaction: Reaction | None = None
    confirmed_at: datetime | None = None
    """When the patient confirmed the appointment by replying (issue 18, ``report_reply``)."""
    resources: list[str] = []
    """Where and with whom (labels of the reserved laser, room, practitioner code): no PHI."""
    external_appointment_id: str | None = None
    """The clinic's booking system's appointment id (``booking = "external"``)."""


class RefusedRequest(_Message):
    """A request or fact the journey refused, with every reason."""

    at: datetime
    kind: str
    reasons: list[Reason]


class Anomaly(_Message):
    """A fact the journey could not apply when it arrived, kept for staff (never lost)."""

    id: int
    kind: str
    idempotency_key: str
    received_at: datetime
    reasons: list[Reason]
    fact: dict[str, Any] = {}
    resolved: bool = False
    resolution: str | None = None


class JourneyStatus(_Message):
    """Everything staff need about one journey (the ``status`` query)."""

    patient_id: str
    clinic_id: str
    stage: Stage
    paused_from: Stage | None = None
    protocol_version: str
    course_number: int = 1
    pore_grade: str
    numbing_cream: bool
    sessions: list[SessionStatus] = []
    next_action: str | None = None
    next_action_at: datetime | None = None
    spf_until: date | None = None
    review_on: date | None = None
    flags: list[str] = []
    clinician_tasks: list[str] = []
    refused: list[RefusedRequest] = []
    screening_outcome: str | None = None
    deferred_until: date | None = None
    waiting_reason: str | None = None
    season_opens_on: date | None = None
    closed_reason: str | None = None
    time_scale: float = 1.0
    journey_now: datetime | None = None
    timezone: str = "UTC"
    previous_courses: list[CourseSummary] = []
    trips: list[DateRange] = []
    anomalies: list[Anomaly] = []
    consent_version: str | None = None
    consent_required_version: str | None = None
    consent_valid: bool = False
    review: ReviewRequest | None = None


# ``JourneyStartRequest.carried`` is the journey's state, a model built from the messages above:
# import it last. When the state module is the one importing us, it resolves the reference
# itself once ``JourneyState`` exists (see the end of workflows/journey/state.py).
if "workflows.journey.state" not in sys.modules:
    from workflows.journey.state import JourneyState
