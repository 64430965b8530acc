"""The clinical-safety fixes of Journey v2, each a whole journey in the time-skipping server that
failed on the first release: sticky stages, honest facts, clinician-only decisions, the review
window, recovery to its day, resume after a pause in recovery, no failure without a plan, the
sandbox-only simulation clock, and wording from the protocol."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import date, time, timedelta
from pathlib import Path

import pytest
from temporalio.client import WorkflowUpdateFailedError
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
from tests.test_journey_paths import refusal, today
from workflows import calendar
from workflows.journey import PatientJourney
from workflows.messages import (
    ConsentRequest,
    ConsentRequiredRequest,
    ConsentWithdrawRequest,
    PauseRequest,
    RecoveryCheckinSignal,
    ResumeRequest,
    ScreeningRequest,
    SessionCompletedSignal,
    WithdrawRequest,
)
from workflows.protocol import DateRange
from workflows.screening import ScreeningAnswers

OVERRIDE = ScreeningAnswers(photosensitivity=True, clinician_override_reason="tested: safe")


async def test_only_a_clinician_overrides_an_exclusion(ts_env: WorkflowEnvironment) -> None:
    store = RecordingStore(BERLIN)
    async with new_worker(ts_env.client, store.activities()) as w:
        # At enrolment by staff: the override does not lift the exclusion.
        staff = await start(
            ts_env, w.task_queue, clinic_id="berlin", pore_grade="small", screening=OVERRIDE
        )
        st = await eventually(staff, lambda s: s.stage == "excluded")
        assert st.closed_reason is not None and "only a clinician" in st.closed_reason.lower()
        # The same answers from a clinician: eligible.
        clinician = await start(
            ts_env,
            w.task_queue,
            clinic_id="berlin",
            pore_grade="small",
            screening=OVERRIDE,
            screening_by="clinician",
        )
        st = await eventually(clinician, lambda s: s.stage in ("scheduled", "awaiting_season"))
        assert st.screening_outcome == "eligible"
        # A re-screen with an override or a washout date is refused unless by a clinician.
        deferred = await start(
            ts_env,
            w.task_queue,
            clinic_id="berlin",
            pore_grade="small",
            screening=ScreeningAnswers(recent_tan=True),
        )
        await eventually(deferred, lambda s: s.stage == "deferred")
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await update(
                deferred,
                PatientJourney.submit_screening,
                ScreeningRequest(
                    answers=ScreeningAnswers(
                        photosensitising_drugs=("doxycycline",), drug_washout_until=date(2027, 1, 1)
                    ),
                    requested_by="staff",
                ),
            )
        assert refusal(err) == ("ScreeningRefused", ["clinician_only"])
        decision = await update(
            deferred,
            PatientJourney.submit_screening,
            ScreeningRequest(
                answers=ScreeningAnswers(
                    photosensitising_drugs=("doxycycline",), drug_washout_until=date(2027, 1, 1)
                ),
                requested_by="clinician",
                staff_ref="staff-42",
            ),
        )
        assert decision.outcome == "deferred" and decision.until == date(2027, 1, 1)
        await settle(deferred)
    assert any("staff-42" in e.summary for s in store.steps.values() for e in s.events)


async def test_a_listed_drug_waits_for_the_clinicians_date(ts_env: WorkflowEnvironment) -> None:
    store = RecordingStore(BERLIN)
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(
            ts_env,
            w.task_queue,
            clinic_id="berlin",
            pore_grade="small",
            screening=ScreeningAnswers(photosensitising_drugs=("Doxycycline",)),
        )
        st = await eventually(handle, lambda s: s.stage == "deferred")
    assert st.deferred_until is None  # no invented washout
    assert any("doxycycline" in t.lower() and "tetracyclines" in t for t in st.clinician_tasks)


async def test_withdraw_is_final_and_nothing_follows(ts_env: WorkflowEnvironment) -> None:
    store = RecordingStore(BERLIN)
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(ts_env, w.task_queue, clinic_id="berlin", pore_grade="moderate")
        st = await eventually(handle, lambda s: s.stage == "scheduled")
        result = await update(handle, PatientJourney.withdraw, WithdrawRequest(reason="moved"))
        assert result.stage == "withdrawn"
        final = await handle.result()
    assert final.stage == "withdrawn"
    assert {s.state for s in final.sessions} == {"cancelled"}
    withdrawn = max(
        n for n, s in store.steps.items() if any(e.kind == "withdrawn" for e in s.events)
    )
    assert store.steps[withdrawn].cancel_pending_notifications
    assert max(store.steps) == withdrawn  # nothing written after it
    assert st.sessions[0].state == "booked"


async def test_a_completion_in_the_future_is_kept_not_applied(ts_env: WorkflowEnvironment) -> None:
    store = RecordingStore(BERLIN)
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(ts_env, w.task_queue, clinic_id="berlin", pore_grade="moderate")
        st = await advance_until_stage(ts_env, handle, {"session_due"})
        result = await update(
            handle,
            PatientJourney.report_session_completed,
            SessionCompletedSignal(
                idempotency_key="future-1",
                session_number=1,
                completed_at=await ts_env.get_current_time() + timedelta(hours=6),
                source="emr",
            ),
        )
        assert result.outcome == "anomaly"
        assert [r.rule for r in result.reasons] == ["in_future"]
        # The same key, corrected, is applied: a kept fact does not spend its key.
        fixed = await update(
            handle,
            PatientJourney.report_session_completed,
            SessionCompletedSignal(
                idempotency_key="future-1",
                session_number=1,
                completed_at=await ts_env.get_current_time(),
                source="emr",
            ),
        )
        assert fixed.outcome == "applied"
        st = await eventually(handle, lambda s: s.sessions[0].state == "done")
        assert not st.anomalies  # resolved by the resend
    assert store.event_kinds().count("session_completed") == 1


async def test_recovery_runs_to_its_day_and_a_late_reaction_is_prolonged(
    ts_env: WorkflowEnvironment,
) -> None:
    store = RecordingStore(BERLIN)
    p = BERLIN.protocol
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(ts_env, w.task_queue, clinic_id="berlin", pore_grade="moderate")
        st = await complete_session(ts_env, handle, 1, checkin="expected")
        # An early check-in does not end recovery.
        await advance_to(ts_env, await ts_env.get_current_time() + timedelta(days=2))
        st = await status(handle)
        assert st.stage == "recovery"
        checkin_at = st.next_action_at
        assert checkin_at is not None
        done_on = st.sessions[0].completed_at
        assert done_on is not None and (checkin_at - done_on).days >= p.recovery_checkin_day - 1
        # Session 2: a reaction still "expected" on day 9 is prolonged whatever its label.
        await complete_session(ts_env, handle, 2, checkin=None)
        st = await status(handle)
        done2 = st.sessions[1].completed_at
        assert done2 is not None
        await advance_to(ts_env, done2 + timedelta(days=p.recovery_days_max + 2))
        await handle.signal(
            PatientJourney.record_recovery_checkin,
            RecoveryCheckinSignal(
                idempotency_key="late", session_number=2, day=9, reaction="expected"
            ),
        )
        st = await eventually(handle, lambda s: s.stage == "paused")
    assert "prolonged_reaction" in st.flags
    assert any("reaction still present" in t for t in st.clinician_tasks)


async def test_resume_in_recovery_sends_no_stale_checkin(ts_env: WorkflowEnvironment) -> None:
    store = RecordingStore(BERLIN)
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(ts_env, w.task_queue, clinic_id="berlin", pore_grade="moderate")
        await complete_session(ts_env, handle, 1, checkin=None)
        await update(handle, PatientJourney.pause, PauseRequest(reason="travelling"))
        st = await status(handle)
        scheduled = [
            n for s in store.steps.values() for n in s.notifications if n.kind == "recovery_checkin"
        ]
        assert len(scheduled) == 1
        await advance_to(ts_env, await ts_env.get_current_time() + timedelta(days=20))
        await update(handle, PatientJourney.resume, ResumeRequest(reason="back"))
        st = await eventually(handle, lambda s: s.stage != "paused")
        await settle(handle)
        resumed_at = await ts_env.get_current_time()
        st = await status(handle)
    pause_step = max(n for n, s in store.steps.items() if any(e.kind == "paused" for e in s.events))
    assert scheduled[0].key in store.steps[pause_step].cancel_notifications
    again = [
        n for s in store.steps.values() for n in s.notifications if n.kind == "recovery_checkin"
    ]
    assert again == scheduled  # no stale check-in after the resume
    # The overdue chase restarts from the resume, and any rebooking keeps the booking notice.
    if st.stage == "recovery":
        assert st.next_action_at is not None and st.next_action_at > resumed_at
    notice = timedelta(days=BERLIN.protocol.booking_notice_days)
    assert all(s.planned_on >= (resumed_at + notice).date() for s in st.sessions[1:])


async def test_no_possible_plan_waits_with_a_clinician_task(ts_env: WorkflowEnvironment) -> None:
    store = RecordingStore(BERLIN)
    start_day = await today(ts_env)
    trip = DateRange(start=start_day, end=start_day + timedelta(days=3650 * 3))
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(
            ts_env, w.task_queue, clinic_id="berlin", pore_grade="small", trips=[trip]
        )
        st = await eventually(
            handle, lambda s: any("No course fits" in t for t in s.clinician_tasks)
        )
        assert st.stage == "awaiting_season"
        assert st.waiting_reason and "No course can be planned" in st.waiting_reason
        await update(handle, PatientJourney.withdraw, WithdrawRequest(reason="trip mistyped"))
        final = await handle.result()
    assert final.stage == "withdrawn"  # the workflow never failed


async def test_simulation_clock_only_in_a_sandbox_clinic(ts_env: WorkflowEnvironment) -> None:
    store = RecordingStore(BERLIN)
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(
            ts_env, w.task_queue, clinic_id="berlin", pore_grade="small", time_scale=1000
        )
        st = await eventually(handle, lambda s: s.stage in ("scheduled", "awaiting_season"))
    assert st.time_scale == 1.0
    assert "simulation_clock_refused" in store.event_kinds()


def test_no_wording_literal_in_the_journey_code() -> None:
    """The review's and the sun protection's wording come from the protocol."""
    folder = Path(__file__).parents[1] / "workflows" / "journey"
    for path in folder.glob("*.py"):
        text = path.read_text()
        assert not re.search(r"SPF[ -]?50|3-month|three months", text), path.name


async def test_a_late_due_step_keeps_its_whole_window(dev_env: WorkflowEnvironment) -> None:
    """On the simulation clock (a sandbox clinic, 1 real second = 10 journey hours), the worker
    is away while the session's day begins, as on a machine that cannot follow the clock: the
    due step starts late and keeps its whole window, measured from when it really started,
    instead of being turned into an early no-show."""
    sandbox = BERLIN.model_copy(
        update={"clinic": BERLIN.clinic.model_copy(update={"sandbox": True})}
    )
    store = RecordingStore(sandbox)
    tz = sandbox.clinic.timezone
    grace = timedelta(hours=sandbox.protocol.no_show_grace_hours)
    queue = f"late-{uuid.uuid4()}"
    async with new_worker(dev_env.client, store.activities(), task_queue=queue):
        handle = await start(
            dev_env, queue, clinic_id="berlin", pore_grade="moderate", time_scale=36_000
        )
        st = await eventually(handle, lambda s: s.stage == "scheduled")
    day = st.sessions[0].planned_on
    day_start = calendar.local_datetime(day, time(0, 0), tz)
    # Away until the journey clock is well into the session's day.
    assert st.journey_now is not None
    await asyncio.sleep((day_start - st.journey_now).total_seconds() / 36_000 + 1.5)
    async with new_worker(dev_env.client, store.activities(), task_queue=queue):
        st = await eventually(handle, lambda s: s.stage != "scheduled")
        await handle.terminate("test over")
    calendar_deadline = calendar.end_of_local_day(day, tz) + grace
    assert st.stage == "session_due", st.stage
    assert st.next_action_at is not None and st.journey_now is not None
    started_late_by = st.journey_now - day_start
    assert started_late_by >= timedelta(hours=10)
    assert st.next_action_at - calendar_deadline >= started_late_by - timedelta(hours=1)


async def test_no_booking_without_consent_and_a_new_version_asks_again(
    ts_env: WorkflowEnvironment,
) -> None:
    consenting = BERLIN.model_copy(
        update={"clinic": BERLIN.clinic.model_copy(update={"consent_required": True})}
    )
    store = RecordingStore(consenting)
    signed = await ts_env.get_current_time()
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(ts_env, w.task_queue, clinic_id="berlin", pore_grade="moderate")
        st = await eventually(handle, lambda s: "consent_needed" in s.flags)
        assert st.sessions[0].state == "planned" and not st.consent_valid
        assert "session_booked" not in store.event_kinds()
        await update(handle, PatientJourney.require_consent, ConsentRequiredRequest(version="v2"))
        # An older version does not open the gate.
        result = await update(
            handle,
            PatientJourney.record_consent,
            ConsentRequest(version="v1", kind="paper", reference="P-1", signed_at=signed),
        )
        assert not result.consent_valid
        result = await update(
            handle,
            PatientJourney.record_consent,
            ConsentRequest(version="v2", kind="patient_signed", reference="c-9", signed_at=signed),
        )
        assert result.consent_valid
        st = await eventually(handle, lambda s: s.sessions[0].state == "booked")
        assert "consent_needed" not in st.flags
        # Withdrawing consent pauses the journey and cancels what was scheduled.
        result = await update(
            handle,
            PatientJourney.withdraw_consent,
            ConsentWithdrawRequest(reason="patient changed their mind"),
        )
        assert result.stage == "paused" and not result.consent_valid
        await settle(handle)
    kinds = store.event_kinds()
    assert kinds.index("consent_recorded") < kinds.index("session_booked")
    withdrawn = max(
        n for n, s in store.steps.items() if any(e.kind == "consent_withdrawn" for e in s.events)
    )
    reminders = [
        n.key
        for rec in store.steps.values()
        for n in rec.notifications
        if n.kind == "session_reminder"
    ]
    assert set(reminders) <= set(store.steps[withdrawn].cancel_notifications)


async def test_consent_arriving_after_the_session_day_replans_it(
    ts_env: WorkflowEnvironment,
) -> None:
    """No booking notice and no consent on the session's day: the journey waits (no busy
    loop), then plans the session again once consent is given."""
    consenting = BERLIN.model_copy(
        update={
            "clinic": BERLIN.clinic.model_copy(update={"consent_required": True}),
            "protocol": BERLIN.protocol.model_copy(update={"booking_notice_days": 0}),
        }
    )
    store = RecordingStore(consenting)
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(ts_env, w.task_queue, clinic_id="berlin", pore_grade="small")
        st = await eventually(handle, lambda s: "consent_needed" in s.flags)
        first = st.sessions[0].planned_on
        await advance_to(ts_env, calendar.local_datetime(first, time(10), "Europe/Berlin"))
        await settle(handle)
        st = await status(handle)
        assert st.sessions[0].state == "planned" and "consent_needed" in st.flags
        await update(
            handle,
            PatientJourney.record_consent,
            ConsentRequest(
                version="v1",
                kind="paper",
                reference="P-7",
                signed_at=await ts_env.get_current_time(),
            ),
        )
        st = await eventually(handle, lambda s: s.sessions[0].state == "booked")
        assert st.sessions[0].planned_on >= first
