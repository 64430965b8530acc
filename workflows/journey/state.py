"""Everything one journey knows, in one model: what continue-as-new carries and what the status
query shows.

Pure (no Temporal calls): the stage modules change it through the effects object, which decides
what is written and when. Nothing about a journey lives outside this model, so a continue-as-new
cannot forget anything.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from workflows import calendar, messages
from workflows.guards import Stage
from workflows.messages import (
    Anomaly,
    CourseSummary,
    JourneyStatus,
    Reaction,
    RefusedRequest,
    ReviewRequest,
    SessionStatus,
)
from workflows.protocol import ClinicProtocol, DateRange
from workflows.screening import ScreeningAnswers, ScreeningResult

Phase = Literal["screening", "sessions", "spf_window", "review"]

# Flags that describe one course: a further course starts without them.
COURSE_FLAGS = frozenset(
    {"no_show", "checkin_overdue", "course_split", "review_overdue", "no_pre_session_check"}
)


class CheckIn(BaseModel):
    """A recovery check-in as applied (the day is the journey's own count, not the reporter's)."""

    session_number: int
    day: int
    reaction: Reaction
    prolonged: bool = False


class JourneyState(BaseModel):
    """One patient's journey: identity, the course, its progress, and every fact applied."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    # Who and where: fixed for the journey.
    patient_id: str
    clinic_id: str
    pore_grade: Literal["small", "moderate", "large"]
    numbing_cream: bool = False
    trips: list[DateRange] = []
    requested_time_scale: float = 1.0
    time_scale: float = 1.0
    earliest_start: date | None = None
    cp: ClinicProtocol | None = None
    sim_anchor_real: datetime | None = None
    sim_anchor_sim: datetime | None = None
    sim_start: datetime | None = None

    # The course.
    course_number: int = 1
    course_sessions: int | None = None
    previous_courses: list[CourseSummary] = []
    phase: Phase = "screening"

    # Where the journey is.
    step: int = 0
    changes: int = 0  # bumped by every handler that changes something the main loop waits on
    stage: Stage = "screening"
    paused_from: Stage | None = None
    paused_next_action: str | None = None
    paused_next_action_at: datetime | None = None
    resumed_at: datetime | None = None
    next_action: str | None = None
    next_action_at: datetime | None = None
    closed_reason: str | None = None

    # What the journey knows.
    flags: list[str] = []
    clinician_tasks: list[str] = []
    seen_keys: set[str] = set()
    refused: list[RefusedRequest] = []
    anomalies: list[Anomaly] = []
    answers: ScreeningAnswers | None = None
    answers_by_clinician: bool = False
    answers_version: int = 0
    screening: ScreeningResult | None = None
    sessions: list[SessionStatus] = []
    replan_requested: bool = False
    checkins: dict[int, CheckIn] = {}
    spf_attestations: list[date] = []
    spf_until: date | None = None
    review_on: date | None = None
    waiting_reason: str | None = None
    season_opens_on: date | None = None
    review: ReviewRequest | None = None
    booking_counter: int = 0  # part of each booking's notification keys (a rebooking is new)
    pending_messages: list[str] = []  # scheduled outbox keys a pause or a withdraw cancels
    # When the current session's "due" step really started (journey time), for its day: the
    # due window is measured from then, so a clock the machine cannot follow is not a no-show.
    due_since: datetime | None = None
    due_for: date | None = None
    # Informed consent: the version the patient signed, and the one the clinic requires now.
    consent_version: str | None = None
    consent_required_version: str | None = None
    # Booking (workflows/booking.py): the last day of the current session's allowed window,
    # the window last published to the clinic's booking system, the session found without a
    # free slot (one staff alert per session and plan).
    window_until: date | None = None
    window_published: str | None = None
    no_slot_for: str | None = None

    # ------------------------------------------------------------- reading

    @property
    def clinic(self) -> ClinicProtocol:
        """The clinic's settings and protocol (loaded before the first step)."""
        assert self.cp is not None, "the clinic is loaded before any step"
        return self.cp

    def session(self, number: int) -> SessionStatus:
        """Session ``number`` of the current course."""
        for s in self.sessions:
            if s.number == number:
                return s
        raise KeyError(number)

    def has_session(self, number: int) -> bool:
        return any(s.number == number for s in self.sessions)

    def current_session(self) -> SessionStatus | None:
        """The first session not done (cancelled sessions end the course)."""
        for s in self.sessions:
            if s.state != "done":
                return s if s.state != "cancelled" else None
        return None

    def last_done_on(self) -> date | None:
        """The clinic date of the last completed session of this course."""
        done = [s for s in self.sessions if s.state == "done" and s.completed_at is not None]
        if not done:
            return None
        last = max(done, key=lambda s: s.number)
        assert last.completed_at is not None
        return calendar.clinic_today(last.completed_at, self.clinic.clinic.timezone)

    def sessions_done(self) -> int:
        return sum(1 for s in self.sessions if s.state == "done")

    def conservative(self) -> bool:
        return "conservative_settings" in self.flags

    def consent_valid(self) -> bool:
        """Signed, and the version the clinic requires (any version when none is named)."""
        if self.consent_version is None:
            return False
        required = self.consent_required_version
        return required is None or self.consent_version == required

    def open_anomalies(self) -> list[Anomaly]:
        return [a for a in self.anomalies if not a.resolved]

    # ------------------------------------------------------------- changing

    def replace_session(self, number: int, **changes: object) -> SessionStatus:
        """Session ``number`` with ``changes`` applied (sessions are immutable values)."""
        for i, s in enumerate(self.sessions):
            if s.number == number:
                self.sessions[i] = s.model_copy(update=changes)
                return self.sessions[i]
        raise KeyError(number)

    def take_pending_messages(self) -> list[str]:
        """The scheduled outbox keys still pending, to cancel (a pause, a move, a withdraw)."""
        keys, self.pending_messages = self.pending_messages, []
        return keys

    def flag(self, name: str, on: bool = True) -> None:
        """Raise (or lower) a flag."""
        if on and name not in self.flags:
            self.flags.append(name)
        elif not on and name in self.flags:
            self.flags.remove(name)

    def add_task(self, task: str) -> None:
        """A clinician task (kept once)."""
        if task not in self.clinician_tasks:
            self.clinician_tasks.append(task)

    def next_course(self, sessions: int) -> JourneyState:
        """The state a further course starts from: same patient, flags and facts, a new course
        that screens again."""
        summary = CourseSummary(
            course_number=self.course_number,
            sessions_done=self.sessions_done(),
            last_session_on=self.last_done_on(),
            outcome="further_course",
            global_improvement=self.review.global_improvement if self.review else None,
            pore_visibility=self.review.pore_visibility if self.review else None,
        )
        return self.model_copy(
            update={
                "course_number": self.course_number + 1,
                "course_sessions": sessions,
                "previous_courses": [*self.previous_courses, summary],
                "phase": "screening",
                "stage": "screening",
                "next_action": "Screen for the further course",
                "next_action_at": None,
                "flags": [f for f in self.flags if f not in COURSE_FLAGS],
                "answers": None,
                "answers_by_clinician": False,
                "screening": None,
                "sessions": [],
                "replan_requested": False,
                "checkins": {},
                "spf_attestations": [],
                "spf_until": None,
                "review_on": None,
                "waiting_reason": None,
                "season_opens_on": None,
                "review": None,
                "earliest_start": None,
                "resumed_at": None,
                "pending_messages": [],
            },
            deep=True,
        )

    # ------------------------------------------------------------- the query

    def to_status(self, journey_now: datetime | None) -> JourneyStatus:
        """The status query's answer (and what the read model stores)."""
        cp = self.cp
        screening = self.screening
        return JourneyStatus(
            patient_id=self.patient_id,
            clinic_id=self.clinic_id,
            stage=self.stage,
            paused_from=self.paused_from,
            protocol_version=cp.protocol.version if cp else "",
            course_number=self.course_number,
            pore_grade=self.pore_grade,
            numbing_cream=self.numbing_cream,
            sessions=list(self.sessions),
            next_action=self.next_action,
            next_action_at=self.next_action_at,
            spf_until=self.spf_until,
            review_on=self.review_on,
            flags=list(self.flags),
            clinician_tasks=list(self.clinician_tasks),
            refused=list(self.refused),
            screening_outcome=screening.outcome if screening else None,
            deferred_until=screening.until
            if screening and screening.outcome == "deferred"
            else None,
            waiting_reason=self.waiting_reason,
            season_opens_on=self.season_opens_on,
            closed_reason=self.closed_reason,
            time_scale=self.time_scale,
            journey_now=journey_now,
            timezone=cp.clinic.timezone if cp else "UTC",
            previous_courses=list(self.previous_courses),
            trips=list(self.trips),
            anomalies=self.open_anomalies(),
            consent_version=self.consent_version,
            consent_required_version=self.consent_required_version,
            consent_valid=self.consent_valid(),
            review=self.review,
        )


def _resolve_start_request() -> None:
    # workflows.messages refers to JourneyState by name (it is imported last there).
    messages.JourneyState = JourneyState  # type: ignore[attr-defined]
    messages.JourneyStartRequest.model_rebuild()


_resolve_start_request()
