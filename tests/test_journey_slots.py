"""Journeys booking into a clinic's real capacity (built-in scheduling, docs/scheduling.md): the
time-skipping server, the real worker activities and a real PostgreSQL with the clinic's
lasers and practitioners. Sessions get distinct times on the resources, a full window waits
(staff told, never overbooked), a booked session moves only into a free slot, and a withdraw
gives the slot back."""

from __future__ import annotations

import uuid
from datetime import time

import asyncpg
import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from activities import repository
from activities.store import build_activities
from scheduling.resources import ClinicScheduling
from scheduling.store import sync_clinic
from tests.fixtures_temporal import new_worker
from tests.journey_helpers import eventually, settle, update
from tests.test_journey_paths import refusal
from workflows import calendar
from workflows.ids import workflow_id
from workflows.journey import PatientJourney
from workflows.messages import (
    JourneyStartRequest,
    JourneyStatus,
    RescheduleRequest,
    WithdrawRequest,
)
from workflows.protocol import ClinicProtocol, ClinicSettings
from workflows.replies import PatientReplyReport

TZ = "Europe/Berlin"
Handle = WorkflowHandle[PatientJourney, JourneyStatus]


def clinic(clinic_id: str) -> ClinicProtocol:
    return ClinicProtocol(clinic=ClinicSettings(clinic_id=clinic_id, timezone=TZ))


def scheduling(hours: str, devices: int = 1) -> ClinicScheduling:
    """Small-grade slots of 20 minutes plus 10 of turnover on a 30-minute grid."""
    return ClinicScheduling.model_validate(
        {
            "slot_minutes": {"small": 20, "moderate": 20, "large": 20},
            "turnover_minutes": 10,
            "step_minutes": 30,
            "hours": {d: [hours] for d in ("mon", "tue", "wed", "thu", "fri")},
            "resources": [
                *(
                    {"resource_id": f"laser-{i}", "kind": "device", "label": f"Laser {i}"}
                    for i in range(1, devices + 1)
                ),
                {"resource_id": "pr-a", "kind": "practitioner", "label": "PR A"},
                {"resource_id": "pr-b", "kind": "practitioner", "label": "PR B"},
            ],
        }
    )


async def setup_clinic(pool: asyncpg.Pool, hours: str, devices: int = 1) -> str:
    clinic_id = f"slots-{uuid.uuid4().hex[:8]}"
    await repository.upsert_clinic(pool, clinic(clinic_id))
    await sync_clinic(pool, clinic_id, scheduling(hours, devices))
    return clinic_id


async def enrol(env: WorkflowEnvironment, pool: asyncpg.Pool, tq: str, clinic_id: str) -> Handle:
    patient = await repository.create_patient(
        pool,
        repository.PatientCreate(
            full_name="Test Patient", email="p@example.invalid", clinic_id=clinic_id
        ),
    )
    return await env.client.start_workflow(
        PatientJourney.run,
        JourneyStartRequest(patient_id=patient.patient_id, clinic_id=clinic_id, pore_grade="small"),
        id=workflow_id(patient.patient_id),
        task_queue=tq,
    )


def booked(st: JourneyStatus) -> bool:
    return bool(st.sessions) and st.sessions[0].state == "booked"


async def active_reservations(pool: asyncpg.Pool, clinic_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT workflow_id, session_number, resource_id, lower(during) AS starts "
        "FROM slot_reservations WHERE clinic_id = $1 AND status = 'active' ORDER BY starts",
        clinic_id,
    )


async def test_sessions_get_distinct_slots_on_the_clinics_resources(
    ts_env: WorkflowEnvironment, pg_pool: asyncpg.Pool
) -> None:
    clinic_id = await setup_clinic(pg_pool, "09:00-10:00", devices=2)
    async with new_worker(ts_env.client, build_activities(pg_pool)) as w:
        handles = [await enrol(ts_env, pg_pool, w.task_queue, clinic_id) for _ in range(6)]
        statuses = [await eventually(h, booked, timeout=20) for h in handles]
    firsts = [st.sessions[0] for st in statuses]
    # Each first session holds one laser and one practitioner; no laser twice at one time.
    for s in firsts:
        assert s.starts_at is not None and len(s.resources) == 2
        local = calendar.local_time(s.starts_at, TZ)
        assert time(9, 0) <= local <= time(9, 30)
    held = [(s.starts_at, r) for s in firsts for r in s.resources if r.startswith("Laser")]
    assert len(held) == len(set(held)) == 6
    # Two lasers, two starts an hour: the six sessions need more than one start time.
    assert len({s.starts_at for s in firsts}) >= 3
    rows = await active_reservations(pg_pool, clinic_id)
    assert len(rows) == 12  # a device and a practitioner each


async def test_a_full_window_waits_and_never_overbooks(
    ts_env: WorkflowEnvironment, pg_pool: asyncpg.Pool
) -> None:
    # One 30-minute slot a day: a week's window holds about five first sessions.
    clinic_id = await setup_clinic(pg_pool, "09:00-09:30")
    async with new_worker(ts_env.client, build_activities(pg_pool)) as w:
        handles = [await enrol(ts_env, pg_pool, w.task_queue, clinic_id) for _ in range(9)]
        finals = [
            await eventually(h, lambda s: booked(s) or "waiting_for_slot" in s.flags, timeout=30)
            for h in handles
        ]
        for h in handles:
            await settle(h)
    waiting = [st for st in finals if "waiting_for_slot" in st.flags]
    assert waiting, "nine sessions cannot fit in one week's single daily slot"
    for st in waiting:
        assert st.sessions[0].state == "planned"
        assert st.waiting_reason is not None and "No free slot" in st.waiting_reason
        assert st.stage == "scheduled" and st.next_action_at is not None  # when it asks again
    rows = await active_reservations(pg_pool, clinic_id)
    starts = [r["starts"] for r in rows if r["resource_id"] == "laser-1"]
    assert len(starts) == len(set(starts)) == len(finals) - len(waiting)
    events = await pg_pool.fetch(
        "SELECT e.kind, e.data FROM journey_events e JOIN journeys j USING (workflow_id) "
        "WHERE j.clinic_id = $1 AND e.kind = 'no_free_slot'",
        clinic_id,
    )
    assert len(events) == len(waiting)


async def test_a_booked_session_moves_only_into_a_free_slot_and_withdraw_frees_it(
    ts_env: WorkflowEnvironment, pg_pool: asyncpg.Pool
) -> None:
    clinic_id = await setup_clinic(pg_pool, "09:00-10:00")
    async with new_worker(ts_env.client, build_activities(pg_pool)) as w:
        first, second = [await enrol(ts_env, pg_pool, w.task_queue, clinic_id) for _ in range(2)]
        a = (await eventually(first, booked, timeout=20)).sessions[0]
        b = (await eventually(second, booked, timeout=20)).sessions[0]
        assert a.starts_at is not None and b.starts_at is not None
        # The other patient's time on the other patient's day: taken.
        taken = RescheduleRequest(
            session_number=1,
            new_date=b.planned_on,
            new_time=calendar.local_time(b.starts_at, TZ),
            requested_by="staff",
        )
        if taken.new_date != a.planned_on or taken.new_time != calendar.local_time(a.starts_at, TZ):
            with pytest.raises(WorkflowUpdateFailedError) as err:
                await update(first, PatientJourney.reschedule, taken)
            assert refusal(err) == ("RescheduleRefused", ["no_free_time"])
        # A free time that day: moved, and the reservation with it.
        free = next(
            t for t in (time(9, 0), time(9, 30)) if t != calendar.local_time(b.starts_at, TZ)
        )
        try:
            result = await update(
                first,
                PatientJourney.reschedule,
                RescheduleRequest(
                    session_number=1, new_date=b.planned_on, new_time=free, requested_by="staff"
                ),
            )
        except WorkflowUpdateFailedError as e:
            raise AssertionError(repr(e.cause)) from e
        moved = result.sessions[0]
        assert calendar.local_time(moved.starts_at, TZ) == free
        await settle(first)
        rows = await active_reservations(pg_pool, clinic_id)
        mine = [r for r in rows if r["workflow_id"] == first.id]
        assert {r["starts"] for r in mine} == {moved.starts_at}
        # Withdraw: the slot is free again.
        await update(first, PatientJourney.withdraw, WithdrawRequest(reason="moved away"))
        await settle(first)
        rows = await active_reservations(pg_pool, clinic_id)
        assert not [r for r in rows if r["workflow_id"] == first.id]
        assert [r for r in rows if r["workflow_id"] == second.id]


async def test_a_move_clears_the_patients_confirmation(
    ts_env: WorkflowEnvironment, pg_pool: asyncpg.Pool
) -> None:
    clinic_id = await setup_clinic(pg_pool, "09:00-11:00")
    async with new_worker(ts_env.client, build_activities(pg_pool)) as w:
        handle = await enrol(ts_env, pg_pool, w.task_queue, clinic_id)
        s = (await eventually(handle, booked, timeout=20)).sessions[0]
        assert s.starts_at is not None
        confirm = PatientReplyReport(
            idempotency_key=f"reply:sms:{uuid.uuid4()}",
            reply_id=1,
            kind="confirm",
            session_number=1,
            channel="sms",
        )
        assert (await update(handle, PatientJourney.report_reply, confirm)).outcome == "applied"
        st = await eventually(handle, lambda x: x.sessions[0].confirmed_at is not None)
        other = time(10, 30) if calendar.local_time(s.starts_at, TZ) != time(10, 30) else time(9)
        result = await update(
            handle,
            PatientJourney.reschedule,
            RescheduleRequest(
                session_number=1, new_date=s.planned_on, new_time=other, requested_by="staff"
            ),
        )
        # The confirmation was for the old time: the moved session waits for a new one.
        assert result.sessions[0].confirmed_at is None
        st = await eventually(handle, lambda x: x.sessions[0].confirmed_at is None)
        assert calendar.local_time(st.sessions[0].starts_at, TZ) == other  # type: ignore[arg-type]
