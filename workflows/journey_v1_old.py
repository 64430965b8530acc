"""The PatientJourney workflow: one durable workflow per patient, from intake to the review.

Deterministic: time only from the journey clock (``workflow.now()`` scaled), no I/O (every side
effect is the ``record_step`` activity, idempotent on workflow id + step), every clinical number
from the clinic's protocol loaded once at the start and kept for the whole journey.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import calendar
    from workflows.changes import ChangeCheck, SessionSlot, check_session_change
    from workflows.clock import JourneyClock
    from workflows.ids import CLINIC_ID, JOURNEY_FLAGS, JOURNEY_STAGE, NEXT_ACTION_AT
    from workflows.messages import (
        CLOSED_STAGES,
        AdverseEventSignal,
        ControlResult,
        CourseSummary,
        JourneyCarry,
        JourneyStartRequest,
        JourneyStatus,
        PauseRequest,
        PreSessionCheckRequest,
        PreSessionCheckResult,
        RecoveryCheckinSignal,
        RefusedRequest,
        RescheduleRequest,
        RescheduleResult,
        ResumeRequest,
        ReviewRequest,
        ReviewResult,
        ScreeningDecision,
        ScreeningRequest,
        SessionCompletedSignal,
        SessionStatus,
        SpfAttestedSignal,
        Stage,
        WithdrawRequest,
    )
    from workflows.planner import CoursePlan, plan_course, review_date, spf_window_end
    from workflows.protocol import ClinicProtocol
    from workflows.reasons import Reason, format_date
    from workflows.records import (
        AppointmentRecord,
        ClinicRef,
        JourneyEvent,
        JourneyProjection,
        NotificationRecord,
        StepRecord,
    )
    from workflows.screening import ScreeningAnswers, ScreeningResult, screen

# Activity plumbing, not clinical numbers: how long one database write may take (short, so a
# crashed worker's write is retried elsewhere within seconds) and how retries
# back off. Unlimited attempts: a database outage must delay the journey, never fail it.
ACTIVITY_TIMEOUT = timedelta(seconds=10)
ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    non_retryable_error_types=["UnknownClinic"],
)
# Patches (STYLE W12): each guards a change to code that running journeys execute.
HOLD_SESSION_WHILE_PAUSED = "202611-hold-session-while-paused"
# The status keeps only the latest refusals; the timeline in PostgreSQL keeps them all.
RECENT_REFUSALS = 20


class _JourneyClosed(Exception):
    """Unwinds the journey's main coroutine once it was withdrawn (never leaves the workflow)."""


def _refuse_one(kind: str, rule: str, message: str) -> ApplicationError:
    """A refusal for one broken rule."""
    return _refuse(kind, [Reason(rule=rule, message=message)])


def _refuse(kind: str, reasons: list[Reason]) -> ApplicationError:
    """The error an update validator raises: a type per request, every reason in the details."""
    message = "; ".join(r.message for r in reasons)
    return ApplicationError(
        message,
        *[r.model_dump() for r in reasons],
        type=f"{kind}Refused",
        non_retryable=True,
    )


@workflow.defn(name="PatientJourney")
class PatientJourney:
    """One patient's journey: screening, seasonal gate, sessions, recovery, SPF window, review.

    Guarantees: a fact (signal) is applied once per ``idempotency_key`` and a refused fact is
    recorded with its reasons, never half-applied; a request (update) that breaks a rule is
    refused by its validator before it reaches history, with every rule it breaks; every change
    is written to PostgreSQL through ``record_step`` and the search attributes.
    """

    @workflow.init
    def __init__(self, request: JourneyStartRequest) -> None:
        self._request = request
        carried = request.carried or JourneyCarry()
        self._cp: ClinicProtocol | None = request.clinic_protocol
        self._clock: JourneyClock | None = None
        self._carried = carried
        self._step = carried.step
        self._flags: list[str] = list(carried.flags)
        self._clinician_tasks: list[str] = list(carried.clinician_tasks)
        self._seen_keys: set[str] = set(carried.seen_keys)
        self._refused: list[RefusedRequest] = list(carried.refused)
        self._stage: Stage = "screening"
        self._paused_from: Stage | None = None
        self._answers: ScreeningAnswers | None = (
            None if request.rescreen_required else request.screening
        )
        self._screening: ScreeningResult | None = None
        self._sessions: list[SessionStatus] = list(carried.sessions)
        if carried.sessions and carried.answers is not None:
            self._answers = carried.answers
        self._course_sessions = request.course_sessions
        self._next_action: str | None = None
        self._next_action_at: datetime | None = None
        self._spf_until: date | None = None
        self._review_on: date | None = None
        self._waiting_reason: str | None = None
        self._season_opens_on: date | None = None
        self._closed_reason: str | None = None
        self._review: ReviewRequest | None = None
        self._checkins: dict[int, RecoveryCheckinSignal] = {
            n: RecoveryCheckinSignal(
                idempotency_key=f"carried-{n}", session_number=n, day=0, reaction="none"
            )
            for n in carried.checked_in
        }
        self._spf_attestations: list[date] = []
        self._withdrawn = False
        self._deferred_session: int | None = None
        self._changes = 0  # bumped by every handler that changes the plan or pauses
        self._reminded: set[str] = set(carried.reminded)
        self._replan_requested = False
        self._paused_next: tuple[str | None, datetime | None] = (None, None)
        self._lock = asyncio.Lock()
        self._last_search_attributes: tuple[Any, ...] | None = None

    # ------------------------------------------------------------------ run

    @workflow.run
    async def run(self, request: JourneyStartRequest) -> JourneyStatus:
        """Drive the journey to a closed stage (excluded, completed, withdrawn).

        A further course after the review continues as new with the course number, the
        flags and a summary of earlier courses.
        """
        try:
            await self._journey()
        except _JourneyClosed:
            pass
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.get_status()

    async def _journey(self) -> None:
        if self._cp is None:
            self._cp = await workflow.execute_activity(
                "load_clinic",
                ClinicRef(clinic_id=self._request.clinic_id),
                result_type=ClinicProtocol,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            )
        real_now = workflow.now()
        self._clock = JourneyClock(
            scale=self._request.time_scale,
            anchor_real=self._carried.sim_anchor_real or real_now,
            anchor_sim=self._carried.sim_anchor_sim or real_now,
        )
        if self._carried.sessions:
            # A long history continued as new mid-course: resume the sessions where they were.
            await self._run_sessions()
            await self._spf_window()
            await self._await_review()
            return
        await self._commit(
            self._event(
                "course_started" if self._request.course_number > 1 else "journey_started",
                "system",
                f"Course {self._request.course_number} started "
                f"(protocol {self._cp.protocol.version}, grade {self._request.pore_grade}).",
                {
                    "course": self._request.course_number,
                    "protocol_version": self._cp.protocol.version,
                    "time_scale": self._request.time_scale,
                },
            )
        )
        if not await self._screen_until_eligible():
            return
        await self._plan_and_wait_for_season(previous=None)
        await self._run_sessions()
        await self._spf_window()
        await self._await_review()

    # ------------------------------------------------------------------ helpers: time

    @property
    def _protocol_cp(self) -> ClinicProtocol:
        assert self._cp is not None
        return self._cp

    def _now(self) -> datetime:
        if self._clock is None:
            return workflow.now()
        return self._clock.now(workflow.now())

    def _today(self) -> date:
        return calendar.clinic_today(self._now(), self._protocol_cp.clinic.timezone)

    def _day_start(self, d: date) -> datetime:
        return calendar.local_datetime(d, time(0, 0), self._protocol_cp.clinic.timezone)

    async def _wait_until(
        self, deadline: datetime | None, ready: Callable[[], bool], summary: str
    ) -> bool:
        """Wait once: until ``ready()``, the journey clock reaching ``deadline``, a plan change,
        or a resume. Returns ``ready()``; callers loop and recompute (the updatable timer).

        While paused nothing fires: the wait returns on resume so the caller recomputes.
        """
        self._raise_if_withdrawn()
        if ready():
            return True
        seen = self._changes
        if self._stage == "paused":
            await workflow.wait_condition(lambda: self._stage != "paused" or self._withdrawn)
        elif deadline is None:
            await workflow.wait_condition(
                lambda: ready() or self._withdrawn or self._changes != seen
            )
        else:
            assert self._clock is not None
            delay = self._clock.real_delay(deadline, workflow.now())
            if delay > timedelta(0):
                try:
                    await workflow.wait_condition(
                        lambda: ready() or self._withdrawn or self._changes != seen,
                        timeout=delay,
                        timeout_summary=summary,
                    )
                except TimeoutError:
                    pass
        self._raise_if_withdrawn()
        return ready()

    async def _sleep_until(
        self, deadline: datetime | None, ready: Callable[[], bool], summary: str
    ) -> bool:
        """Wait until ``ready()`` or the deadline, through plan changes and pauses."""
        while not ready() and (
            deadline is None or self._now() < deadline or self._stage == "paused"
        ):
            await self._wait_until(deadline, ready, summary)
        return ready()

    def _raise_if_withdrawn(self) -> None:
        if self._withdrawn:
            raise _JourneyClosed()

    # ------------------------------------------------------------------ helpers: records

    def _event(
        self, kind: str, actor: str, summary: str, data: dict[str, Any] | None = None
    ) -> JourneyEvent:
        return JourneyEvent(
            key="",  # set by _commit from the step number
            kind=kind,
            actor=actor,
            occurred_at=self._now(),
            summary=summary,
            data=data or {},
        )

    def _notify(
        self, kind: str, key: str, audience: str = "patient", **params: str
    ) -> NotificationRecord:
        return NotificationRecord(
            key=f"c{self._request.course_number}:{key}",
            kind=kind,  # type: ignore[arg-type]
            audience=audience,  # type: ignore[arg-type]
            params=params,
        )

    def _appointment(self, s: SessionStatus) -> AppointmentRecord:
        assert s.starts_at is not None
        return AppointmentRecord(
            course_number=self._request.course_number,
            session_number=s.number,
            starts_at=s.starts_at,
            arrive_by=s.arrive_by,
            duration_minutes=self._session_minutes(),
            status=s.state,
        )

    def _session_minutes(self) -> int:
        p = self._protocol_cp.protocol
        return (
            p.session_minutes_max if self._request.pore_grade == "large" else p.session_minutes_min
        )

    async def _commit(
        self,
        *events: JourneyEvent,
        appointments: list[AppointmentRecord] | None = None,
        notifications: list[NotificationRecord] | None = None,
    ) -> None:
        """Write one step (events, read model, appointments, outbox) and the search attributes.

        Idempotency key: (workflow id, step). The step counter survives continue-as-new, so a
        retried or replayed write never lands twice.
        """
        async with self._lock:
            self._step += 1
            step = self._step
            keyed = [e.model_copy(update={"key": f"{step}.{i}"}) for i, e in enumerate(events)]
            self._upsert_search_attributes()
            await workflow.execute_activity(
                "record_step",
                StepRecord(
                    workflow_id=workflow.info().workflow_id,
                    step=step,
                    events=keyed,
                    projection=self._projection(step),
                    appointments=appointments or [],
                    notifications=notifications or [],
                ),
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            )

    def _projection(self, version: int) -> JourneyProjection:
        status = self.get_status()
        return JourneyProjection(
            patient_id=self._request.patient_id,
            clinic_id=self._request.clinic_id,
            version=version,
            stage=self._stage,
            course_number=self._request.course_number,
            sessions_planned=len(self._sessions),
            sessions_done=sum(1 for s in self._sessions if s.state == "done"),
            next_action=self._next_action,
            next_action_at=self._next_action_at,
            spf_until=self._spf_until,
            review_on=self._review_on,
            flags=list(self._flags),
            protocol_version=self._protocol_cp.protocol.version,
            status=status.model_dump(mode="json"),
        )

    def _upsert_search_attributes(self) -> None:
        current = (self._stage, self._next_action_at, tuple(self._flags))
        if current == self._last_search_attributes:
            return
        self._last_search_attributes = current
        updates = [
            JOURNEY_STAGE.value_set(self._stage),
            CLINIC_ID.value_set(self._request.clinic_id),
            JOURNEY_FLAGS.value_set(list(self._flags)),
            NEXT_ACTION_AT.value_set(self._next_action_at)
            if self._next_action_at is not None
            else NEXT_ACTION_AT.value_unset(),
        ]
        workflow.upsert_search_attributes(updates)

    def _set_stage(self, stage: Stage, next_action: str | None, at: datetime | None) -> None:
        self._stage = stage
        self._next_action = next_action
        self._next_action_at = at

    def _flag(self, flag: str) -> None:
        if flag not in self._flags:
            self._flags.append(flag)

    async def _refuse_fact(self, kind: str, reasons: list[Reason], key: str, actor: str) -> None:
        self._refused.append(RefusedRequest(at=self._now(), kind=kind, reasons=reasons))
        del self._refused[:-RECENT_REFUSALS]
        await self._commit(
            self._event(
                "fact_refused",
                actor,
                f"Refused {kind}: " + "; ".join(r.message for r in reasons),
                {
                    "kind": kind,
                    "idempotency_key": key,
                    "reasons": [r.model_dump() for r in reasons],
                },
            )
        )

    # ------------------------------------------------------------------ screening

    async def _screen_until_eligible(self) -> bool:
        """Screen, and on a deferral wait for the date then for a re-screen. False: excluded."""
        while True:
            if self._answers is None:
                self._set_stage("screening", "Record the screening answers", None)
                await self._commit(
                    self._event("screening_requested", "system", "Screening answers needed."),
                    notifications=[self._notify("rescreen_due", f"rescreen-{self._step}", "staff")],
                )
                await self._sleep_until(None, lambda: self._answers is not None, "screening")
                continue
            result = self._screening or self._apply_screening(self._answers)
            self._screening = result
            if result.outcome == "eligible":
                return True
            if result.outcome == "excluded":
                self._closed_reason = "; ".join(r.message for r in result.reasons)
                self._set_stage("excluded", None, None)
                await self._commit(
                    self._event(
                        "excluded",
                        "system",
                        f"Excluded: {self._closed_reason}",
                        {"reasons": [r.model_dump() for r in result.reasons]},
                    )
                )
                return False
            # Deferred: wait for the date (or a clinician's decision), then ask for a re-screen.
            until = result.until
            answers_seen = self._answers
            at = self._day_start(until) if until else None
            self._set_stage("deferred", "Re-screen the patient", at)
            await self._commit(
                self._event(
                    "deferred",
                    "system",
                    "Deferred"
                    + (f" until {format_date(until)}" if until else " until a clinician decides")
                    + ": "
                    + "; ".join(r.message for r in result.reasons),
                    {
                        "until": until.isoformat() if until else None,
                        "reasons": [r.model_dump() for r in result.reasons],
                    },
                )
            )
            await self._sleep_until(
                at, lambda seen=answers_seen: self._answers is not seen, "deferred"
            )
            if self._answers is answers_seen:
                # The date came: ask for fresh answers rather than reuse the old ones.
                self._answers = None
                self._screening = None

    def _apply_screening(self, answers: ScreeningAnswers) -> ScreeningResult:
        result = screen(answers, self._today(), self._protocol_cp.protocol)
        for f in result.flags:
            self._flag(f)
        for t in result.clinician_tasks:
            if t not in self._clinician_tasks:
                self._clinician_tasks.append(t)
        return result

    # ------------------------------------------------------------------ planning

    def _conservative(self) -> bool:
        return "conservative_settings" in self._flags

    def _sessions_in_course(self) -> int:
        if self._course_sessions is not None:
            return self._course_sessions
        return self._protocol_cp.protocol.sessions_for(self._request.pore_grade)

    def _last_done(self) -> date | None:
        done = [s for s in self._sessions if s.state == "done" and s.completed_at is not None]
        if not done:
            return None
        last = max(done, key=lambda s: s.number)
        assert last.completed_at is not None
        return calendar.clinic_today(last.completed_at, self._protocol_cp.clinic.timezone)

    def _plan_remaining(self, earliest: date) -> CoursePlan:
        remaining = [s for s in self._sessions if s.state != "done"]
        count = len(remaining) if self._sessions else self._sessions_in_course()
        return plan_course(
            earliest,
            count,
            self._protocol_cp,
            trips=self._request.trips,
            previous_session_on=self._last_done(),
            conservative=self._conservative(),
        )

    def _apply_plan(self, plan: CoursePlan) -> None:
        done = [s for s in self._sessions if s.state == "done"]
        first_number = len(done) + 1
        planned = [self._session_at(first_number + i, d) for i, d in enumerate(plan.sessions)]
        self._sessions = done + planned
        if plan.last_session_on is not None:
            self._spf_until = spf_window_end(plan.last_session_on, self._protocol_cp.protocol)
            self._review_on = review_date(plan.last_session_on, self._protocol_cp.protocol)

    def _session_at(self, number: int, on: date, at: time | None = None) -> SessionStatus:
        cp = self._protocol_cp
        starts_at = calendar.local_datetime(on, at or cp.clinic.session_start, cp.clinic.timezone)
        arrive_by = (
            starts_at - timedelta(minutes=cp.protocol.numbing_lead_minutes)
            if self._request.numbing_cream
            else None
        )
        return SessionStatus(number=number, planned_on=on, starts_at=starts_at, arrive_by=arrive_by)

    async def _plan_and_wait_for_season(self, previous: date | None) -> None:
        """Plan the (rest of the) course; when it cannot fit now, wait durably for its start.

        ``previous`` is the last done session of a running course: a plan pushed into a later
        season then splits the course (flag ``course_split``).
        """
        earliest = self._today() + timedelta(days=self._protocol_cp.protocol.booking_notice_days)
        if self._request.earliest_start and self._request.earliest_start > earliest:
            earliest = self._request.earliest_start
        plan = self._plan_remaining(earliest)
        if not plan.sessions:
            raise ApplicationError(
                "No course fits the clinic's calendar: " + (plan.waiting_reason or ""),
                type="NoPlanPossible",
                non_retryable=True,
            )
        self._apply_plan(plan)
        if plan.waiting_reason is None or self._now() >= self._booking_time():
            self._waiting_reason = None
            self._season_opens_on = None
            return
        split = previous is not None
        if split:
            self._flag("course_split")
        self._waiting_reason = plan.waiting_reason
        self._season_opens_on = plan.starts_on
        self._set_stage(
            "awaiting_season", "Book the first session of the season", self._booking_time()
        )
        await self._commit(
            self._event(
                "course_split" if split else "awaiting_season",
                "system",
                plan.waiting_reason,
                {
                    "starts_on": plan.sessions[0].isoformat(),
                    "sessions": [d.isoformat() for d in plan.sessions],
                },
            ),
            notifications=[
                self._notify(
                    "season_waiting",
                    f"season-{plan.sessions[0].isoformat()}",
                    starts_on=plan.sessions[0].isoformat(),
                )
            ],
        )
        # The booking time moves if the first session is rescheduled while waiting.
        while self._now() < self._booking_time() or self._stage == "paused":
            await self._wait_until(self._booking_time(), lambda: False, "awaiting_season")
        self._waiting_reason = None
        self._season_opens_on = None

    def _booking_time(self) -> datetime:
        """When the next session is booked and its reminder goes out."""
        s = self._current_session()
        assert s is not None and s.starts_at is not None
        return s.starts_at - timedelta(hours=self._protocol_cp.protocol.reminder_lead_hours)

    # ------------------------------------------------------------------ sessions

    def _current_session(self) -> SessionStatus | None:
        for s in self._sessions:
            if s.state != "done":
                return s
        return None

    def _index(self, number: int) -> int:
        for i, s in enumerate(self._sessions):
            if s.number == number:
                return i
        raise KeyError(number)

    def _replace_session(self, number: int, **changes: Any) -> SessionStatus:
        i = self._index(number)
        self._sessions[i] = self._sessions[i].model_copy(update=changes)
        return self._sessions[i]

    def _min_interval(self) -> int:
        p = self._protocol_cp.protocol
        return p.conservative_interval_min_days if self._conservative() else p.min_interval_days

    def _needs_replan(self, s: SessionStatus) -> bool:
        """A session to plan again: missed or deferred, a date that passed before it was
        booked, a resume after its day, or a date that breaks the interval after a late
        completion. A booked session whose day passed is a no-show instead."""
        if s.state in ("no_show", "deferred") or self._replan_requested:
            return True
        if s.state == "planned" and s.planned_on < self._today():
            return True
        last = self._last_done()
        return last is not None and (s.planned_on - last).days < self._min_interval()

    async def _run_sessions(self) -> None:
        while (s := self._current_session()) is not None:
            self._raise_if_withdrawn()
            if workflow.info().is_continue_as_new_suggested() and self._stage != "paused":
                await self._continue_mid_course()
            if s.state == "deferred" and not await self._screen_until_eligible():
                raise _JourneyClosed()
            if self._needs_replan(s):
                self._replan_requested = False
                await self._plan_and_wait_for_season(previous=self._last_done())
                await self._commit(
                    self._event(
                        "replanned",
                        "system",
                        "Remaining sessions planned for "
                        + ", ".join(
                            format_date(x.planned_on) for x in self._sessions if x.state != "done"
                        )
                        + ".",
                    ),
                    appointments=[
                        self._appointment(x) for x in self._sessions if x.state != "done"
                    ],
                )
                continue
            await self._run_session(s.number)
            await self._recovery(s.number)

    async def _run_session(self, number: int) -> None:
        """Book, remind, wait for the day, then for the completion; none by the end of the
        day plus the grace period is a no-show (rebooked by the caller)."""
        p = self._protocol_cp.protocol
        tz = self._protocol_cp.clinic.timezone
        while True:
            if self._stage == "paused" and workflow.patched(HOLD_SESSION_WHILE_PAUSED):
                # Hold here: the branches below would otherwise reset the stage and keep the
                # appointment's timers running through a pause.
                await self._wait_until(None, lambda: False, "paused")
                continue
            s = self._sessions[self._index(number)]
            if self._session_settled(number) or self._needs_replan(s):
                return
            assert s.starts_at is not None
            if s.state == "planned":
                s = self._replace_session(number, state="booked")
                self._set_stage("scheduled", f"Session {number}", s.starts_at)
                await self._commit(
                    self._event(
                        "session_booked",
                        "system",
                        f"Session {number} booked for {format_date(s.planned_on)}.",
                        {"session": number, "starts_at": s.starts_at.isoformat()},
                    ),
                    appointments=[self._appointment(s)],
                    notifications=[
                        self._notify(
                            "booking_confirmation",
                            f"s{number}-booked-{s.starts_at.isoformat()}",
                            **self._session_params(s),
                        )
                    ],
                )
                continue
            reminder_at = s.starts_at - timedelta(hours=p.reminder_lead_hours)
            day_start = self._day_start(s.planned_on)
            deadline = calendar.end_of_local_day(s.planned_on, tz) + timedelta(
                hours=p.no_show_grace_hours
            )
            now = self._now()
            if now < day_start:
                self._set_stage("scheduled", f"Session {number}", s.starts_at)
                reminder_key = f"s{number}-reminder-{s.starts_at.isoformat()}"
                if now < reminder_at:
                    await self._wait_until(
                        reminder_at, lambda: self._session_settled(number), "scheduled"
                    )
                elif reminder_key not in self._reminded:
                    self._reminded.add(reminder_key)
                    await self._commit(
                        self._event(
                            "session_reminder", "system", f"Reminder for session {number} sent."
                        ),
                        notifications=[
                            self._notify(
                                "session_reminder", reminder_key, **self._session_params(s)
                            )
                        ],
                    )
                else:
                    await self._wait_until(
                        day_start, lambda: self._session_settled(number), "scheduled"
                    )
                continue
            if now < deadline:
                if self._stage != "session_due":
                    self._set_stage(
                        "session_due", f"Report session {number} as completed", deadline
                    )
                    await self._commit(
                        self._event("session_due", "system", f"Session {number} is due today.")
                    )
                await self._wait_until(
                    deadline, lambda: self._session_settled(number), "session_due"
                )
                continue
            s = self._replace_session(number, state="no_show")
            self._flag("no_show")
            await self._commit(
                self._event(
                    "no_show",
                    "system",
                    f"No completion reported for session {number} on {format_date(s.planned_on)}: no-show; rebooking.",
                    {"session": number},
                ),
                appointments=[self._appointment(s)],
                notifications=[
                    self._notify(
                        "staff_alert",
                        f"s{number}-noshow-{s.planned_on.isoformat()}",
                        "staff",
                        alert="no_show",
                        session=str(number),
                    )
                ],
            )
            return

    def _session_settled(self, number: int) -> bool:
        return self._sessions[self._index(number)].state in ("done", "no_show", "deferred")

    def _session_params(self, s: SessionStatus) -> dict[str, str]:
        assert s.starts_at is not None
        params = {
            "session": str(s.number),
            "starts_at": s.starts_at.isoformat(),
            "timezone": self._protocol_cp.clinic.timezone,
        }
        if s.arrive_by is not None:
            params["arrive_by"] = s.arrive_by.isoformat()
            params["arrive_early_minutes"] = str(self._protocol_cp.protocol.numbing_lead_minutes)
        return params

    async def _recovery(self, number: int) -> None:
        """Aftercare, then the day-N check-in; a prolonged reaction holds the next session."""
        s = self._sessions[self._index(number)]
        if s.state != "done":
            return
        p = self._protocol_cp.protocol
        clinic = self._protocol_cp.clinic
        assert s.completed_at is not None
        done_on = calendar.clinic_today(s.completed_at, clinic.timezone)
        checkin_at = calendar.local_datetime(
            done_on + timedelta(days=p.recovery_checkin_day), clinic.session_start, clinic.timezone
        )
        self._set_stage("recovery", f"Recovery check-in after session {number}", checkin_at)
        await self._commit(
            self._event(
                "recovery_started", "system", f"Aftercare given; recovery after session {number}."
            ),
            notifications=[
                self._notify(
                    "aftercare",
                    f"s{number}-aftercare",
                    session=str(number),
                    recovery_days_min=str(p.recovery_days_min),
                    recovery_days_max=str(p.recovery_days_max),
                )
            ],
        )
        checked_in = lambda: number in self._checkins  # noqa: E731
        if not await self._sleep_until(checkin_at, checked_in, "recovery"):
            overdue_at = checkin_at + timedelta(days=p.checkin_overdue_days)
            self._next_action_at = overdue_at
            await self._commit(
                self._event(
                    "checkin_due", "system", f"Recovery check-in for session {number} due."
                ),
                notifications=[
                    self._notify("recovery_checkin", f"s{number}-checkin", session=str(number))
                ],
            )
            if not await self._sleep_until(overdue_at, checked_in, "recovery"):
                self._flag("checkin_overdue")
                await self._commit(
                    self._event(
                        "checkin_overdue",
                        "system",
                        f"No recovery check-in for session {number}; the plan continues.",
                    ),
                    notifications=[
                        self._notify(
                            "staff_alert",
                            f"s{number}-checkin-overdue",
                            "staff",
                            alert="checkin_overdue",
                            session=str(number),
                        )
                    ],
                )
        # A prolonged reaction paused the journey in its handler: hold until staff resume.
        await self._sleep_until(None, lambda: self._stage != "paused", "recovery")

    # ------------------------------------------------------------------ SPF window and review

    async def _spf_window(self) -> None:
        """SPF 50 daily until the window ends, with a reminder every few weeks."""
        p = self._protocol_cp.protocol
        last = self._last_done()
        assert last is not None
        spf_until = spf_window_end(last, p)
        self._spf_until = spf_until
        self._review_on = review_date(last, p)
        spf_end = self._day_start(spf_until + timedelta(days=1))
        reminder = 0
        while self._now() < spf_end:
            reminder += 1
            next_reminder = min(
                self._day_start(last + timedelta(days=p.spf_reminder_interval_days * reminder)),
                spf_end,
            )
            self._set_stage(
                "spf_window", f"SPF 50 every day until {format_date(spf_until)}", next_reminder
            )
            await self._commit(
                self._event(
                    "spf_window" if reminder == 1 else "spf_reminder",
                    "system",
                    f"SPF 50 every day until {format_date(spf_until)}.",
                    {"spf_until": spf_until.isoformat()},
                ),
                notifications=[
                    self._notify("spf_reminder", f"spf-{reminder}", spf_until=spf_until.isoformat())
                ],
            )
            await self._sleep_until(next_reminder, lambda: False, "spf_window")

    async def _await_review(self) -> None:
        """Wait for ``record_review`` from the review date; remind staff when it is late."""
        p = self._protocol_cp.protocol
        assert self._review_on is not None
        review_at = self._day_start(self._review_on)
        reviewed = lambda: self._review is not None  # noqa: E731
        self._set_stage("awaiting_review", "Record the 3-month review", review_at)
        await self._commit(
            self._event(
                "awaiting_review", "system", f"Review due on {format_date(self._review_on)}."
            ),
        )
        if not await self._sleep_until(review_at, reviewed, "awaiting_review"):
            await self._commit(
                self._event("review_due", "system", "The 3-month review is due today."),
                notifications=[
                    self._notify(
                        "review_invite", "review-invite", review_on=self._review_on.isoformat()
                    )
                ],
            )
            overdue_at = review_at + timedelta(days=p.review_overdue_days)
            self._next_action_at = overdue_at
            if not await self._sleep_until(overdue_at, reviewed, "awaiting_review"):
                self._flag("review_overdue")
                self._next_action = "Record the overdue review"
                await self._commit(
                    self._event("review_overdue", "system", "The 3-month review is overdue."),
                    notifications=[
                        self._notify(
                            "staff_alert", "review-overdue", "staff", alert="review_overdue"
                        )
                    ],
                )
                await self._sleep_until(None, reviewed, "awaiting_review")
        review = self._review
        assert review is not None
        if review.outcome == "complete":
            self._set_stage("completed", None, None)
            self._closed_reason = "Course complete after the review."
            await self._commit(
                self._event("completed", review.reviewed_by, "Review recorded: journey completed.")
            )
            return
        await self._continue_with_further_course(review)

    async def _continue_with_further_course(self, review: ReviewRequest) -> None:
        summary = CourseSummary(
            course_number=self._request.course_number,
            sessions_done=sum(1 for s in self._sessions if s.state == "done"),
            last_session_on=self._last_done(),
            outcome="further_course",
        )
        self._set_stage("screening", "Screen for the further course", None)
        if "review_overdue" in self._flags:
            self._flags.remove("review_overdue")
        await self._commit(
            self._event(
                "further_course",
                review.reviewed_by,
                f"Further course of {review.further_sessions} sessions; screening again.",
                {
                    "sessions": review.further_sessions,
                    "next_course": self._request.course_number + 1,
                },
            )
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        assert self._clock is not None
        workflow.continue_as_new(
            self._request.model_copy(
                update={
                    "course_number": self._request.course_number + 1,
                    "course_sessions": review.further_sessions,
                    "previous_courses": [*self._request.previous_courses, summary],
                    "clinic_protocol": self._cp,
                    "rescreen_required": True,
                    "earliest_start": None,
                    "carried": self._carry(),
                }
            )
        )

    async def _continue_mid_course(self) -> None:
        """Continue as new between two sessions when the history grows long (many
        reschedules or facts), carrying the course as it stands."""
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._commit(
            self._event(
                "history_continued", "system", "Long history: the journey continues as new."
            )
        )
        workflow.continue_as_new(
            self._request.model_copy(
                update={"clinic_protocol": self._cp, "carried": self._carry(mid_course=True)}
            )
        )

    def _carry(self, *, mid_course: bool = False) -> JourneyCarry:
        assert self._clock is not None
        if mid_course:
            return self._carry().model_copy(
                update={
                    "flags": list(self._flags),
                    "sessions": list(self._sessions),
                    "answers": self._answers,
                    "checked_in": sorted(self._checkins),
                    "reminded": sorted(self._reminded),
                }
            )
        return JourneyCarry(
            step=self._step,
            sim_anchor_real=self._clock.anchor_real,
            sim_anchor_sim=self._clock.anchor_sim,
            flags=[f for f in self._flags if f not in ("no_show", "checkin_overdue")],
            clinician_tasks=self._clinician_tasks,
            seen_keys=sorted(self._seen_keys),
            refused=self._refused,
        )

    # ------------------------------------------------------------------ signals (facts)

    async def _first_time(self, key: str) -> bool:
        """The idempotency guard of every fact: False for a repeat. A fact that arrives before
        the clinic is loaded waits for it."""
        if key in self._seen_keys:
            return False
        self._seen_keys.add(key)
        await workflow.wait_condition(lambda: self._cp is not None and self._clock is not None)
        return True

    @workflow.signal(name="session_completed")
    async def record_session_completed(self, fact: SessionCompletedSignal) -> None:
        """A session happened. Idempotent on ``idempotency_key``; refused (recorded) when it
        names a session that is not the next one, or the journey is not expecting one."""
        if not await self._first_time(fact.idempotency_key):
            return
        reasons = self._completion_problems(fact)
        if reasons:
            await self._refuse_fact(
                "session_completed", reasons, fact.idempotency_key, "integration"
            )
            return
        checked = self._sessions[self._index(fact.session_number)].pre_session_checked
        s = self._replace_session(
            fact.session_number, state="done", completed_at=fact.completed_at, source=fact.source
        )
        if not checked:
            self._flag("no_pre_session_check")
        self._changes += 1
        await self._commit(
            self._event(
                "session_completed",
                "integration",
                f"Session {s.number} completed ({fact.source})"
                + ("" if checked else "; no pre-session check was recorded")
                + ".",
                {
                    "session": s.number,
                    "completed_at": fact.completed_at.isoformat(),
                    "source": fact.source,
                    "idempotency_key": fact.idempotency_key,
                },
            ),
            appointments=[self._appointment(s)],
        )

    def _completion_problems(self, fact: SessionCompletedSignal) -> list[Reason]:
        current = self._current_session()
        if self._stage in CLOSED_STAGES:
            return [Reason(rule="journey_closed", message=f"The journey is {self._stage}.")]
        if self._stage not in ("scheduled", "session_due") or current is None:
            return [
                Reason(
                    rule="not_expecting_session",
                    message=f"No session is expected while the journey is {self._stage.replace('_', ' ')}.",
                )
            ]
        known = {s.number: s for s in self._sessions}
        if fact.session_number not in known:
            return [
                Reason(
                    rule="no_such_session",
                    message=f"This course has no session {fact.session_number}.",
                )
            ]
        if known[fact.session_number].state == "done":
            return [
                Reason(
                    rule="already_completed",
                    message=f"Session {fact.session_number} was already reported as completed.",
                )
            ]
        if fact.session_number != current.number:
            return [
                Reason(
                    rule="out_of_order",
                    message=f"Session {current.number} comes next, not session {fact.session_number}.",
                )
            ]
        reasons: list[Reason] = []
        tz = self._protocol_cp.clinic.timezone
        on = calendar.clinic_today(fact.completed_at, tz)
        last = self._last_done()
        p = self._protocol_cp.protocol
        if last is not None and (on - last).days < p.min_interval_days:
            reasons.append(
                Reason(
                    rule="too_soon_after_previous",
                    message=f"Session {fact.session_number} on {format_date(on)} is less than {p.min_interval_days} days after the previous one on {format_date(last)}.",
                )
            )
        if fact.completed_at > self._now() + timedelta(hours=p.no_show_grace_hours):
            reasons.append(
                Reason(
                    rule="in_future",
                    message=f"The completion time {fact.completed_at.isoformat()} is in the future.",
                )
            )
        return reasons

    @workflow.signal(name="recovery_checkin")
    async def record_recovery_checkin(self, fact: RecoveryCheckinSignal) -> None:
        """A recovery check-in; a prolonged reaction flags a clinician and holds the next
        session (pauses) until staff resume. Idempotent on ``idempotency_key``."""
        if not await self._first_time(fact.idempotency_key):
            return
        known = {s.number: s for s in self._sessions}
        s = known.get(fact.session_number)
        if s is None or s.state != "done":
            await self._refuse_fact(
                "recovery_checkin",
                [
                    Reason(
                        rule="session_not_done",
                        message=f"Session {fact.session_number} has not been completed, so there is no recovery to check.",
                    )
                ],
                fact.idempotency_key,
                fact.reported_by,
            )
            return
        self._checkins[fact.session_number] = fact
        self._replace_session(fact.session_number, reaction=fact.reaction)
        notifications: list[NotificationRecord] = []
        summary = f"Day {fact.day} check-in after session {fact.session_number}: reaction {fact.reaction}."
        if fact.reaction == "prolonged":
            self._flag("prolonged_reaction")
            self._pause("A prolonged reaction needs a clinician before the next session.")
            notifications.append(
                self._notify(
                    "staff_alert",
                    f"s{fact.session_number}-prolonged",
                    "staff",
                    alert="prolonged_reaction",
                    session=str(fact.session_number),
                )
            )
            summary += " Journey paused: a clinician must see the patient before the next session."
        self._changes += 1
        await self._commit(
            self._event(
                "recovery_checkin",
                fact.reported_by,
                summary,
                {"session": fact.session_number, "day": fact.day, "reaction": fact.reaction},
            ),
            notifications=notifications,
        )

    @workflow.signal(name="spf_attested")
    async def record_spf_attested(self, fact: SpfAttestedSignal) -> None:
        """The patient attests SPF-50 use. Idempotent on ``idempotency_key``."""
        if not await self._first_time(fact.idempotency_key):
            return
        if self._last_done() is None:
            await self._refuse_fact(
                "spf_attested",
                [
                    Reason(
                        rule="no_session_yet",
                        message="SPF attestations start after the first session.",
                    )
                ],
                fact.idempotency_key,
                fact.reported_by,
            )
            return
        self._spf_attestations.append(fact.on)
        await self._commit(
            self._event(
                "spf_attested",
                fact.reported_by,
                f"SPF 50 use attested for {format_date(fact.on)}.",
                {"on": fact.on.isoformat()},
            )
        )

    @workflow.signal(name="adverse_event")
    async def record_adverse_event(self, fact: AdverseEventSignal) -> None:
        """An adverse reaction: the journey pauses and a clinician is flagged."""
        if not await self._first_time(fact.idempotency_key):
            return
        if self._stage in CLOSED_STAGES:
            await self._refuse_fact(
                "adverse_event",
                [
                    Reason(
                        rule="journey_closed",
                        message=f"The journey is {self._stage}; record the event in the EMR.",
                    )
                ],
                fact.idempotency_key,
                fact.reported_by,
            )
            return
        self._flag("adverse_event")
        self._pause(f"Adverse event ({fact.severity}); see note {fact.note_ref}.")
        self._changes += 1
        await self._commit(
            self._event(
                "adverse_event",
                fact.reported_by,
                f"Adverse event ({fact.severity}), note {fact.note_ref}. Journey paused for a clinician.",
                {"severity": fact.severity, "note_ref": fact.note_ref},
            ),
            notifications=[
                self._notify(
                    "staff_alert",
                    f"adverse-{fact.idempotency_key}",
                    "staff",
                    alert="adverse_event",
                    severity=fact.severity,
                )
            ],
        )

    # ------------------------------------------------------------------ updates (requests)

    def _pause(self, reason: str) -> None:
        if self._stage != "paused" and self._stage not in CLOSED_STAGES:
            self._paused_from = self._stage
            self._paused_next = (self._next_action, self._next_action_at)
            self._set_stage("paused", f"Resume: {reason}", None)

    @workflow.update(name="submit_screening")
    async def submit_screening(self, request: ScreeningRequest) -> ScreeningDecision:
        """Re-screen answers (after a deferral, or for a further course).

        Refused (``ScreeningRefused``) unless the journey is in screening or deferred.
        """
        result = self._apply_screening(request.answers)
        self._answers = request.answers
        self._screening = result
        self._changes += 1
        stage: Stage = {
            "eligible": "awaiting_season",
            "deferred": "deferred",
            "excluded": "excluded",
        }[result.outcome]  # type: ignore[assignment]
        await self._commit(
            self._event(
                "screening_submitted",
                request.requested_by,
                f"Screening: {result.outcome}"
                + (f" until {format_date(result.until)}" if result.until else "")
                + ".",
                {"outcome": result.outcome, "reasons": [r.model_dump() for r in result.reasons]},
            )
        )
        return ScreeningDecision(
            outcome=result.outcome, until=result.until, reasons=result.reasons, stage=stage
        )

    @submit_screening.validator
    def _validate_screening(self, request: ScreeningRequest) -> None:
        if self._cp is None or self._stage not in ("screening", "deferred"):
            raise _refuse_one(
                "Screening",
                "not_screening",
                f"A screening is taken while the journey is in screening or deferred, not {self._stage.replace('_', ' ')}.",
            )

    @workflow.update(name="pre_session_check")
    async def pre_session_check(self, request: PreSessionCheckRequest) -> PreSessionCheckResult:
        """The check on the day: a new contraindication defers that session and replans.

        Refused (``PreSessionCheckRefused``) unless it is for the next session of a course that
        is scheduled or due.
        """
        result = self._apply_screening(request.answers)
        number = request.session_number
        if result.outcome == "eligible":
            self._replace_session(number, pre_session_checked=True)
            await self._commit(
                self._event(
                    "pre_session_check",
                    request.checked_by,
                    f"Pre-session check for session {number}: cleared.",
                    {"session": number},
                )
            )
            return PreSessionCheckResult(cleared=True, stage=self._stage)
        s = self._replace_session(number, state="deferred", pre_session_checked=True)
        self._answers = request.answers
        self._screening = result
        self._changes += 1
        await self._commit(
            self._event(
                "pre_session_check",
                request.checked_by,
                f"Pre-session check for session {number}: {result.outcome}. "
                + "; ".join(r.message for r in result.reasons),
                {
                    "session": number,
                    "outcome": result.outcome,
                    "reasons": [r.model_dump() for r in result.reasons],
                },
            ),
            appointments=[self._appointment(s)],
        )
        return PreSessionCheckResult(
            cleared=False, reasons=result.reasons, deferred_until=result.until, stage=self._stage
        )

    @pre_session_check.validator
    def _validate_pre_session_check(self, request: PreSessionCheckRequest) -> None:
        current = self._current_session()
        reasons: list[Reason] = []
        if self._stage not in ("scheduled", "session_due") or current is None:
            reasons.append(
                Reason(
                    rule="no_session_due",
                    message=f"No session is scheduled while the journey is {self._stage.replace('_', ' ')}.",
                )
            )
        elif request.session_number != current.number:
            reasons.append(
                Reason(
                    rule="not_next_session",
                    message=f"The next session is session {current.number}, not session {request.session_number}.",
                )
            )
        if reasons:
            raise _refuse("PreSessionCheck", reasons)

    @workflow.update(name="reschedule")
    async def reschedule(self, request: RescheduleRequest) -> RescheduleResult:
        """Move a session; later sessions shift only as needed to keep the minimum interval.

        Refused (``RescheduleRefused``) with every rule broken (the planner's reasons).
        """
        check = self._check_reschedule(request)
        moved: list[SessionStatus] = []
        for offset, new_on in enumerate(check.new_dates):
            number = request.session_number + offset
            at = request.new_time if offset == 0 else None
            fresh = self._session_at(number, new_on, at)
            state = "booked" if self._sessions[self._index(number)].state == "booked" else "planned"
            moved.append(
                self._replace_session(
                    number,
                    planned_on=new_on,
                    starts_at=fresh.starts_at,
                    arrive_by=fresh.arrive_by,
                    state=state,
                )
            )
        if self._stage == "session_due":
            self._set_stage("scheduled", f"Session {request.session_number}", moved[0].starts_at)
        last = self._sessions[-1].planned_on
        self._spf_until = spf_window_end(last, self._protocol_cp.protocol)
        self._review_on = review_date(last, self._protocol_cp.protocol)
        self._changes += 1
        await self._commit(
            self._event(
                "rescheduled",
                request.requested_by,
                f"Session {request.session_number} moved to {format_date(check.new_dates[0])}"
                + (
                    f"; later sessions: {', '.join(format_date(d) for d in check.new_dates[1:])}"
                    if len(check.new_dates) > 1
                    else ""
                )
                + ".",
                {
                    "session": request.session_number,
                    "new_dates": [d.isoformat() for d in check.new_dates],
                },
            ),
            appointments=[self._appointment(s) for s in moved],
            notifications=[
                self._notify(
                    "session_rebooked",
                    f"s{s.number}-rebooked-{s.starts_at.isoformat() if s.starts_at else ''}",
                    **self._session_params(s),
                )
                for s in moved[:1]
            ],
        )
        return RescheduleResult(
            session_number=request.session_number,
            new_dates=check.new_dates,
            sessions=list(self._sessions),
        )

    def _check_reschedule(self, request: RescheduleRequest) -> ChangeCheck:
        return check_session_change(
            request.session_number,
            request.new_date,
            [
                SessionSlot(number=s.number, on=s.planned_on, done=s.state == "done")
                for s in self._sessions
            ],
            self._protocol_cp,
            today=self._today(),
            trips=self._request.trips,
            conservative=self._conservative(),
        )

    @reschedule.validator
    def _validate_reschedule(self, request: RescheduleRequest) -> None:
        if (
            self._cp is None
            or self._stage
            not in ("awaiting_season", "scheduled", "session_due", "recovery", "paused")
            or not self._sessions
        ):
            raise _refuse_one(
                "Reschedule",
                "nothing_to_reschedule",
                f"There is no session to move while the journey is {self._stage.replace('_', ' ')}.",
            )
        check = self._check_reschedule(request)
        if not check.accepted:
            raise _refuse("Reschedule", check.reasons)

    @workflow.update(name="pause")
    async def pause(self, request: PauseRequest) -> ControlResult:
        """Hold every timer-driven step. Refused (``PauseRefused``) when closed or already paused."""
        previous = self._stage
        self._pause(request.reason)
        self._changes += 1
        await self._commit(
            self._event(
                "paused", request.requested_by, f"Paused: {request.reason}", {"from": previous}
            )
        )
        return ControlResult(stage=self._stage, previous_stage=previous)

    @pause.validator
    def _validate_pause(self, request: PauseRequest) -> None:
        if self._stage == "paused" or self._stage in CLOSED_STAGES:
            raise _refuse_one(
                "Pause", "cannot_pause", f"The journey is {self._stage} and cannot be paused."
            )

    @workflow.update(name="resume")
    async def resume(self, request: ResumeRequest) -> ControlResult:
        """Resume where the journey left off; dates that passed are replanned.

        Refused (``ResumeRefused``) unless paused.
        """
        assert self._paused_from is not None
        stage = self._paused_from
        self._paused_from = None
        current = self._current_session()
        if current is not None and current.planned_on <= self._today():
            # Its day passed (or is today) while paused: plan it again rather than call it a no-show.
            self._replan_requested = True
        self._set_stage(stage, *self._paused_next)
        self._changes += 1
        await self._commit(
            self._event(
                "resumed", request.requested_by, f"Resumed: {request.reason}", {"to": stage}
            )
        )
        return ControlResult(stage=self._stage, previous_stage="paused")

    @resume.validator
    def _validate_resume(self, request: ResumeRequest) -> None:
        if self._stage != "paused":
            raise _refuse_one(
                "Resume",
                "not_paused",
                f"The journey is {self._stage.replace('_', ' ')}, not paused.",
            )

    @workflow.update(name="withdraw")
    async def withdraw(self, request: WithdrawRequest) -> ControlResult:
        """End the journey with the reason. Refused (``WithdrawRefused``) when already closed."""
        previous = self._stage
        self._withdrawn = True
        self._closed_reason = request.reason
        for s in self._sessions:
            if s.state in ("planned", "booked"):
                self._replace_session(s.number, state="cancelled")
        self._set_stage("withdrawn", None, None)
        self._changes += 1
        await self._commit(
            self._event(
                "withdrawn",
                request.requested_by,
                f"Withdrawn: {request.reason}",
                {"from": previous},
            ),
            appointments=[self._appointment(s) for s in self._sessions if s.state == "cancelled"],
            notifications=[self._notify("journey_withdrawn", "withdrawn")],
        )
        return ControlResult(stage=self._stage, previous_stage=previous)

    @withdraw.validator
    def _validate_withdraw(self, request: WithdrawRequest) -> None:
        if self._stage in CLOSED_STAGES:
            raise _refuse(
                "Withdraw",
                [Reason(rule="journey_closed", message=f"The journey is already {self._stage}.")],
            )

    @workflow.update(name="record_review")
    async def record_review(self, request: ReviewRequest) -> ReviewResult:
        """The review outcome: complete, or a further course (continues as new).

        Refused (``ReviewRefused``) before the journey awaits its review, or a further course
        without a valid number of sessions.
        """
        self._review = request
        self._changes += 1
        nxt = self._request.course_number + 1 if request.outcome == "further_course" else None
        return ReviewResult(
            outcome=request.outcome,
            next_course_number=nxt,
            stage="completed" if nxt is None else "screening",
        )

    @record_review.validator
    def _validate_review(self, request: ReviewRequest) -> None:
        reasons: list[Reason] = []
        if self._stage != "awaiting_review" or self._review is not None:
            reasons.append(
                Reason(
                    rule="review_not_due",
                    message=f"The review is recorded once the journey awaits it, not while it is {self._stage.replace('_', ' ')}.",
                )
            )
        if request.outcome == "further_course":
            limit = self._protocol_cp.protocol.max_sessions_per_course if self._cp else 0
            if request.further_sessions is None or request.further_sessions > limit:
                reasons.append(
                    Reason(
                        rule="further_sessions",
                        message=f"A further course needs a number of sessions between 1 and {limit}.",
                    )
                )
        if reasons:
            raise _refuse("Review", reasons)

    # ------------------------------------------------------------------ query

    @workflow.query(name="status")
    def get_status(self) -> JourneyStatus:
        """The journey's full status (read-only)."""
        cp = self._cp
        return JourneyStatus(
            patient_id=self._request.patient_id,
            clinic_id=self._request.clinic_id,
            stage=self._stage,
            paused_from=self._paused_from,
            protocol_version=cp.protocol.version if cp else "",
            course_number=self._request.course_number,
            pore_grade=self._request.pore_grade,
            numbing_cream=self._request.numbing_cream,
            sessions=list(self._sessions),
            next_action=self._next_action,
            next_action_at=self._next_action_at,
            spf_until=self._spf_until,
            review_on=self._review_on,
            flags=list(self._flags),
            clinician_tasks=list(self._clinician_tasks),
            refused=list(self._refused),
            screening_outcome=self._screening.outcome if self._screening else None,
            deferred_until=self._screening.until
            if self._screening and self._screening.outcome == "deferred"
            else None,
            waiting_reason=self._waiting_reason,
            season_opens_on=self._season_opens_on,
            closed_reason=self._closed_reason,
            time_scale=self._request.time_scale,
            journey_now=self._now() if self._clock else None,
            timezone=cp.clinic.timezone if cp else "UTC",
            previous_courses=list(self._request.previous_courses),
            trips=list(self._request.trips),
        )
