"""The database activities on a real PostgreSQL: idempotent writes, status patches merged into
the read model, late steps, scheduled and cancelled outbox rows, errors, and the migrations."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import repository
from activities.store import JourneyStore, build_activities
from tests.fixtures_pg import PgServer
from tests.status_helpers import full_status
from worker.database import (
    create_database,
    create_pool,
    database_url,
    migrate,
    migration_files,
)
from worker.settings import Settings
from workflows.protocol import ClinicProtocol, ClinicSettings, Protocol
from workflows.records import (
    AppointmentRecord,
    ClinicRef,
    JourneyEvent,
    NotificationRecord,
    StepRecord,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
WF = "journey-p_store000001"


def status(version: int, stage: str = "scheduled", **changes: Any) -> dict[str, Any]:
    """The whole status, as the journey's first write of a run carries it."""
    return full_status(
        "p_store000001",
        stage=stage,
        sessions_planned=3,
        next_action="Session 1",
        next_action_at=T0 + timedelta(days=version),
        **changes,
    )


def event(key: str, kind: str = "session_booked") -> JourneyEvent:
    return JourneyEvent(
        key=key,
        kind=kind,
        actor="system",
        occurred_at=T0,
        summary=f"{kind} {key}",
        data={"at": T0.isoformat(), "n": 1},
    )


def appointment(status: str, day: int = 0) -> AppointmentRecord:
    return AppointmentRecord(
        course_number=1,
        session_number=1,
        starts_at=T0 + timedelta(days=day),
        arrive_by=T0 + timedelta(days=day) - timedelta(minutes=20),
        duration_minutes=20,
        status=status,  # type: ignore[arg-type]
    )


def step(
    n: int,
    *,
    version: int | None = None,
    stage: str = "scheduled",
    events: list[JourneyEvent] | None = None,
    appointments: list[AppointmentRecord] | None = None,
    notifications: list[NotificationRecord] | None = None,
    workflow_id: str = WF,
    patch: dict[str, Any] | None = None,
    cancel_notifications: list[str] | None = None,
    cancel_pending: bool = False,
) -> StepRecord:
    return StepRecord(
        workflow_id=workflow_id,
        step=n,
        patient_id="p_store000001",
        clinic_id="default",
        events=[event(f"{n}.0")] if events is None else events,
        status_patch=status(n if version is None else version, stage) if patch is None else patch,
        appointments=appointments or [],
        notifications=notifications or [],
        cancel_notifications=cancel_notifications or [],
        cancel_pending_notifications=cancel_pending,
    )


async def counts(pool: asyncpg.Pool) -> dict[str, int]:
    tables = ("journey_steps", "journey_events", "journeys", "appointments", "notification_outbox")
    return {t: await pool.fetchval(f"SELECT count(*) FROM {t}") for t in tables}


@pytest.fixture
def store(pg_pool: asyncpg.Pool) -> JourneyStore:
    return JourneyStore(pg_pool)


async def test_build_activities_names(pg_pool: asyncpg.Pool) -> None:
    names = [getattr(fn, "__temporal_activity_definition").name for fn in build_activities(pg_pool)]
    assert names == ["record_step", "load_clinic", "reserve_slot", "release_slot"]


async def test_record_step_twice_writes_once(store: JourneyStore, pg_pool: asyncpg.Pool) -> None:
    record = step(
        1,
        events=[event("1.0"), event("1.1", "stage_changed")],
        appointments=[appointment("booked")],
        notifications=[
            NotificationRecord(key="c1:s1-booked", kind="booking_confirmation"),
            NotificationRecord(
                key="c1:alert", kind="staff_alert", audience="staff", params={"alert": "no_show"}
            ),
        ],
    )
    env = ActivityEnvironment()
    await env.run(store.record_step, record)
    first = await counts(pg_pool)
    await env.run(store.record_step, record)
    assert (
        await counts(pg_pool)
        == first
        == {
            "journey_steps": 1,
            "journey_events": 2,
            "journeys": 1,
            "appointments": 1,
            "notification_outbox": 2,
        }
    )
    row = await pg_pool.fetchrow("SELECT * FROM journey_events WHERE event_key = '1.0'")
    assert row["data"] == {"at": T0.isoformat(), "n": 1}
    assert row["step"] == 1


async def test_concurrent_attempts_of_one_step_write_once(
    store: JourneyStore, pg_pool: asyncpg.Pool
) -> None:
    # An attempt that timed out may still be running when Temporal starts the next one.
    record = step(1, notifications=[NotificationRecord(key="k", kind="aftercare")])
    await asyncio.gather(*(ActivityEnvironment().run(store.record_step, record) for _ in range(4)))
    c = await counts(pg_pool)
    assert (c["journey_steps"], c["journey_events"], c["notification_outbox"]) == (1, 1, 1)


async def test_load_clinic_twice_same_result_and_no_writes(
    store: JourneyStore, pg_pool: asyncpg.Pool
) -> None:
    cp = ClinicProtocol(
        clinic=ClinicSettings(
            clinic_id="sydney",
            name="Sydney",
            timezone="Australia/Sydney",
            hemisphere="south",
            open_weekdays=(1, 3),
        ),
        protocol=Protocol(version="pore-2026.1-syd", spf_months=3),
    )
    await repository.upsert_clinic(pg_pool, cp)
    before = await pg_pool.fetchval("SELECT updated_at FROM clinics WHERE clinic_id = 'sydney'")
    env = ActivityEnvironment()
    first = await env.run(store.load_clinic, ClinicRef(clinic_id="sydney"))
    second = await env.run(store.load_clinic, ClinicRef(clinic_id="sydney"))
    assert first == second == cp
    row = await pg_pool.fetchrow("SELECT * FROM clinics WHERE clinic_id = 'sydney'")
    assert row["updated_at"] == before
    assert row["summer_months"] == [12, 1, 2]
    assert row["protocol_version"] == "pore-2026.1-syd"


async def test_unknown_clinic_is_non_retryable(store: JourneyStore) -> None:
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(store.load_clinic, ClinicRef(clinic_id="nowhere"))
    assert err.value.type == "UnknownClinic"
    assert err.value.non_retryable
    assert "'nowhere'" in str(err.value)


async def test_late_step_is_ignored(store: JourneyStore, pg_pool: asyncpg.Pool) -> None:
    env = ActivityEnvironment()
    await env.run(store.record_step, step(3, stage="recovery"))
    await env.run(store.record_step, step(2, stage="scheduled"))
    row = await pg_pool.fetchrow("SELECT version, stage, status FROM journeys")
    assert (row["version"], row["stage"], row["status"]["stage"]) == (3, "recovery", "recovery")
    # The late step's timeline event is still recorded: the timeline is a log, not a projection.
    keys = await pg_pool.fetch("SELECT event_key FROM journey_events ORDER BY step")
    assert [k["event_key"] for k in keys] == ["2.0", "3.0"]
    await env.run(store.record_step, step(4, stage="spf_window"))
    assert await pg_pool.fetchval("SELECT stage FROM journeys") == "spf_window"


async def test_status_patch_is_merged_and_columns_follow(
    store: JourneyStore, pg_pool: asyncpg.Pool
) -> None:
    env = ActivityEnvironment()
    await env.run(store.record_step, step(1))
    first = await pg_pool.fetchrow("SELECT * FROM journeys")
    # A later step carries only what changed: the rest of the status is kept.
    done = full_status("p_store000001", sessions_planned=3, sessions_done=1)["sessions"]
    patch = {"stage": "recovery", "sessions": done, "flags": ["course_split"]}
    await env.run(store.record_step, step(2, patch=patch))
    row = await pg_pool.fetchrow("SELECT * FROM journeys")
    assert (row["version"], row["stage"], row["sessions_planned"], row["sessions_done"]) == (
        2,
        "recovery",
        3,
        1,
    )
    assert row["flags"] == ["course_split"]
    assert (row["next_action"], row["next_action_at"]) == (
        first["next_action"],
        first["next_action_at"],
    )
    assert row["status"] == {**first["status"], **patch}
    # An empty patch (a step that wrote only events) leaves the read model as it was.
    await env.run(store.record_step, step(3, patch={}))
    again = await pg_pool.fetchrow("SELECT * FROM journeys")
    assert (again["version"], again["stage"], again["status"]) == (3, "recovery", row["status"])


async def test_scheduled_notifications_and_cancellation(
    store: JourneyStore, pg_pool: asyncpg.Pool
) -> None:
    env = ActivityEnvironment()
    later = T0 + timedelta(days=20)
    await env.run(
        store.record_step,
        step(
            1,
            notifications=[
                NotificationRecord(key="now", kind="booking_confirmation"),
                NotificationRecord(key="c1:s1-reminder", kind="session_reminder", send_at=later),
                NotificationRecord(key="c1:s1-checkin", kind="recovery_checkin", send_at=later),
                NotificationRecord(key="c1:spf", kind="spf_reminder", send_at=later),
            ],
        ),
    )
    rows = {
        r["notification_key"]: r for r in await pg_pool.fetch("SELECT * FROM notification_outbox")
    }
    assert rows["c1:s1-reminder"]["next_attempt_at"] == later
    # Without a send time a message is due at once.
    assert rows["now"]["next_attempt_at"] <= await pg_pool.fetchval("SELECT now()")
    await pg_pool.execute(
        "UPDATE notification_outbox SET status = 'sent' WHERE notification_key = 'now'"
    )
    # A later step cancels one by key (a moved session)...
    await env.run(
        store.record_step, step(2, patch={}, cancel_notifications=["c1:s1-reminder", "unknown"])
    )
    state = dict(await pg_pool.fetch("SELECT notification_key, status FROM notification_outbox"))
    assert state == {
        "now": "sent",
        "c1:s1-reminder": "cancelled",
        "c1:s1-checkin": "pending",
        "c1:spf": "pending",
    }
    # ...or every pending one (a withdraw); a message already sent stays sent.
    await env.run(store.record_step, step(3, patch={}, cancel_pending=True))
    rows = await pg_pool.fetch(
        "SELECT notification_key, status, cancelled_at FROM notification_outbox"
    )
    assert {r["notification_key"]: r["status"] for r in rows} == {
        "now": "sent",
        "c1:s1-reminder": "cancelled",
        "c1:s1-checkin": "cancelled",
        "c1:spf": "cancelled",
    }
    assert all((r["cancelled_at"] is None) == (r["status"] == "sent") for r in rows)
    # A replay of the cancelling step changes nothing, and a cancelled row is not re-added.
    await env.run(store.record_step, step(1))
    assert (
        await pg_pool.fetchval("SELECT count(*) FROM notification_outbox WHERE status = 'pending'")
        == 0
    )


async def test_appointments_upsert_by_version(store: JourneyStore, pg_pool: asyncpg.Pool) -> None:
    env = ActivityEnvironment()
    await env.run(store.record_step, step(1, appointments=[appointment("booked")]))
    await env.run(store.record_step, step(3, appointments=[appointment("done")]))
    await env.run(store.record_step, step(2, appointments=[appointment("no_show", day=7)]))
    row = await pg_pool.fetchrow("SELECT status, version, starts_at FROM appointments")
    assert (row["status"], row["version"], row["starts_at"]) == ("done", 3, T0)
    await env.run(store.record_step, step(5, appointments=[appointment("booked", day=21)]))
    rows = await repository.list_appointments(pg_pool, WF)
    assert [(a.status, a.version, a.starts_at) for a in rows] == [
        ("booked", 5, T0 + timedelta(days=21))
    ]


async def test_events_unique_and_append_only(store: JourneyStore, pg_pool: asyncpg.Pool) -> None:
    env = ActivityEnvironment()
    await env.run(store.record_step, step(1, events=[event("k1")]))
    await env.run(store.record_step, step(2, events=[event("k1"), event("k2")]))
    assert await pg_pool.fetchval("SELECT count(*) FROM journey_events") == 2
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pg_pool.execute("UPDATE journey_events SET summary = 'changed'")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pg_pool.execute("DELETE FROM journey_events")
    assert await pg_pool.fetchval("SELECT count(*) FROM journey_events") == 2


async def test_notification_channel_from_patient(
    store: JourneyStore, pg_pool: asyncpg.Pool
) -> None:
    await repository.ensure_default_clinic(pg_pool)
    patient = await repository.create_patient(
        pg_pool,
        repository.PatientCreate(
            full_name="Ada Sms", phone="+44 7700 900000", preferred_channel="sms"
        ),
    )
    record = StepRecord(
        workflow_id=f"journey-{patient.patient_id}",
        step=1,
        patient_id=patient.patient_id,
        clinic_id="default",
        status_patch=full_status(patient.patient_id),
        notifications=[
            NotificationRecord(key="a", kind="aftercare"),
            NotificationRecord(key="b", kind="staff_alert", audience="staff"),
        ],
    )
    await ActivityEnvironment().run(store.record_step, record)
    rows = await repository.list_notifications(pg_pool, record.workflow_id)
    assert [(r.notification_key, r.channel, r.audience) for r in rows] == [
        ("a", "sms", "patient"),
        ("b", "staff", "staff"),
    ]
    assert {r.status for r in rows} == {"pending"}


async def test_refused_data_is_non_retryable_and_writes_nothing(
    store: JourneyStore, pg_pool: asyncpg.Pool
) -> None:
    bad = step(1, events=[event("1.0").model_copy(update={"summary": "nul \x00 byte"})])
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(store.record_step, bad)
    assert err.value.type == "InvalidRecord"
    assert err.value.non_retryable
    assert await counts(pg_pool) == dict.fromkeys(
        ("journey_steps", "journey_events", "journeys", "appointments", "notification_outbox"), 0
    )


async def test_database_outage_is_retryable_then_succeeds(
    store: JourneyStore, pg_pool: asyncpg.Pool, pg_server: PgServer
) -> None:
    env = ActivityEnvironment()
    await env.run(store.record_step, step(1))
    pg_server.stop()
    with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)) as err:
        await env.run(store.record_step, step(2, stage="recovery"))
    # An ordinary exception: Temporal retries it under the activity's retry policy.
    assert not isinstance(err.value, ApplicationError)
    pg_server.start()
    await env.run(store.record_step, step(2, stage="recovery"))  # the next attempt
    await env.run(store.record_step, step(2, stage="recovery"))  # and a duplicate
    c = await counts(pg_pool)
    assert (c["journey_steps"], c["journey_events"]) == (2, 2)
    assert await pg_pool.fetchval("SELECT stage FROM journeys") == "recovery"


@pytest.fixture
async def empty_dsn(pg_server: PgServer) -> AsyncIterator[str]:
    """A database with no schema at all (not copied from the migrated template)."""
    name = f"mig_{uuid.uuid4().hex[:12]}"
    await create_database(pg_server.admin_dsn, name)
    yield pg_server.dsn(name)
    conn = await asyncpg.connect(pg_server.admin_dsn)
    await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await conn.close()


async def test_migrations_idempotent_and_safe_concurrently(empty_dsn: str) -> None:
    pools = [await create_pool(empty_dsn, min_size=1, max_size=1) for _ in range(3)]
    results = await asyncio.gather(*(migrate(p) for p in pools))
    expected = [n for n, _ in migration_files()]
    assert sorted(n for r in results for n in r) == expected  # each applied exactly once
    assert await migrate(pools[0]) == []
    assert await migrate(empty_dsn) == []
    recorded = await pools[0].fetch("SELECT name FROM schema_migrations ORDER BY name")
    assert [r["name"] for r in recorded] == expected
    for p in pools:
        await p.close()


async def test_embedded_server_for_settings() -> None:
    # Under /tmp, not pytest's 0700 basetemp: the postgres system user must reach the folder.
    data_dir = Path(tempfile.mkdtemp(prefix="journey-data-"))
    settings = Settings(journey_data_dir=data_dir, database_url=None)
    dsn, server = await database_url(settings)
    assert server is not None and server.running
    assert (data_dir / "pg" / "PG_VERSION").exists()
    pool = await create_pool(dsn, min_size=1, max_size=2)
    assert await pool.fetchval("SELECT current_database()") == "journey"
    assert await migrate(pool) == [n for n, _ in migration_files()]
    await pool.close()
    await asyncio.to_thread(server.stop)
    assert not server.running
    # Data is kept between runs: a second start finds the migrated database.
    dsn_again, again = await database_url(settings)
    assert dsn_again == dsn and again is not None
    assert await migrate(dsn_again) == []
    await asyncio.to_thread(again.stop)
    shutil.rmtree(data_dir, ignore_errors=True)


async def test_database_url_setting_starts_nothing() -> None:
    settings = Settings(database_url="postgresql://u@db.example/journey")
    assert await database_url(settings) == ("postgresql://u@db.example/journey", None)
