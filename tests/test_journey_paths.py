"""Every other path of the journey in the time-skipping server: deferral, exclusion, the
seasonal gate, no-shows, reschedules, duplicate and out-of-order facts, reactions, adverse
events, pause/resume, withdraw and a further course (continue-as-new)."""

from __future__ import annotations

import uuid
from datetime import date, time, timedelta

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from tests.fixtures_temporal import new_worker
from tests.journey_helpers import (
    advance_to,
    advance_until_stage,
    complete_session,
    eventually,
    settle,
    status,
    update,
)
from tests.test_journey import BERLIN, RecordingStore, start
from workflows import calendar
from workflows.journey import PatientJourney
from workflows.messages import (
    AdverseEventSignal,
    PauseRequest,
    PreSessionCheckRequest,
    RecoveryCheckinSignal,
    RescheduleRequest,
    ResolveAnomalyRequest,
    ResumeRequest,
    ReviewRequest,
    ScreeningRequest,
    SessionCompletedSignal,
    WithdrawRequest,
)
from workflows.protocol import ClinicProtocol, ClinicSettings
from workflows.screening import ScreeningAnswers

OPEN = ("scheduled", "session_due", "awaiting_season")


async def today(env: WorkflowEnvironment) -> date:
    return calendar.clinic_today(await env.get_current_time(), "Europe/Berlin")


def refusal(err: pytest.ExceptionInfo[WorkflowUpdateFailedError]) -> tuple[str, list[str]]:
    cause = err.value.cause
    assert isinstance(cause, ApplicationError)
    return cause.type or "", [d["rule"] for d in cause.details]


async def test_deferral_then_rescreen(ts_env: WorkflowEnvironment) -> None:
    store = RecordingStore(BERLIN)
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(
            ts_env,
            w.task_queue,
            clinic_id="berlin",
            pore_grade="moderate",
            screening=ScreeningAnswers(recent_tan=True),
        )
        st = await eventually(handle, lambda s: s.stage == "deferred")
        expected = await today(ts_env) + timedelta(days=BERLIN.protocol.screening.tan_deferral_days)
        assert st.deferred_until == expected
        assert not st.sessions
        # The date comes: the journey asks for a fresh screening rather than reusing the old one.
        st = await advance_until_stage(ts_env, handle, {"screening"})
        assert await today(ts_env) == expected
        decision = await update(
            handle, PatientJourney.submit_screening, ScreeningRequest(answers=ScreeningAnswers())
        )
        assert decision.outcome == "eligible"
        st = await eventually(handle, lambda s: s.stage in OPEN)
        assert len(st.sessions) == 3
        assert st.sessions[0].planned_on > expected
    assert store.event_kinds()[:3] == ["journey_started", "deferred", "screening_requested"]


async def test_exclusion_ends_the_journey(ts_env: WorkflowEnvironment) -> None:
    store = RecordingStore(BERLIN)
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(
            ts_env,
            w.task_queue,
            clinic_id="berlin",
            pore_grade="large",
            screening=ScreeningAnswers(malignant_lesions=True),
        )
        result = await handle.result()
    assert result.stage == "excluded"
    assert "dermatologist" in (result.closed_reason or "")
    assert store.event_kinds() == ["journey_started", "excluded"]


async def test_course_waits_for_the_season(ts_env: WorkflowEnvironment) -> None:
    now = await ts_env.get_current_time()
    # A clinic whose summer starts next month: no course can end 30 days before it.
    m = now.month % 12 + 1
    summer = (m, m % 12 + 1, (m + 1) % 12 + 1)
    clinic = ClinicProtocol(
        clinic=ClinicSettings(clinic_id="sunny", timezone="Europe/Berlin", summer_months=summer)
    )
    store = RecordingStore(clinic)
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(ts_env, w.task_queue, clinic_id="sunny", pore_grade="moderate")
        st = await eventually(handle, lambda s: s.stage == "awaiting_season")
        assert st.waiting_reason
        opens = st.season_opens_on
        assert opens is not None
        assert st.season_opens_on.month == summer[-1] % 12 + 1
        assert st.sessions[0].planned_on >= st.season_opens_on
        st = await advance_until_stage(ts_env, handle, {"scheduled", "session_due"})
        assert (await ts_env.get_current_time()).date() >= opens - timedelta(days=2)
        assert all(s.planned_on.month not in summer for s in st.sessions)
    assert "season_waiting" in store.notification_kinds()


async def test_no_show_is_recorded_and_rebooked(ts_env: WorkflowEnvironment) -> None:
    store = RecordingStore(BERLIN)
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(ts_env, w.task_queue, clinic_id="berlin", pore_grade="moderate")
        st = await advance_until_stage(ts_env, handle, {"session_due"})
        missed = st.sessions[0].planned_on
        deadline = st.next_action_at
        assert deadline is not None
        # Nobody reports the session: past the end of the day plus the grace period.
        await advance_to(ts_env, deadline + timedelta(seconds=1))
        st = await eventually(
            handle, lambda s: s.sessions and s.sessions[0].planned_on > missed and s.stage in OPEN
        )
        assert "no_show" in st.flags
        assert st.sessions[0].state == "booked"
        assert BERLIN.clinic.open_weekdays.count(st.sessions[0].planned_on.weekday()) == 1
        await complete_session(ts_env, handle, 1)
    kinds = store.event_kinds()
    assert kinds.count("no_show") == 1
    assert "replanned" in kinds
    assert kinds.count("session_completed") == 1


async def test_reschedule_accepted_and_refused(ts_env: WorkflowEnvironment) -> None:
    store = RecordingStore(BERLIN)
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(ts_env, w.task_queue, clinic_id="berlin", pore_grade="moderate")
        await complete_session(ts_env, handle, 1)
        st = await eventually(handle, lambda s: s.stage in ("recovery", "scheduled"))
        first = st.sessions[0].planned_on
        # Too close to session 1.
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await update(
                handle,
                PatientJourney.reschedule,
                RescheduleRequest(session_number=2, new_date=first + timedelta(days=10)),
            )
        kind, rules = refusal(err)
        assert kind == "RescheduleRefused"
        assert "too_soon_after_previous" in rules
        # In summer.
        summer_day = date(first.year + 1, 7, 14)
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await update(
                handle,
                PatientJourney.reschedule,
                RescheduleRequest(session_number=2, new_date=summer_day),
            )
        assert "in_summer" in refusal(err)[1]
        # Accepted: a week later than planned, on an open weekday; session 3 keeps the interval.
        target = calendar.next_open_day(
            st.sessions[1].planned_on + timedelta(days=7), BERLIN.clinic
        )
        result = await update(
            handle,
            PatientJourney.reschedule,
            RescheduleRequest(session_number=2, new_date=target, requested_by="staff"),
        )
        assert result.new_dates[0] == target
        st = await status(handle)
        assert st.sessions[1].planned_on == target
        assert (st.sessions[2].planned_on - target).days >= BERLIN.protocol.min_interval_days
    assert "rescheduled" in store.event_kinds()
    assert "session_rebooked" in store.notification_kinds()


async def test_duplicate_and_out_of_order_signals(ts_env: WorkflowEnvironment) -> None:
    store = RecordingStore(BERLIN)
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(ts_env, w.task_queue, clinic_id="berlin", pore_grade="moderate")
        st = await advance_until_stage(ts_env, handle, {"session_due"})
        at = st.sessions[0].starts_at
        assert at is not None
        await advance_to(ts_env, at + timedelta(minutes=30))
        # Session 3 before session 1: kept as an anomaly for staff, nothing applied.
        await handle.signal(
            PatientJourney.record_session_completed,
            SessionCompletedSignal(
                idempotency_key="early-3", session_number=3, completed_at=at, source="emr"
            ),
        )
        st = await eventually(handle, lambda s: len(s.anomalies) == 1)
        assert st.anomalies[0].reasons[0].rule == "out_of_order"
        assert st.anomalies[0].idempotency_key == "early-3"
        assert any("anomaly #1" in t for t in st.clinician_tasks)
        assert all(s.state != "done" for s in st.sessions)
        fact = SessionCompletedSignal(
            idempotency_key="dev-1", session_number=1, completed_at=at, source="device"
        )
        await handle.signal(PatientJourney.record_session_completed, fact)
        await handle.signal(PatientJourney.record_session_completed, fact)
        # A second report of the same session under another key (the EMR after the device) is
        # a duplicate: not applied twice, nothing for staff to resolve.
        result = await update(
            handle,
            PatientJourney.report_session_completed,
            fact.model_copy(update={"idempotency_key": "emr-1"}),
        )
        assert result.outcome == "duplicate"
        assert [r.rule for r in result.reasons] == ["already_completed"]
        # The same key again is a duplicate too, answered honestly.
        again = await update(handle, PatientJourney.report_session_completed, fact)
        assert again.outcome == "duplicate"
        # A check-in for a session that has not happened is kept for staff.
        kept = await update(
            handle,
            PatientJourney.report_recovery_checkin,
            RecoveryCheckinSignal(idempotency_key="ci-3", session_number=3, day=2, reaction="none"),
        )
        assert kept.outcome == "anomaly"
        st = await eventually(handle, lambda s: len(s.anomalies) == 2)
        assert [s.state for s in st.sessions] == ["done", "planned", "planned"]
        # Staff dismiss the out-of-order report; applying it is refused while it cannot apply.
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await update(
                handle,
                PatientJourney.resolve_anomaly,
                ResolveAnomalyRequest(anomaly_id=1, action="apply", note="try"),
            )
        kind, rules = refusal(err)
        assert kind == "ResolveAnomalyRefused"
        assert rules[0] in ("out_of_order", "not_expecting_session")
        await update(
            handle,
            PatientJourney.resolve_anomaly,
            ResolveAnomalyRequest(anomaly_id=1, action="dismiss", note="sent by mistake"),
        )
        st = await eventually(handle, lambda s: len(s.anomalies) == 1)
        assert not any("anomaly #1" in t for t in st.clinician_tasks)
        await settle(handle)
    assert store.event_kinds().count("session_completed") == 1
    assert store.event_kinds().count("fact_kept") == 2
    assert store.event_kinds().count("anomaly_resolved") == 1


async def test_prolonged_reaction_holds_until_resume(ts_env: WorkflowEnvironment) -> None:
    store = RecordingStore(BERLIN)
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(ts_env, w.task_queue, clinic_id="berlin", pore_grade="moderate")
        await complete_session(ts_env, handle, 1, checkin=None)
        await handle.signal(
            PatientJourney.record_recovery_checkin,
            RecoveryCheckinSignal(
                idempotency_key="ci-1", session_number=1, day=8, reaction="prolonged"
            ),
        )
        st = await eventually(handle, lambda s: s.stage == "paused")
        assert st.paused_from == "recovery"
        assert "prolonged_reaction" in st.flags
        planned = st.sessions[1].planned_on
        # Held: even past session 2's day nothing is booked or due.
        await advance_to(ts_env, st.sessions[1].starts_at + timedelta(days=3))  # type: ignore[operator]
        st = await status(handle)
        assert st.stage == "paused" and st.sessions[1].state == "planned"
        result = await update(handle, PatientJourney.resume, ResumeRequest(reason="seen by Dr A"))
        assert result.stage == "recovery"
        st = await eventually(
            handle, lambda s: s.stage in OPEN and s.sessions[1].planned_on > planned
        )
        assert st.sessions[1].planned_on >= await today(ts_env)
    assert "staff_alert" in store.notification_kinds()


async def test_adverse_event_pauses_and_pre_session_check_defers(
    ts_env: WorkflowEnvironment,
) -> None:
    store = RecordingStore(BERLIN)
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(ts_env, w.task_queue, clinic_id="berlin", pore_grade="moderate")
        await complete_session(ts_env, handle, 1)
        await handle.signal(
            PatientJourney.record_adverse_event,
            AdverseEventSignal(idempotency_key="ae-1", severity="moderate", note_ref="emr-note-77"),
        )
        st = await eventually(handle, lambda s: s.stage == "paused")
        assert "adverse_event" in st.flags
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await update(handle, PatientJourney.pause, PauseRequest(reason="again"))
        assert refusal(err) == ("PauseRefused", ["cannot_pause"])
        await update(handle, PatientJourney.resume, ResumeRequest(reason="cleared by clinician"))
        st = await advance_until_stage(ts_env, handle, {"session_due"})
        # A new outbreak on the day: the session is deferred and the course replanned later.
        result = await update(
            handle,
            PatientJourney.pre_session_check,
            PreSessionCheckRequest(
                session_number=2, answers=ScreeningAnswers(active_infection=True)
            ),
        )
        assert not result.cleared
        assert result.deferred_until is not None
        st = await eventually(handle, lambda s: s.stage == "deferred")
        st = await advance_until_stage(ts_env, handle, {"screening"})
        await update(
            handle, PatientJourney.submit_screening, ScreeningRequest(answers=ScreeningAnswers())
        )
        st = await eventually(
            handle, lambda s: s.stage in OPEN and s.sessions[1].state in ("booked", "planned")
        )
        assert st.sessions[1].planned_on >= result.deferred_until


async def test_withdraw(ts_env: WorkflowEnvironment) -> None:
    store = RecordingStore(BERLIN)
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(ts_env, w.task_queue, clinic_id="berlin", pore_grade="large")
        await eventually(handle, lambda s: s.stage in OPEN)
        await update(handle, PatientJourney.withdraw, WithdrawRequest(reason="moved abroad"))
        result = await handle.result()
    assert result.stage == "withdrawn"
    assert result.closed_reason == "moved abroad"
    assert {s.state for s in result.sessions} == {"cancelled"}


async def test_review_with_further_course_continues_as_new(ts_env: WorkflowEnvironment) -> None:
    store = RecordingStore(BERLIN)
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(ts_env, w.task_queue, clinic_id="berlin", pore_grade="moderate")
        for n in (1, 2, 3):
            await complete_session(ts_env, handle, n)
        st = await advance_until_stage(ts_env, handle, {"awaiting_review"})
        first_run = handle.result_run_id
        # The review is due months after the sun-protection window opens, not at its end.
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await update(
                handle,
                PatientJourney.record_review,
                ReviewRequest(outcome="further_course", further_sessions=99),
            )
        assert refusal(err) == ("ReviewRefused", ["review_too_early", "further_sessions"])
        assert st.review_on is not None
        early = st.review_on - timedelta(days=BERLIN.protocol.review_early_days)
        await advance_to(ts_env, calendar.local_datetime(early, time(9), "Europe/Berlin"))
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await update(
                handle,
                PatientJourney.record_review,
                ReviewRequest(outcome="further_course", further_sessions=99),
            )
        assert refusal(err) == ("ReviewRefused", ["further_sessions"])
        result = await update(
            handle,
            PatientJourney.record_review,
            ReviewRequest(outcome="further_course", further_sessions=2),
        )
        assert result.next_course_number == 2
        handle = ts_env.client.get_workflow_handle_for(PatientJourney.run, handle.id)  # type: ignore[arg-type]
        st = await eventually(handle, lambda s: s.course_number == 2 and s.stage == "screening")
        async for event in handle.fetch_history_events():
            assert (
                event.workflow_execution_started_event_attributes.continued_execution_run_id
                == first_run
            )
            break
        assert st.previous_courses[0].sessions_done == 3
        await update(
            handle, PatientJourney.submit_screening, ScreeningRequest(answers=ScreeningAnswers())
        )
        st = await eventually(handle, lambda s: s.stage in OPEN)
        assert len(st.sessions) == 2
    steps = sorted(store.steps)
    assert steps == list(range(1, len(steps) + 1))  # the step counter carried over


async def test_refused_requests_name_every_rule(ts_env: WorkflowEnvironment) -> None:
    store = RecordingStore(BERLIN)
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(ts_env, w.task_queue, clinic_id="berlin", pore_grade="moderate")
        await eventually(handle, lambda s: s.stage in OPEN)
        await settle(handle)
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await update(handle, PatientJourney.resume, ResumeRequest(reason="x"))
        assert refusal(err) == ("ResumeRefused", ["not_paused"])
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await update(handle, PatientJourney.record_review, ReviewRequest(outcome="complete"))
        assert refusal(err)[0] == "ReviewRefused"
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await update(
                handle,
                PatientJourney.submit_screening,
                ScreeningRequest(answers=ScreeningAnswers()),
            )
        assert refusal(err) == ("ScreeningRefused", ["not_screening"])
    _ = uuid


async def test_pause_holds_a_booked_session_through_its_day(ts_env: WorkflowEnvironment) -> None:
    store = RecordingStore(BERLIN)
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(ts_env, w.task_queue, clinic_id="berlin", pore_grade="moderate")
        st = await eventually(handle, lambda s: s.stage == "scheduled")
        day = st.sessions[0].planned_on
        result = await update(handle, PatientJourney.pause, PauseRequest(reason="travelling"))
        assert result.stage == "paused"
        # Past the appointment day and its grace period: no session_due, no no-show.
        await advance_to(ts_env, st.sessions[0].starts_at + timedelta(days=3))  # type: ignore[operator]
        st = await status(handle)
        assert st.stage == "paused"
        assert "no_show" not in st.flags
        await update(handle, PatientJourney.resume, ResumeRequest(reason="back"))
        st = await eventually(handle, lambda s: s.stage in OPEN and s.sessions[0].planned_on > day)
        assert st.sessions[0].planned_on > await today(ts_env)
        assert "no_show" not in st.flags
    assert "no_show" not in store.event_kinds()


async def test_hostile_messages_straight_to_temporal_never_stall(
    ts_env: WorkflowEnvironment,
) -> None:
    """Values the API would refuse, sent by name straight to Temporal: the signal is dropped,
    the update refused, and the journey keeps answering and running."""
    store = RecordingStore(BERLIN)
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(ts_env, w.task_queue, clinic_id="berlin", pore_grade="moderate")
        before = await eventually(handle, lambda s: s.stage == "scheduled")
        hostile = [
            {
                "idempotency_key": "k1",
                "session_number": 1,
                "completed_at": "9999-12-31T23:59:59-14:00",
            },
            {
                "idempotency_key": "k2",
                "session_number": 1,
                "completed_at": "0001-01-01T00:00:00+14:00",
            },
            {
                "idempotency_key": "k3",
                "session_number": 1,
                "completed_at": "2026-12-01T09:00:00Z",
                "source": "emr\x00",
            },
            {
                "idempotency_key": "k4" * 200,
                "session_number": 1,
                "completed_at": "2026-12-01T09:00:00Z",
            },
            {
                "idempotency_key": "k5",
                "session_number": 10**12,
                "completed_at": "2026-12-01T09:00:00Z",
            },
        ]
        for payload in hostile:
            await handle.signal("session_completed", payload)
            with pytest.raises(WorkflowUpdateFailedError):
                await handle.execute_update("report_session_completed", payload)
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update("pause", {"reason": "x" * 100_000})
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update("withdraw", {"reason": "bye\x00"})
        await settle(handle)
        after = await status(handle)
    assert after.stage == before.stage == "scheduled"
    assert after.sessions == before.sessions
    assert not after.anomalies
    assert "session_completed" not in store.event_kinds()
