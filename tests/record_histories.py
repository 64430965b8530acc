"""Record PatientJourney histories for the replay test (run by hand, not collected by pytest).

    .venv/bin/python -m tests.record_histories [scenario ...]

Each history is a real run in the time-skipping server, saved as Temporal's JSON history under
``tests/histories/``. Record again only for a new journey shape; old files stay, since they are
what running journeys look like.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, time, timedelta
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tests.fixtures_temporal import new_worker, register_search_attributes
from tests.journey_helpers import (
    advance_to,
    advance_until_stage,
    complete_session,
    eventually,
    settle,
    update,
)
from tests.test_journey import BERLIN, RecordingStore, start
from tests.test_journey_booking_system import EXTERNAL
from worker.binaries import temporal_test_server
from workflows import calendar
from workflows.booking import AppointmentReport
from workflows.journey import PatientJourney
from workflows.messages import (
    AdverseEventSignal,
    PauseRequest,
    RescheduleRequest,
    ResumeRequest,
    ReviewRequest,
    ScreeningRequest,
    SessionCompletedSignal,
    WithdrawRequest,
)
from workflows.screening import ScreeningAnswers

OUT = Path(__file__).parent / "histories"


async def _record(name: str, scenario) -> None:  # type: ignore[no-untyped-def]
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_test_server()),
        data_converter=pydantic_data_converter,
    )
    try:
        await register_search_attributes(env.client)
        store = RecordingStore(EXTERNAL if name.startswith("booking_system") else BERLIN)
        async with new_worker(env.client, store.activities()) as w:
            handle = await scenario(env, w.task_queue)
            await settle(handle)
            history = await handle.fetch_history()
        (OUT / f"{name}.json").write_text(history.to_json())
        print(f"{name}: {len(history.events)} events")
    finally:
        await env.shutdown()


async def four_sessions_completed(env: WorkflowEnvironment, tq: str):  # type: ignore[no-untyped-def]
    handle = await start(
        env,
        tq,
        patient_id="replay-four",
        clinic_id="berlin",
        pore_grade="large",
        numbing_cream=True,
    )
    for n in (1, 2, 3, 4):
        await complete_session(env, handle, n)
    st = await advance_until_stage(env, handle, {"awaiting_review"})
    await advance_to(env, st.next_action_at)  # type: ignore[arg-type]
    await update(handle, PatientJourney.record_review, ReviewRequest(outcome="complete"))
    await handle.result()
    return handle


async def no_show_and_reschedule(env: WorkflowEnvironment, tq: str):  # type: ignore[no-untyped-def]
    handle = await start(
        env, tq, patient_id="replay-noshow", clinic_id="berlin", pore_grade="moderate"
    )
    st = await advance_until_stage(env, handle, {"session_due"})
    await advance_to(env, st.next_action_at + timedelta(seconds=1))  # type: ignore[operator]
    st = await eventually(handle, lambda s: s.stage == "scheduled")
    await complete_session(env, handle, 1)
    st = await eventually(handle, lambda s: s.stage in ("recovery", "scheduled"))
    target = calendar.next_open_day(st.sessions[1].planned_on + timedelta(days=7), BERLIN.clinic)
    await update(
        handle, PatientJourney.reschedule, RescheduleRequest(session_number=2, new_date=target)
    )
    return handle


async def pause_through_session_day(env: WorkflowEnvironment, tq: str):  # type: ignore[no-untyped-def]
    handle = await start(
        env, tq, patient_id="replay-pause", clinic_id="berlin", pore_grade="moderate"
    )
    st = await eventually(handle, lambda s: s.stage == "scheduled")
    await update(handle, PatientJourney.pause, PauseRequest(reason="travelling"))
    await advance_to(env, st.sessions[0].starts_at + timedelta(days=3))  # type: ignore[operator]
    await update(handle, PatientJourney.resume, ResumeRequest(reason="back"))
    await eventually(handle, lambda s: s.stage == "scheduled")
    return handle


async def deferral_then_rescreen(env: WorkflowEnvironment, tq: str):  # type: ignore[no-untyped-def]
    handle = await start(
        env,
        tq,
        patient_id="replay-deferral",
        clinic_id="berlin",
        pore_grade="small",
        screening=ScreeningAnswers(recent_tan=True),
    )
    await advance_until_stage(env, handle, {"screening"})
    await update(
        handle, PatientJourney.submit_screening, ScreeningRequest(answers=ScreeningAnswers())
    )
    await eventually(handle, lambda s: s.stage == "scheduled")
    return handle


async def adverse_event_and_withdraw(env: WorkflowEnvironment, tq: str):  # type: ignore[no-untyped-def]
    handle = await start(
        env, tq, patient_id="replay-adverse", clinic_id="berlin", pore_grade="moderate"
    )
    await complete_session(env, handle, 1)
    await handle.signal(
        PatientJourney.record_adverse_event,
        AdverseEventSignal(idempotency_key="ae-1", severity="moderate", note_ref="note-7"),
    )
    await eventually(handle, lambda s: s.stage == "paused")
    # A completion while paused is kept for staff, not lost.
    await handle.signal(
        PatientJourney.record_session_completed,
        SessionCompletedSignal(
            idempotency_key="late-2",
            session_number=2,
            completed_at=await env.get_current_time(),
            source="emr",
        ),
    )
    await eventually(handle, lambda s: len(s.anomalies) == 1)
    await update(handle, PatientJourney.resume, ResumeRequest(reason="seen by clinician"))
    await update(handle, PatientJourney.withdraw, WithdrawRequest(reason="patient moved away"))
    await handle.result()
    return handle


async def further_course(env: WorkflowEnvironment, tq: str):  # type: ignore[no-untyped-def]
    handle = await start(
        env, tq, patient_id="replay-further", clinic_id="berlin", pore_grade="small"
    )
    for n in (1, 2, 3):
        await complete_session(env, handle, n)
    st = await advance_until_stage(env, handle, {"awaiting_review"})
    await advance_to(env, st.next_action_at)  # type: ignore[arg-type]
    await update(
        handle,
        PatientJourney.record_review,
        ReviewRequest(outcome="further_course", further_sessions=2),
    )
    await eventually(handle, lambda s: s.course_number == 2)
    # The first run's history ends with its continue-as-new.
    return env.client.get_workflow_handle(handle.id, run_id=handle.result_run_id)


async def booking_system_appointments(env: WorkflowEnvironment, tq: str):  # type: ignore[no-untyped-def]
    """A clinic with its own booking system: window, an appointment outside it (kept), one
    inside, a move, a cancellation (window again), a booking and its completion."""
    handle = await start(env, tq, clinic_id="berlin-booking", pore_grade="small")
    await eventually(handle, lambda s: bool(s.next_action and "booking" in s.next_action))
    await settle(handle)
    st = await eventually(handle, lambda s: s.sessions[0].state == "planned")
    day = st.sessions[0].planned_on
    tz = "Europe/Berlin"

    def report(event: str, when: datetime | None, key: str) -> AppointmentReport:
        return AppointmentReport(
            event=event,  # type: ignore[arg-type]
            session_number=1,
            starts_at=when,
            external_appointment_id="apt-1",
            idempotency_key=key,
        )

    at = calendar.local_datetime
    await update(
        handle,
        PatientJourney.report_appointment,
        report("created", at(day + timedelta(days=90), time(10), tz), "e0"),
    )
    await update(
        handle,
        PatientJourney.report_appointment,
        report("created", at(day, time(14, 30), tz), "e1"),
    )
    await update(
        handle,
        PatientJourney.report_appointment,
        report("rescheduled", at(day, time(9, 15), tz), "e2"),
    )
    await update(handle, PatientJourney.report_appointment, report("cancelled", None, "e3"))
    await eventually(handle, lambda s: s.sessions[0].state == "planned")
    await update(
        handle, PatientJourney.report_appointment, report("created", at(day, time(11), tz), "e4")
    )
    await advance_to(env, at(day, time(12), tz))
    await update(
        handle,
        PatientJourney.report_appointment,
        report("completed", at(day, time(11, 40), tz), "e5"),
    )
    await eventually(handle, lambda s: s.stage == "recovery")
    return handle


SCENARIOS = {
    "four_sessions_completed": four_sessions_completed,
    "no_show_and_reschedule": no_show_and_reschedule,
    "pause_through_session_day": pause_through_session_day,
    "deferral_then_rescreen": deferral_then_rescreen,
    "adverse_event_and_withdraw": adverse_event_and_withdraw,
    "further_course": further_course,
    # 202612-due-window-from-start: the same no-show path with the patch's marker.
    "no_show_due_window_from_start": no_show_and_reschedule,
    # 202612-slot-booking: each booking and the move of a booked session reserve a slot.
    "slot_booking_four_sessions": four_sessions_completed,
    "slot_booking_reschedule": no_show_and_reschedule,
    "booking_system_appointments": booking_system_appointments,
}


async def main(names: list[str]) -> None:
    OUT.mkdir(exist_ok=True)
    for name in names or list(SCENARIOS):
        await _record(name, SCENARIOS[name])


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
