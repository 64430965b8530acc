"""The ``PatientJourney`` workflow: thin handlers over the stage modules, and the run loop.

Deterministic: time only from the journey clock, no I/O (every side effect is a write through
:class:`~workflows.journey.effects.Effects`), every clinical number from the clinic's protocol
loaded once and kept for the whole journey. "May this happen now?" is answered by
:mod:`workflows.guards` (stages) and the stage modules (dates and rules).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.booking import AppointmentReport
    from workflows.guards import refusals
    from workflows.journey import aftercare, facts, planning, recovery, replies, sessions, slots
    from workflows.journey.consent_requests import ConsentRequests
    from workflows.journey.effects import Effects, JourneyClosed, Write
    from workflows.journey.refusals import refuse_if as _refuse_if
    from workflows.journey.refusals import starting_refusals
    from workflows.journey.screening import apply_answers, screen_until_eligible
    from workflows.journey.state import JourneyState
    from workflows.messages import (
        AdverseEventSignal,
        ControlResult,
        FactResult,
        JourneyStartRequest,
        JourneyStatus,
        PauseRequest,
        PreSessionCheckRequest,
        PreSessionCheckResult,
        RecoveryCheckinSignal,
        RescheduleRequest,
        RescheduleResult,
        ResolveAnomalyRequest,
        ResolveAnomalyResult,
        ResumeRequest,
        ReviewRequest,
        ReviewResult,
        ScreeningDecision,
        ScreeningRequest,
        SessionCompletedSignal,
        SpfAttestedSignal,
        WithdrawRequest,
    )
    from workflows.reasons import Reason
    from workflows.replies import PatientReplyReport, ReplyAnsweredRequest, ReplyAnsweredResult
    from workflows.screening import ScreeningAnswers


def _clinician_only(answers: ScreeningAnswers, by: str) -> list[Reason]:
    """Only a clinician may override a permanent contraindication or set a drug washout."""
    if by == "clinician":
        return []
    found = []
    if answers.clinician_override_reason and answers.clinician_override_reason.strip():
        found.append("override a permanent contraindication")
    if answers.drug_washout_until is not None:
        found.append("set a drug washout date")
    return [
        Reason(rule="clinician_only", message=f"Only a clinician may {what}.") for what in found
    ]


def _initial_state(request: JourneyStartRequest) -> JourneyState:
    if request.carried is not None:
        return request.carried
    return JourneyState(
        patient_id=request.patient_id,
        clinic_id=request.clinic_id,
        pore_grade=request.pore_grade,
        numbing_cream=request.numbing_cream,
        trips=list(request.trips),
        requested_time_scale=request.time_scale,
        sim_start=request.sim_start,
        earliest_start=request.earliest_start,
        cp=request.clinic_protocol,
        answers=request.screening,
        answers_by_clinician=request.screening_by == "clinician",
    )


@workflow.defn(name="PatientJourney")
class PatientJourney(ConsentRequests):
    """One patient's journey: screening, seasonal gate, sessions, recovery, SPF window, review.

    Guarantees: a fact is applied once per ``idempotency_key``, or kept as an anomaly for staff
    (never lost, its key not spent); a request that breaks a rule is refused by its validator
    (``<Request>Refused`` with every reason) before it reaches history; closed stages stay
    closed and a pause holds until a resume; every change is written to PostgreSQL.
    """

    @workflow.init
    def __init__(self, request: JourneyStartRequest) -> None:
        self._state = _initial_state(request)
        self._fx = Effects(self._state)

    @workflow.run
    async def run(self, request: JourneyStartRequest) -> JourneyStatus:
        """Drive the journey to a closed stage; a further course continues as new."""
        try:
            await self._journey()
        except JourneyClosed:
            pass
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.get_status()

    async def _journey(self) -> None:
        fx, st = self._fx, self._state
        await fx.load_clinic()
        fx.check_open()
        if st.step == 0 or (st.phase == "screening" and st.answers is None and not st.sessions):
            first = st.course_number == 1
            fx.note(
                fx.event(
                    "journey_started" if first else "course_started",
                    "system",
                    f"Course {st.course_number} started (protocol {fx.cp.protocol.version}, "
                    f"grade {st.pore_grade}).",
                    {
                        "course": st.course_number,
                        "protocol_version": fx.cp.protocol.version,
                        "time_scale": st.time_scale,
                        # The intake answers (clinical facts, no personal data) for the EMR's
                        # QuestionnaireResponse.
                        "answers": st.answers.model_dump(mode="json") if st.answers else None,
                    },
                )
            )
            if first and st.requested_time_scale != st.time_scale:
                fx.note(
                    fx.event(
                        "simulation_clock_refused",
                        "system",
                        "The simulation clock is for sandbox clinics only: this journey runs "
                        "in real time.",
                        {"requested_time_scale": st.requested_time_scale},
                    )
                )
        if st.phase == "screening":
            if not await screen_until_eligible(fx):
                return
            await planning.plan_and_wait_for_season(fx)
            st.phase = "sessions"
        if st.phase == "sessions":
            if not await sessions.run_sessions(fx, self._continue_mid_course):
                return
            st.phase = "spf_window"
        if st.phase == "spf_window":
            await aftercare.spf_window(fx)
        await aftercare.await_review(fx, self._continue_with_further_course)

    async def _continue_mid_course(self) -> None:
        """Continue as new between two sessions when the history grows long."""
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._fx.advance(
            lambda: Write(
                events=[
                    self._fx.event(
                        "history_continued",
                        "system",
                        "Long history: the journey continues as new.",
                    )
                ]
            )
        )
        self._continue_as_new(self._state)

    async def _continue_with_further_course(self, review: ReviewRequest) -> None:
        fx = self._fx
        assert review.further_sessions is not None
        await fx.advance(lambda: aftercare.further_course_write(fx, review))
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._continue_as_new(self._state.next_course(review.further_sessions))

    def _continue_as_new(self, state: JourneyState) -> None:
        workflow.continue_as_new(
            JourneyStartRequest(
                patient_id=state.patient_id,
                clinic_id=state.clinic_id,
                pore_grade=state.pore_grade,
                carried=state,
            )
        )

    def _starting(self) -> list[Reason]:
        return starting_refusals(self._fx)

    # ------------------------------------------------------------------ facts (signals)

    @workflow.signal(name="session_completed")
    async def record_session_completed(self, fact: SessionCompletedSignal) -> None:
        """A session happened. Applied once per ``idempotency_key``, or kept as an anomaly."""
        await facts.receive(self._fx, "session_completed", fact)

    @workflow.signal(name="recovery_checkin")
    async def record_recovery_checkin(self, fact: RecoveryCheckinSignal) -> None:
        """A recovery check-in; a prolonged reaction pauses the journey for a clinician."""
        await facts.receive(self._fx, "recovery_checkin", fact)

    @workflow.signal(name="spf_attested")
    async def record_spf_attested(self, fact: SpfAttestedSignal) -> None:
        """The patient attests sun-protection use on a date."""
        await facts.receive(self._fx, "spf_attested", fact)

    @workflow.signal(name="adverse_event")
    async def record_adverse_event(self, fact: AdverseEventSignal) -> None:
        """An adverse reaction: the journey pauses and a clinician is flagged."""
        await facts.receive(self._fx, "adverse_event", fact)

    # ------------------------------------------------------------------ facts with an answer

    @workflow.update
    async def report_session_completed(self, fact: SessionCompletedSignal) -> FactResult:
        """As the signal, answering what became of the fact (applied, duplicate, anomaly)."""
        return await facts.receive(self._fx, "session_completed", fact)

    @workflow.update
    async def report_recovery_checkin(self, fact: RecoveryCheckinSignal) -> FactResult:
        """As the signal, answering what became of the fact."""
        return await facts.receive(self._fx, "recovery_checkin", fact)

    @workflow.update
    async def report_spf_attested(self, fact: SpfAttestedSignal) -> FactResult:
        """As the signal, answering what became of the fact."""
        return await facts.receive(self._fx, "spf_attested", fact)

    @workflow.update
    async def report_adverse_event(self, fact: AdverseEventSignal) -> FactResult:
        """As the signal, answering what became of the fact."""
        return await facts.receive(self._fx, "adverse_event", fact)

    @workflow.update
    async def report_appointment(self, fact: AppointmentReport) -> FactResult:
        """An appointment event from the clinic's booking system (``booking = "external"``):
        booked, moved, cancelled, a no-show or completed. One outside the session's allowed
        window is kept as an anomaly and answered with the reasons."""
        return await facts.receive(self._fx, "appointment", fact)

    @workflow.update
    async def report_reply(self, report: PatientReplyReport) -> FactResult:
        """A patient's reply to a message (issue 18): confirm, reschedule, stop/start, or a
        staff task. Only its id, kind and session; the text stays in PostgreSQL. Applied once
        per idempotency key (the provider's message id), never kept as an anomaly."""
        return await replies.receive(self._fx, report)

    @workflow.update
    async def answer_reply(self, request: ReplyAnsweredRequest) -> ReplyAnsweredResult:
        """Staff dealt with a patient's reply that became their task: the task closes, the
        note goes to the timeline. Refused (``AnswerReplyRefused``) without such a task."""
        fx, st = self._fx, self._state
        async with fx.lock:
            self._validate_answer_reply(request)
            write, closed = replies.apply_answered(fx, request)
            st.changes += 1
            await fx.write(write)
        return ReplyAnsweredResult(reply_id=request.reply_id, tasks_closed=closed)

    @answer_reply.validator
    def _validate_answer_reply(self, request: ReplyAnsweredRequest) -> None:
        _refuse_if("AnswerReply", self._starting())
        _refuse_if("AnswerReply", replies.answered_problems(self._fx, request))

    # ------------------------------------------------------------------ requests (updates)

    @workflow.update
    async def submit_screening(self, request: ScreeningRequest) -> ScreeningDecision:
        """Re-screen answers (after a deferral, or for a further course).

        Refused (``ScreeningRefused``) unless the journey is in screening or deferred, and when
        anyone but a clinician overrides a contraindication or sets a washout.
        """
        fx, st = self._fx, self._state
        async with fx.lock:
            self._validate_screening(request)
            result = apply_answers(fx, request.answers, request.requested_by == "clinician")
            st.changes += 1
            by = request.staff_ref or request.requested_by
            until = f" until {result.until.isoformat()}" if result.until else ""
            await fx.write(
                Write(
                    events=[
                        fx.event(
                            "screening_submitted",
                            request.requested_by,
                            f"Screening by {by}: {result.outcome}{until}.",
                            {
                                "outcome": result.outcome,
                                "by": by,
                                "reasons": [r.model_dump() for r in result.reasons],
                                "answers": request.answers.model_dump(mode="json"),
                            },
                        )
                    ]
                )
            )
        stage = {"eligible": "awaiting_season", "deferred": "deferred", "excluded": "excluded"}
        return ScreeningDecision(
            outcome=result.outcome,
            until=result.until,
            reasons=result.reasons,
            stage=stage[result.outcome],
        )

    @submit_screening.validator
    def _validate_screening(self, request: ScreeningRequest) -> None:
        _refuse_if(
            "Screening",
            self._starting()
            + refusals("submit_screening", self._state.stage)
            + _clinician_only(request.answers, request.requested_by),
        )

    @workflow.update
    async def pre_session_check(self, request: PreSessionCheckRequest) -> PreSessionCheckResult:
        """The check on the day: a new contraindication defers that session and replans.

        Refused (``PreSessionCheckRefused``) unless it is for the next session of a course that
        is scheduled or due.
        """
        fx, st = self._fx, self._state
        async with fx.lock:
            self._validate_pre_session_check(request)
            write = sessions.apply_pre_session_check(fx, request)
            st.changes += 1
            await fx.write(write)
        result = st.screening
        assert result is not None
        cleared = st.session(request.session_number).state != "deferred"
        return PreSessionCheckResult(
            cleared=cleared,
            reasons=[] if cleared else result.reasons,
            deferred_until=None if cleared else result.until,
            stage=st.stage,
        )

    @pre_session_check.validator
    def _validate_pre_session_check(self, request: PreSessionCheckRequest) -> None:
        _refuse_if("PreSessionCheck", self._starting())
        _refuse_if(
            "PreSessionCheck",
            sessions.pre_session_check_problems(self._fx, request)
            + _clinician_only(request.answers, request.checked_by),
        )

    @workflow.update
    async def reschedule(self, request: RescheduleRequest) -> RescheduleResult:
        """Move a session; later sessions shift only as needed to keep the minimum interval.

        Refused (``RescheduleRefused``) with every rule broken (the planner's reasons).
        """
        fx, st = self._fx, self._state
        async with fx.lock:
            self._validate_reschedule(request)
            check = sessions.check_reschedule(fx, request)
            slot = None
            if sessions.slot_for_reschedule(fx, request):
                slot = await slots.reserve(
                    fx,
                    request.session_number,
                    [request.new_date],
                    request.new_date,
                    request.new_time,
                )
                _refuse_if("Reschedule", [] if slot.slot else sessions.no_free_time(request))
            write = sessions.apply_reschedule(fx, request, check, slot)
            st.changes += 1
            await fx.write(write)
        return RescheduleResult(
            session_number=request.session_number,
            new_dates=check.new_dates,
            sessions=list(st.sessions),
        )

    @reschedule.validator
    def _validate_reschedule(self, request: RescheduleRequest) -> None:
        _refuse_if("Reschedule", self._starting())
        _refuse_if("Reschedule", sessions.reschedule_problems(self._fx, request))

    @workflow.update
    async def pause(self, request: PauseRequest) -> ControlResult:
        """Hold every timer-driven step and scheduled message. Refused (``PauseRefused``) when
        closed or already paused."""
        fx, st = self._fx, self._state
        async with fx.lock:
            self._validate_pause(request)
            previous = st.stage
            fx.pause(request.reason)
            cancelled = st.take_pending_messages()
            st.changes += 1
            await fx.write(
                Write(
                    events=[
                        fx.event(
                            "paused",
                            request.requested_by,
                            f"Paused: {request.reason}",
                            {"from": previous},
                        )
                    ],
                    cancel=cancelled,
                )
            )
        return ControlResult(stage=st.stage, previous_stage=previous)

    @pause.validator
    def _validate_pause(self, request: PauseRequest) -> None:
        _refuse_if("Pause", refusals("pause", self._state.stage))

    @workflow.update
    async def resume(self, request: ResumeRequest) -> ControlResult:
        """Resume where the journey left off: a session whose day passed (or is inside the
        booking notice) is replanned; a booked one still ahead gets its reminder again; no stale
        check-in is sent. Refused (``ResumeRefused``) unless paused."""
        fx, st = self._fx, self._state
        async with fx.lock:
            self._validate_resume(request)
            stage = fx.resume()
            notifications = recovery.on_resume(fx)
            current = st.current_session()
            notice = fx.today() + timedelta(days=fx.cp.protocol.booking_notice_days)
            if current is not None and current.state in ("planned", "booked"):
                if current.planned_on < notice:
                    st.replan_requested = True
                    if current.state == "booked":
                        st.replace_session(current.number, state="planned")
                elif current.state == "booked" and stage in ("scheduled", "session_due"):
                    notifications += sessions.booking_messages(fx, current, "booking_confirmation")
            st.changes += 1
            await fx.write(
                Write(
                    events=[
                        fx.event(
                            "resumed",
                            request.requested_by,
                            f"Resumed: {request.reason}",
                            {"to": stage},
                        )
                    ],
                    notifications=notifications,
                )
            )
        return ControlResult(stage=st.stage, previous_stage="paused")

    @resume.validator
    def _validate_resume(self, request: ResumeRequest) -> None:
        _refuse_if("Resume", refusals("resume", self._state.stage))

    @workflow.update
    async def withdraw(self, request: WithdrawRequest) -> ControlResult:
        """End the journey with the reason; nothing is booked or sent after it. Refused
        (``WithdrawRefused``) when already closed."""
        fx, st = self._fx, self._state
        async with fx.lock:
            self._validate_withdraw(request)
            previous = st.stage
            fx.close("withdrawn", request.reason)
            cancelled = [s.number for s in st.sessions if s.state in ("planned", "booked")]
            for number in cancelled:
                st.replace_session(number, state="cancelled")
            st.pending_messages = []
            st.changes += 1
            await fx.write(
                Write(
                    events=[
                        fx.event(
                            "withdrawn",
                            request.requested_by,
                            f"Withdrawn: {request.reason}",
                            {"from": previous},
                        )
                    ],
                    appointments=[fx.appointment(n) for n in cancelled] if fx.ready else [],
                    notifications=[fx.notify("journey_withdrawn", "withdrawn")],
                    cancel_pending=True,
                )
            )
        return ControlResult(stage=st.stage, previous_stage=previous)

    @withdraw.validator
    def _validate_withdraw(self, request: WithdrawRequest) -> None:
        _refuse_if("Withdraw", refusals("withdraw", self._state.stage))

    @workflow.update
    async def record_review(self, request: ReviewRequest) -> ReviewResult:
        """The review outcome: complete, or a further course (continues as new).

        Refused (``ReviewRefused``) before the review's early window, twice, or a further course
        without a valid number of sessions.
        """
        fx, st = self._fx, self._state
        async with fx.lock:
            self._validate_review(request)
            st.review = request
            st.changes += 1
        nxt = st.course_number + 1 if request.outcome == "further_course" else None
        return ReviewResult(
            outcome=request.outcome,
            next_course_number=nxt,
            stage="completed" if nxt is None else "screening",
        )

    @record_review.validator
    def _validate_review(self, request: ReviewRequest) -> None:
        _refuse_if("Review", self._starting())
        _refuse_if("Review", aftercare.review_problems(self._fx, request))

    @workflow.update
    async def resolve_anomaly(self, request: ResolveAnomalyRequest) -> ResolveAnomalyResult:
        """Staff apply a kept fact (when the journey now can) or dismiss it, with a note.

        Refused (``ResolveAnomalyRefused``) for an unknown or resolved anomaly, or one that
        still cannot be applied (with the reasons).
        """
        fx, st = self._fx, self._state
        async with fx.lock:
            self._validate_resolve(request)
            by = request.staff_ref or request.requested_by
            write = facts.resolve(fx, request.anomaly_id, request.action, request.note, by)
            st.changes += 1
            await fx.write(write)
        return ResolveAnomalyResult(
            anomaly_id=request.anomaly_id,
            resolution="applied" if request.action == "apply" else "dismissed",
            stage=st.stage,
        )

    @resolve_anomaly.validator
    def _validate_resolve(self, request: ResolveAnomalyRequest) -> None:
        _refuse_if("ResolveAnomaly", self._starting())
        _refuse_if(
            "ResolveAnomaly",
            refusals("resolve_anomaly", self._state.stage)
            or facts.resolve_problems(self._fx, request.anomaly_id, request.action),
        )

    # ------------------------------------------------------------------ query

    @workflow.query(name="status")
    def get_status(self) -> JourneyStatus:
        """The journey's full status (read-only)."""
        return self._state.to_status(self._fx.now() if self._fx.ready else None)
