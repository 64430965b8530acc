"""Built-in scheduling on a real PostgreSQL (scheduling/store.py, migration 0026): the exclusion
constraint (direct inserts and concurrent reservations), idempotent reserve, releases through
record_step, the clinic without resources, preferences, free times and the resource store."""

from __future__ import annotations

import asyncio
import itertools
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from temporalio.testing import ActivityEnvironment

from activities import repository
from activities.store import JourneyStore
from scheduling import store as slots
from scheduling.preferences import SlotPreferences
from scheduling.resources import ClinicScheduling, Closure, Resource, SlotRules, WeekHours
from scheduling.search import Busy
from tests.status_helpers import full_status
from worker.database import create_pool
from workflows.booking import SlotRelease, SlotRequest
from workflows.protocol import ClinicProtocol, ClinicSettings
from workflows.records import AppointmentRecord, StepRecord

CLINIC = "sched-01"
TZ = "Europe/Berlin"
ZONE = ZoneInfo(TZ)
MONDAY = date(2027, 3, 1)  # a Monday, no DST change that week


def section(**changes: Any) -> ClinicScheduling:
    """One laser, one practitioner, 09:00–13:00 Mon–Fri, 25 min + 5 turnover: 8 slots a day."""
    data: dict[str, Any] = {
        "turnover_minutes": 5,
        "step_minutes": 30,
        "slot_minutes": {"small": 25, "moderate": 25, "large": 25},
        "needs": {"device": 1, "practitioner": 1},
        "hours": {d: ["09:00-13:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
        "resources": [
            {"resource_id": "laser-1", "kind": "device", "label": "L1"},
            {"resource_id": "prac-1", "kind": "practitioner", "label": "AB"},
        ],
        "closures": [],
    }
    data.update(changes)
    return ClinicScheduling.model_validate(data)


async def add_clinic(pool: asyncpg.Pool, clinic_id: str = CLINIC) -> None:
    await repository.upsert_clinic(
        pool, ClinicProtocol(clinic=ClinicSettings(clinic_id=clinic_id, name="S", timezone=TZ))
    )


@pytest.fixture
async def clinic(pg_pool: asyncpg.Pool) -> asyncpg.Pool:
    await add_clinic(pg_pool)
    await slots.sync_clinic(pg_pool, CLINIC, section())
    return pg_pool


def request(n: int = 1, days: list[date] | None = None, **changes: Any) -> SlotRequest:
    data: dict[str, Any] = {
        "clinic_id": CLINIC,
        "patient_id": f"p_sched{n:06d}",
        "workflow_id": f"journey-p_sched{n:06d}",
        "course_number": 1,
        "session_number": 1,
        "pore_grade": "moderate",
        "allowed_days": days or [MONDAY],
        "preferred_on": (days or [MONDAY])[0],
        "timezone": TZ,
    }
    data.update(changes)
    return SlotRequest.model_validate(data)


def local(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=ZONE)


async def active_rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT resource_id, lower(during) AS s, upper(during) AS e, workflow_id, session_number "
        "FROM slot_reservations WHERE status = 'active' ORDER BY resource_id, lower(during)"
    )


# ---------------------------------------------------------------- the constraint


async def test_overlapping_insert_fails_by_constraint(clinic: asyncpg.Pool) -> None:
    insert = """
        INSERT INTO slot_reservations (clinic_id, resource_id, during, starts_at, ends_at,
            workflow_id, patient_id, course_number, session_number, status)
        VALUES ($1, 'laser-1', tstzrange($2, $3, '[)'), $2, $3, $4, 'p_x', 1, 1, $5)
    """
    a = local(MONDAY, 9)
    await clinic.execute(insert, CLINIC, a, a + timedelta(minutes=30), "journey-a", "active")
    with pytest.raises(asyncpg.ExclusionViolationError):
        await clinic.execute(
            insert, CLINIC, a + timedelta(minutes=29), a + timedelta(hours=1), "journey-b", "active"
        )
    # Touching ranges do not overlap; a released reservation does not count.
    await clinic.execute(
        insert, CLINIC, a + timedelta(minutes=30), a + timedelta(hours=1), "journey-c", "active"
    )
    await clinic.execute(insert, CLINIC, a, a + timedelta(minutes=30), "journey-d", "released")
    # Another clinic's resource of the same id is another resource.
    await add_clinic(clinic, "sched-02")
    await slots.sync_clinic(clinic, "sched-02", section())
    await clinic.execute(insert, "sched-02", a, a + timedelta(minutes=30), "journey-e", "active")


async def test_concurrent_reservations_never_double_book(clinic: asyncpg.Pool, pg_dsn: str) -> None:
    """20 journeys ask at once for the same day, which holds 8 slots: exactly 8 get one, no
    resource holds two overlapping ranges, the other 12 get the next working day."""
    pool = await create_pool(pg_dsn, min_size=20, max_size=20)
    try:
        results = await asyncio.gather(*(slots.reserve(pool, request(n)) for n in range(20)))
    finally:
        await pool.close()
    booked = [r for r in results if r.slot is not None]
    assert len(booked) == 8
    starts = sorted(r.slot.starts_at for r in booked if r.slot)
    assert starts == [local(MONDAY, 9) + timedelta(minutes=30 * i) for i in range(8)]
    for r in results:
        if r.slot is None:
            assert r.next_option is not None
            assert r.next_option.kind == "later_day"
            assert r.next_option.first_free_on == MONDAY + timedelta(days=1)
            assert "No free slot" in r.next_option.reason
    rows = await active_rows(clinic)
    assert len(rows) == 16  # a laser and a practitioner each
    for resource in ("laser-1", "prac-1"):
        mine = [r for r in rows if r["resource_id"] == resource]
        for x, y in itertools.pairwise(mine):
            assert x["e"] <= y["s"]


async def test_concurrent_reservations_over_two_lasers(clinic: asyncpg.Pool, pg_dsn: str) -> None:
    """Two lasers and two practitioners (16 slots that day), 30 journeys at once."""
    resources = [
        {"resource_id": "laser-1", "kind": "device"},
        {"resource_id": "laser-2", "kind": "device"},
        {"resource_id": "prac-1", "kind": "practitioner"},
        {"resource_id": "prac-2", "kind": "practitioner"},
    ]
    await slots.sync_clinic(clinic, CLINIC, section(resources=resources))
    pool = await create_pool(pg_dsn, min_size=30, max_size=30)
    try:
        results = await asyncio.gather(*(slots.reserve(pool, request(n)) for n in range(30)))
    finally:
        await pool.close()
    assert sum(1 for r in results if r.slot is not None) == 16
    rows = await active_rows(clinic)
    assert len(rows) == 32
    for resource in ("laser-1", "laser-2", "prac-1", "prac-2"):
        mine = [r for r in rows if r["resource_id"] == resource]
        assert len(mine) == 8
        for x, y in itertools.pairwise(mine):
            assert x["e"] <= y["s"]


async def test_a_stale_search_is_caught_by_the_constraint(
    clinic: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even a search blind to every reservation cannot double-book: the constraint refuses
    each taken candidate in its savepoint and the next free one is taken."""
    for n in range(3):
        taken = await slots.reserve(clinic, request(n))
        assert taken.slot is not None

    async def blind(*args: Any, **kwargs: Any) -> Busy:
        return Busy()

    monkeypatch.setattr(slots, "_busy", blind)
    result = await slots.reserve(clinic, request(9))
    assert result.slot is not None and result.slot.starts_at == local(MONDAY, 10, 30)
    rows = await active_rows(clinic)
    assert len(rows) == 8
    for resource in ("laser-1", "prac-1"):
        mine = [r for r in rows if r["resource_id"] == resource]
        for x, y in itertools.pairwise(mine):
            assert x["e"] <= y["s"]


# ---------------------------------------------------------------- reserve semantics


async def test_clinic_without_resources_keeps_the_default_time(pg_pool: asyncpg.Pool) -> None:
    await add_clinic(pg_pool, "bare-01")
    result = await slots.reserve(pg_pool, request(clinic_id="bare-01", default_start=time(9, 30)))
    assert result.capacity_known is False
    assert result.slot is not None
    assert result.slot.starts_at == local(MONDAY, 9, 30)
    assert result.slot.ends_at - result.slot.starts_at == timedelta(minutes=45)
    assert await pg_pool.fetchval("SELECT count(*) FROM slot_reservations") == 0


async def test_reserve_is_idempotent_and_moves_when_the_days_change(clinic: asyncpg.Pool) -> None:
    first = await slots.reserve(clinic, request())
    again = await slots.reserve(clinic, request())
    assert first == again
    assert first.slot is not None and first.slot.starts_at == local(MONDAY, 9)
    assert {r.kind for r in first.slot.resources} == {"device", "practitioner"}
    assert len(await active_rows(clinic)) == 2
    # The window moved (a reschedule): the reservation moves, the old one is released.
    tuesday = MONDAY + timedelta(days=1)
    moved = await slots.reserve(clinic, request(days=[tuesday]))
    assert moved.slot is not None and moved.slot.starts_at == local(tuesday, 9)
    rows = await active_rows(clinic)
    assert len(rows) == 2 and all(r["s"] == local(tuesday, 9) for r in rows)
    # An exact time on the same day moves it; the same exact time again is a repeat.
    exact = await slots.reserve(clinic, request(days=[tuesday], exact_time=time(11, 0)))
    assert exact.slot is not None and exact.slot.starts_at == local(tuesday, 11)
    assert await slots.reserve(clinic, request(days=[tuesday], exact_time=time(11, 0))) == exact
    assert len(await active_rows(clinic)) == 2


async def test_no_slot_before_the_journeys_now(clinic: asyncpg.Pool) -> None:
    result = await slots.reserve(clinic, request(not_before=local(MONDAY, 10, 15)))
    assert result.slot is not None and result.slot.starts_at == local(MONDAY, 10, 30)


async def test_exact_time_taken_keeps_the_live_reservation(clinic: asyncpg.Pool) -> None:
    other = await slots.reserve(clinic, request(2, exact_time=time(10, 0)))
    assert other.slot is not None
    mine = await slots.reserve(clinic, request(1))
    assert mine.slot is not None and mine.slot.starts_at == local(MONDAY, 9)
    taken = await slots.reserve(clinic, request(1, exact_time=time(10, 0)))
    assert taken.slot is None and taken.next_option is not None
    assert "10:00 is not free" in taken.next_option.reason
    rows = await active_rows(clinic)
    assert {(r["workflow_id"], r["s"]) for r in rows} == {
        ("journey-p_sched000001", local(MONDAY, 9)),
        ("journey-p_sched000002", local(MONDAY, 10)),
    }
    # A start off the grid or outside the hours is not free either.
    late = await slots.reserve(clinic, request(1, exact_time=time(12, 45)))
    assert late.slot is None


async def test_preferences_and_closures(clinic: asyncpg.Pool) -> None:
    await slots.set_preferences(
        clinic,
        "p_sched000001",
        SlotPreferences(weekdays=[2], times=[{"start": "11:00", "end": "13:00"}]),
    )
    week = [MONDAY + timedelta(days=i) for i in range(5)]
    result = await slots.reserve(clinic, request(1, days=week))
    assert result.slot is not None and result.slot.starts_at == local(week[2], 11)
    # A clinic-wide closure over the whole week: no slot, the first free day after it.
    await slots.add_closure(
        clinic, CLINIC, Closure(starts_on=week[0], ends_on=week[4], reason="Training")
    )
    closed = await slots.reserve(clinic, request(2, days=week))
    assert closed.slot is None and closed.next_option is not None
    assert closed.next_option.first_free_on == MONDAY + timedelta(days=7)


async def test_no_free_day_within_reach_is_a_waiting_list(clinic: asyncpg.Pool) -> None:
    await slots.add_closure(
        clinic,
        CLINIC,
        Closure(starts_on=MONDAY, ends_on=MONDAY + timedelta(days=120), reason="Renovation"),
    )
    result = await slots.reserve(clinic, request())
    assert result.slot is None and result.next_option is not None
    assert result.next_option.kind == "waiting_list"
    assert result.next_option.first_free_on is None


async def test_release_is_idempotent(clinic: asyncpg.Pool) -> None:
    await slots.reserve(clinic, request())
    key = SlotRelease(workflow_id="journey-p_sched000001", course_number=1, session_number=1)
    assert await slots.release(clinic, key) == 2
    assert await slots.release(clinic, key) == 0
    assert await active_rows(clinic) == []


# ---------------------------------------------------------------- the activities


def step(n: int, stage: str, appointments: list[AppointmentRecord]) -> StepRecord:
    return StepRecord(
        workflow_id="journey-p_sched000001",
        step=n,
        patient_id="p_sched000001",
        clinic_id=CLINIC,
        status_patch=full_status("p_sched000001", CLINIC, stage=stage),
        appointments=appointments,
    )


def appointment(session: int, status: str, at: datetime) -> AppointmentRecord:
    return AppointmentRecord(
        course_number=1,
        session_number=session,
        starts_at=at,
        duration_minutes=25,
        status=status,  # type: ignore[arg-type]
    )


async def test_record_step_releases_what_stops_being_live(clinic: asyncpg.Pool) -> None:
    store = JourneyStore(clinic)
    env = ActivityEnvironment()
    one = await env.run(store.reserve_slot, request())
    two = await env.run(store.reserve_slot, request(session_number=2, days=[MONDAY + timedelta(7)]))
    three = await env.run(
        store.reserve_slot, request(session_number=3, days=[MONDAY + timedelta(14)])
    )
    assert one.slot and two.slot and three.slot
    assert len(await active_rows(clinic)) == 6
    await env.run(
        store.record_step,
        step(
            1,
            "scheduled",
            [
                appointment(1, "booked", one.slot.starts_at),
                appointment(2, "cancelled", two.slot.starts_at),
            ],
        ),
    )
    assert {r["session_number"] for r in await active_rows(clinic)} == {1, 3}
    # The session is done, then the journey is withdrawn: the done one stays, the rest go.
    await env.run(
        store.record_step,
        step(2, "recovery", [appointment(1, "done", one.slot.starts_at)]),
    )
    await env.run(store.record_step, step(3, "withdrawn", []))
    assert {r["session_number"] for r in await active_rows(clinic)} == {1}
    await env.run(
        store.release_slot,
        SlotRelease(workflow_id="journey-p_sched000001", course_number=1, session_number=1),
    )
    assert await active_rows(clinic) == []


# ---------------------------------------------------------------- free times and resources


async def test_free_times(clinic: asyncpg.Pool) -> None:
    week = [MONDAY + timedelta(days=i) for i in range(5)]
    await slots.reserve(clinic, request(1, exact_time=time(9, 0)))
    found = await slots.free_times(clinic, CLINIC, week, "moderate", 20, None, per_day=3)
    assert len(found) == 15
    assert found[0].on == MONDAY and found[0].local_time == time(9, 30)
    assert all(f.starts_at.tzinfo is not None for f in found)
    per_day = {d: sum(1 for f in found if f.on == d) for d in week}
    assert set(per_day.values()) == {3}
    # The patient's own session counts as free when they move it.
    own = await slots.free_times(
        clinic,
        CLINIC,
        [MONDAY],
        "moderate",
        1,
        None,
        ignore=SlotRelease(workflow_id="journey-p_sched000001", course_number=1, session_number=1),
    )
    assert own[0].local_time == time(9, 0)
    # A clinic without resources offers no times.
    await add_clinic(clinic, "bare-01")
    assert await slots.free_times(clinic, "bare-01", week, "moderate") == []


async def test_resource_store_round_trip(clinic: asyncpg.Pool) -> None:
    await slots.upsert_resource(
        clinic,
        CLINIC,
        Resource(
            resource_id="laser-2",
            kind="device",
            label="L2",
            hours=WeekHours.model_validate({"sat": ["09:00-12:00"]}),
        ),
    )
    await slots.set_rules(clinic, CLINIC, SlotRules(turnover_minutes=0))
    got = await slots.get_scheduling(clinic, CLINIC)
    assert [r.resource_id for r in got.resources] == ["laser-1", "laser-2", "prac-1"]
    laser2 = next(r for r in got.resources if r.resource_id == "laser-2")
    assert laser2.hours is not None and laser2.hours.sat[0].end == time(12)
    assert got.turnover_minutes == 0
    assert await slots.deactivate_resource(clinic, CLINIC, "laser-2")
    assert not await slots.deactivate_resource(clinic, CLINIC, "nope")
    closure = await slots.add_closure(
        clinic, CLINIC, Closure(starts_on=MONDAY, ends_on=MONDAY, reason="x", resource_id="laser-1")
    )
    assert closure.id is not None
    with pytest.raises(LookupError):
        await slots.add_closure(
            clinic, CLINIC, Closure(starts_on=MONDAY, ends_on=MONDAY, reason="x", resource_id="zz")
        )
    # Reloading the file keeps staff closures, replaces the file's, deactivates what it drops.
    await slots.sync_clinic(
        clinic,
        CLINIC,
        section(closures=[{"starts_on": MONDAY, "ends_on": MONDAY, "reason": "file"}]),
    )
    reasons = sorted(c.reason for c in await slots.list_closures(clinic, CLINIC))
    assert reasons == ["file", "x"]
    assert await slots.delete_closure(clinic, CLINIC, closure.id)
    active = [r.resource_id for r in await slots.list_resources(clinic, CLINIC)]
    assert active == ["laser-1", "prac-1"]
    prefs = SlotPreferences(weekdays=[4, 0, 0], day_parts=["evening", "morning"])
    await slots.set_preferences(clinic, "p_prefs", prefs)
    got_prefs = await slots.get_preferences(clinic, "p_prefs")
    assert got_prefs.weekdays == [0, 4] and got_prefs.day_parts == ["morning", "evening"]


async def test_limits_and_an_incomplete_setup(
    clinic: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Staff may leave the set-up short of what a session needs: it is shown as it is, and the
    # search finds nothing (no double booking, no crash).
    assert await slots.deactivate_resource(clinic, CLINIC, "prac-1")
    got = await slots.get_scheduling(clinic, CLINIC)
    assert [r.active for r in got.resources] == [True, False]
    result = await slots.reserve(clinic, request())
    assert result.slot is None and result.next_option is not None
    assert result.next_option.kind == "waiting_list"
    monkeypatch.setattr(slots, "MAX_CLOSURES", 1)
    monkeypatch.setattr(slots, "MAX_RESOURCES", 2)
    await slots.add_closure(clinic, CLINIC, Closure(starts_on=MONDAY, ends_on=MONDAY, reason="a"))
    with pytest.raises(slots.SchedulingLimitError):
        await slots.add_closure(
            clinic, CLINIC, Closure(starts_on=MONDAY, ends_on=MONDAY, reason="b")
        )
    await slots.upsert_resource(clinic, CLINIC, Resource(resource_id="laser-1", kind="device"))
    with pytest.raises(slots.SchedulingLimitError):
        await slots.upsert_resource(clinic, CLINIC, Resource(resource_id="laser-3", kind="device"))
