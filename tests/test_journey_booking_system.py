"""A clinic with its own booking system (``booking = "external"``), in the time-skipping server:
the journey publishes each session's allowed window and follows the booking system's appointment
events (``report_appointment``): inside the window they are applied once, outside they are kept
for staff with the reasons, a cancellation republishes the window, a window that passes with no
appointment is replanned, and the patient cannot move a session behind the booking system's back.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from tests.fixtures_temporal import new_worker
from tests.journey_helpers import advance_to, eventually, settle, update
from tests.test_journey import RecordingStore, start
from tests.test_journey_paths import refusal
from workflows import calendar
from workflows.booking import AppointmentReport
from workflows.journey import PatientJourney
from workflows.messages import JourneyStatus, RescheduleRequest
from workflows.protocol import ClinicProtocol, ClinicSettings

TZ = "Europe/Berlin"
EXTERNAL = ClinicProtocol(
    clinic=ClinicSettings(clinic_id="berlin-booking", timezone=TZ, booking="external")
)
Handle = WorkflowHandle[PatientJourney, JourneyStatus]


def windows(store: RecordingStore) -> list[dict[str, Any]]:
    return [
        e.data
        for step in sorted(store.steps)
        for e in store.steps[step].events
        if e.kind == "session_window"
    ]


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return calendar.local_datetime(day, time(hour, minute), TZ)


async def report(handle: Handle, **fields: Any) -> Any:
    fields.setdefault("idempotency_key", f"evt-{uuid.uuid4()}")
    fields.setdefault("external_appointment_id", "apt-1")
    return await update(handle, PatientJourney.report_appointment, AppointmentReport(**fields))


async def test_the_booking_system_books_moves_cancels_and_completes(
    ts_env: WorkflowEnvironment,
) -> None:
    store = RecordingStore(EXTERNAL)
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(ts_env, w.task_queue, clinic_id="berlin-booking", pore_grade="small")
        st = await eventually(handle, lambda s: bool(s.next_action and "booking" in s.next_action))
        assert st.stage == "scheduled" and st.sessions[0].state == "planned"
        await settle(handle)
        [window] = windows(store)
        days = [date.fromisoformat(d) for d in window["allowed_days"]]
        assert window["session"] == 1 and len(days) >= 3
        assert all(calendar.is_open_day(d, EXTERNAL.clinic) for d in days)

        # Outside the window: kept for staff, answered with the reasons; nothing booked.
        outside = await report(
            handle,
            event="created",
            session_number=1,
            starts_at=at(days[-1] + timedelta(days=30), 10),
        )
        assert outside.outcome == "anomaly"
        assert {r.rule for r in outside.reasons} & {"outside_window", "closed_day"}
        # Not the session the journey books now.
        wrong = await report(handle, event="created", session_number=2, starts_at=at(days[1], 10))
        assert wrong.outcome == "anomaly" and wrong.reasons[0].rule == "not_current_session"

        # Inside: booked at the booking system's time, once.
        key = f"evt-{uuid.uuid4()}"
        booked = await report(
            handle,
            event="created",
            session_number=1,
            starts_at=at(days[1], 14, 30),
            idempotency_key=key,
        )
        assert booked.outcome == "applied"
        again = await report(
            handle,
            event="created",
            session_number=1,
            starts_at=at(days[1], 14, 30),
            idempotency_key=key,
        )
        assert again.outcome == "duplicate"
        st = await eventually(handle, lambda s: s.sessions[0].state == "booked")
        assert st.sessions[0].starts_at == at(days[1], 14, 30)
        assert st.sessions[0].external_appointment_id == "apt-1"

        # The patient cannot move it behind the booking system's back.
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await update(
                handle,
                PatientJourney.reschedule,
                RescheduleRequest(session_number=1, new_date=days[2]),
            )
        assert refusal(err) == ("RescheduleRefused", ["booked_in_clinic_system"])

        # Moved by the booking system: a new confirmation.
        moved = await report(
            handle, event="rescheduled", session_number=1, starts_at=at(days[2], 9, 15)
        )
        assert moved.outcome == "applied"
        st = await eventually(handle, lambda s: s.sessions[0].starts_at == at(days[2], 9, 15))
        await settle(handle)
        assert "session_rebooked" in store.notification_kinds()

        # Cancelled: planned again, and the window goes out again.
        cancelled = await report(handle, event="cancelled", session_number=1)
        assert cancelled.outcome == "applied"
        await eventually(handle, lambda s: s.sessions[0].state == "planned")
        await settle(handle)
        assert len(windows(store)) == 2

        # Booked again, then completed on the day through the booking system.
        await report(handle, event="created", session_number=1, starts_at=at(days[0], 11))
        st = await eventually(handle, lambda s: s.sessions[0].state == "booked")
        await advance_to(ts_env, at(days[0], 12))
        done = await report(
            handle, event="completed", session_number=1, starts_at=at(days[0], 11, 40)
        )
        assert done.outcome == "applied"
        st = await eventually(handle, lambda s: s.stage == "recovery")
        assert st.sessions[0].state == "done" and st.sessions[0].source == "booking"


async def test_a_window_with_no_appointment_is_replanned(ts_env: WorkflowEnvironment) -> None:
    store = RecordingStore(EXTERNAL)
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(ts_env, w.task_queue, clinic_id="berlin-booking", pore_grade="small")
        await eventually(handle, lambda s: bool(s.next_action and "booking" in s.next_action))
        await settle(handle)
        [first] = windows(store)
        latest = date.fromisoformat(first["latest"])
        # No appointment: the window's last day passes, the journey replans and asks again.
        await advance_to(ts_env, at(latest, 1))
        await settle(handle)
        await eventually(handle, lambda s: len(windows(store)) >= 2, timeout=15)
        second = windows(store)[-1]
        assert date.fromisoformat(second["earliest"]) > date.fromisoformat(first["earliest"])
        st = await eventually(handle, lambda s: s.sessions[0].state == "planned")
        assert st.stage == "scheduled"
        # An appointment on a day of the old window that has passed is refused with reasons.
        late = await report(
            handle,
            event="created",
            session_number=1,
            starts_at=at(date.fromisoformat(first["earliest"]), 10),
        )
        assert late.outcome == "anomaly"
