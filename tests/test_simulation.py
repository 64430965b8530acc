"""The season simulation (docs/simulation.md): the audit's SQL against planted rows in a real
PostgreSQL, the seeded generators, and a small season end to end on the real dev server,
PostgreSQL and worker."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from rich.console import Console
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from activities.repository import upsert_clinic
from activities.store import build_activities
from scheduling.resources import scheduling_from_file
from tests.fixtures_temporal import new_worker
from worker.settings import PROJECT_ROOT, Settings
from worker.simulation.arrivals import generate_arrivals
from worker.simulation.audit import AUDIT_RULES, run_audit
from worker.simulation.noise import NoiseRates, SeededNoise
from worker.simulation.runner import SimulationConfig, _with_devices, run_simulation
from worker.simulation.stack import connected_stack
from workflows.protocol import clinic_protocol_from_dict

EXAMPLE_CLINIC = PROJECT_ROOT / "examples" / "clinic.toml"

PARIS = ZoneInfo("Europe/Paris")
AUDIT_CLINIC = "audit"


def _at(day: date, hour: int = 9) -> datetime:
    return datetime.combine(day, time(hour), PARIS)


async def _clinic(pool: asyncpg.Pool) -> None:
    # Defaults: summer June–August, cutoff 30 days before it, 21 days minimum, trip buffer 30.
    await upsert_clinic(
        pool,
        clinic_protocol_from_dict(
            {"clinic": {"clinic_id": AUDIT_CLINIC, "name": "Audit", "timezone": "Europe/Paris"}}
        ),
    )


async def _journey(
    pool: asyncpg.Pool, name: str, trips: list[tuple[date, date]] | None = None
) -> str:
    wf = f"journey-{name}"
    status = {"trips": [{"start": s.isoformat(), "end": e.isoformat()} for s, e in trips or []]}
    await pool.execute(
        """
        INSERT INTO journeys (workflow_id, patient_id, clinic_id, version, stage, course_number,
                              sessions_planned, sessions_done, protocol_version, status)
        VALUES ($1, $2, $3, 1, 'scheduled', 1, 3, 0, 'v', $4)
        """,
        wf,
        name,
        AUDIT_CLINIC,
        status,
    )
    return wf


async def _appointment(
    pool: asyncpg.Pool, wf: str, session: int, day: date, status: str = "done"
) -> None:
    await pool.execute(
        """
        INSERT INTO appointments (workflow_id, course_number, session_number, starts_at,
                                  duration_minutes, status, version)
        VALUES ($1, 1, $2, $3, 30, $4, 1)
        """,
        wf,
        session,
        _at(day),
        status,
    )


async def _completed(pool: asyncpg.Pool, wf: str, session: int, day: date) -> None:
    at = _at(day, 10)
    await pool.execute(
        """
        INSERT INTO journey_events (workflow_id, event_key, step, kind, actor, occurred_at,
                                    summary, data)
        VALUES ($1, $2, $3, 'session_completed', 'integration', $4, 'done', $5)
        """,
        wf,
        f"s{session}",
        session,
        at,
        {"session": session, "completed_at": at.isoformat()},
    )


async def _resources(pool: asyncpg.Pool) -> None:
    await pool.execute(
        "INSERT INTO scheduling_resources (clinic_id, resource_id, kind) VALUES "
        "($1, 'laser-1', 'device'), ($1, 'laser-2', 'device')",
        AUDIT_CLINIC,
    )


async def _reservation(
    pool: asyncpg.Pool, wf: str, resource: str, start: datetime, minutes: int
) -> None:
    end = start + timedelta(minutes=minutes)
    await pool.execute(
        """
        INSERT INTO slot_reservations (clinic_id, resource_id, during, starts_at, ends_at,
                                       workflow_id, patient_id, course_number, session_number)
        VALUES ($1, $2, tstzrange($3, $4, '[)'), $3, $4, $5, $5, 1, 1)
        """,
        AUDIT_CLINIC,
        resource,
        start,
        end,
        wf,
    )


async def _clean_set(pool: asyncpg.Pool) -> None:
    """Rows at every boundary that is allowed: 21 days apart, the cutoff day itself, the last
    session exactly trip_buffer_days before a trip, a course split by summer around a summer
    trip, back-to-back reservations, both sources (events and appointments) for one session."""
    await _clinic(pool)
    wf = await _journey(pool, "clean", trips=[(date(2027, 12, 20), date(2027, 12, 30))])
    for n, day in enumerate([date(2027, 10, 4), date(2027, 10, 25), date(2027, 11, 20)], 1):
        await _appointment(pool, wf, n, day, "done" if n < 3 else "booked")
        if n < 3:
            await _completed(pool, wf, n, day)
    cutoff = await _journey(pool, "cutoff-day")
    await _appointment(pool, cutoff, 1, date(2028, 5, 2))
    split = await _journey(pool, "split", trips=[(date(2028, 7, 1), date(2028, 7, 14))])
    await _appointment(pool, split, 1, date(2028, 4, 10))
    await _appointment(pool, split, 2, date(2028, 9, 4), "booked")
    await _resources(pool)
    await _reservation(pool, wf, "laser-1", _at(date(2027, 10, 4)), 30)
    await _reservation(pool, cutoff, "laser-1", _at(date(2027, 10, 4)) + timedelta(minutes=30), 30)
    await _reservation(pool, split, "laser-2", _at(date(2027, 10, 4)), 30)


async def test_audit_of_a_clean_set_is_zero(pg_pool: asyncpg.Pool) -> None:
    await _clean_set(pg_pool)
    result = await run_audit(pg_pool)
    assert result.counts == {r.name: 0 for r in AUDIT_RULES}
    assert result.clean


async def test_audit_finds_each_planted_violation_once(pg_pool: asyncpg.Pool) -> None:
    await _clean_set(pg_pool)
    # A session in summer.
    wf = await _journey(pg_pool, "summer")
    await _appointment(pg_pool, wf, 1, date(2028, 7, 3), "booked")
    # A session the day after the cutoff (2 May 2028 is allowed, 3 May is not).
    wf = await _journey(pg_pool, "after-cutoff")
    await _appointment(pg_pool, wf, 1, date(2028, 5, 3))
    # Two sessions 20 days apart, in the event log and in the appointments (counted once).
    wf = await _journey(pg_pool, "close")
    for n, day in ((1, date(2027, 10, 4)), (2, date(2027, 10, 24))):
        await _appointment(pg_pool, wf, n, day)
        await _completed(pg_pool, wf, n, day)
    # A session 19 days before a trip (the buffer is 30).
    wf = await _journey(pg_pool, "trip", trips=[(date(2027, 12, 20), date(2027, 12, 30))])
    await _appointment(pg_pool, wf, 1, date(2027, 12, 1))
    # Two overlapping reservations of one laser: only possible without the exclusion
    # constraint (a database restored without it); the audit does not rely on it.
    await pg_pool.execute(
        "ALTER TABLE slot_reservations DROP CONSTRAINT slot_reservations_no_overlap"
    )
    await _reservation(pg_pool, wf, "laser-2", _at(date(2027, 10, 4)) + timedelta(minutes=20), 30)
    result = await run_audit(pg_pool)
    assert result.counts == {r.name: 1 for r in AUDIT_RULES}
    assert not result.clean
    # Per clinic: another clinic's journeys are not this clinic's breaches.
    assert (await run_audit(pg_pool, clinic_id="elsewhere")).counts == {
        r.name: 0 for r in AUDIT_RULES
    }


async def test_audit_trip_buffer_boundaries(pg_pool: asyncpg.Pool) -> None:
    """A session on the trip's last day breaks the rule; a trip between two sessions that are
    each far enough from it does not (a rebooking after a no-show replans the rest only)."""
    await _clinic(pg_pool)
    trip = (date(2027, 11, 1), date(2027, 11, 7))
    around = await _journey(pg_pool, "around", trips=[trip])
    await _completed(pg_pool, around, 1, date(2027, 9, 27))  # 35 days before the trip
    await _completed(pg_pool, around, 2, date(2027, 11, 22))  # 15 days after it
    assert (await run_audit(pg_pool)).counts["trip_buffer"] == 0
    last_day = await _journey(pg_pool, "last-day", trips=[trip])
    await _completed(pg_pool, last_day, 1, date(2027, 11, 7))
    result = await run_audit(pg_pool)
    assert result.counts["trip_buffer"] == 1
    assert result.counts["too_close"] == 0


def test_arrivals_are_seeded_and_reproducible() -> None:
    a = generate_arrivals(200, date(2027, 8, 1), 10, seed=7)
    b = generate_arrivals(200, date(2027, 8, 1), 10, seed=7)
    c = generate_arrivals(200, date(2027, 8, 1), 10, seed=8)
    assert a == b
    assert a != c
    assert [x.day_offset for x in a] == sorted(x.day_offset for x in a)
    assert all(0 <= x.day_offset < 305 for x in a)
    # More arrivals in September than in the (summer) August before it.
    sept = sum(1 for x in a if 31 <= x.day_offset < 61)
    aug = sum(1 for x in a if x.day_offset < 31)
    assert sept > aug
    # A profile belongs to its patient: more patients do not change the first ones.
    assert generate_arrivals(300, date(2027, 8, 1), 10, seed=7)[0].grade == a[0].grade
    assert json.dumps([x.grade for x in a]) == json.dumps([x.grade for x in b])


def test_noise_is_seeded_reproducible_and_near_its_rates() -> None:
    rates = NoiseRates(no_show=0.05, reschedule=0.08, withdrawal=0.03)
    one, two = SeededNoise(7, rates), SeededNoise(7, rates)
    decisions = [
        (one.no_show(p, 1, s), one.reschedule_days(p, 1, s)) for p in range(2000) for s in (1, 2, 3)
    ]
    # Asked in another order, the same answers.
    again = [
        (two.no_show(p, 1, s), two.reschedule_days(p, 1, s))
        for p in reversed(range(2000))
        for s in (3, 2, 1)
    ]
    assert sorted(decisions, key=str) == sorted(again, key=str)
    assert decisions[:30] == [
        (two.no_show(p, 1, s), two.reschedule_days(p, 1, s)) for p in range(10) for s in (1, 2, 3)
    ]
    no_shows = sum(1 for n, _ in decisions if n) / len(decisions)
    moves = [d for _, d in decisions if d is not None]
    assert 0.035 < no_shows < 0.065
    assert 0.065 < len(moves) / len(decisions) < 0.095
    assert all(2 <= d <= 10 for d in moves)
    assert SeededNoise(8, rates).no_show(1, 1, 1) in (True, False)
    off = SeededNoise(7, NoiseRates(0, 0, 0, 0, 0))
    assert not any(off.no_show(p, 1, 1) or off.reschedule_days(p, 1, 1) for p in range(500))
    with pytest.raises(ValueError):
        NoiseRates(no_show=1.5)
    assert datetime.now(UTC)  # (no clock is used by the generators)


def test_devices_override_the_clinic_files_lasers() -> None:
    section = scheduling_from_file(EXAMPLE_CLINIC)
    assert section is not None

    def active(n: int | None) -> list[str]:
        out = _with_devices(section, n)
        assert out is not None
        return [r.resource_id for r in out.resources if r.kind == "device" and r.active]

    assert active(None) == ["laser-1", "laser-2"]
    assert active(1) == ["laser-1"]  # laser-2 kept (its closure refers to it), inactive
    assert active(3) == ["laser-1", "laser-2", "laser-3"]
    bare = _with_devices(None, 2)
    assert bare is not None
    assert sorted(r.resource_id for r in bare.resources) == ["laser-1", "laser-2", "prac-1"]


async def test_a_small_season_end_to_end(
    dev_env: WorkflowEnvironment, pg_pool: asyncpg.Pool, pg_dsn: str, tmp_path: Path
) -> None:
    """20 patients over two simulated months (about 35 s) on the dev server, PostgreSQL and
    the real worker with its activities: every journey enrolled, sessions booked into slots and
    completed, the audit all 0, the report and its charts written."""
    task_queue = f"tq-{uuid.uuid4()}"
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        journey_env="test",
        temporal_address=dev_env.client.service_client.config.target_host,
        temporal_task_queue=task_queue,
        database_url=pg_dsn,
    )
    config = SimulationConfig(
        patients=20,
        start=date(2027, 9, 1),
        months=2,
        seed=11,
        time_scale=150_000,
        clinic_file=EXAMPLE_CLINIC,
        out=tmp_path / "report",
        # More noise than the defaults, so a short season meets some of it.
        rates=NoiseRates(no_show=0.1, reschedule=0.15, prolonged_reaction=0.05, withdrawal=0.05),
        clinic_prefix="t-",
    )
    # As `journey simulate --connect` runs: the stack of the settings, its worker polling.
    async with (
        new_worker(dev_env.client, build_activities(pg_pool), task_queue=task_queue),
        connected_stack(settings) as stack,
    ):
        assert not stack.own
        result = await run_simulation(stack, config, Console(file=io.StringIO()), live=False)
    assert result.data.run["patients_enrolled"] == 20
    assert result.data.run["enrolment_errors"] == 0
    assert result.audit.counts == {r.name: 0 for r in AUDIT_RULES}
    assert result.data.figures["sessions_completed"] > 0
    assert result.data.devices == ["laser-1", "laser-2"]
    reserved = await pg_pool.fetchval(
        "SELECT count(*) FROM slot_reservations WHERE clinic_id = 't-paris-01'"
    )
    assert reserved > 0
    assert sum(w.device_reserved for w in result.data.weeks) > 0
    report = result.paths["report"].read_text()
    assert "**Audit: all 0.**" in report
    assert "![Laser hours per week](utilisation.svg)" in report
    assert result.paths["utilisation"].read_text().startswith("<svg")
    assert json.loads(result.paths["summary"].read_text())["audit"]["double_booked"] == 0
    # On a shared stack the simulated journeys do not go on running after the season.
    still_open = await pg_pool.fetchval(
        "SELECT workflow_id FROM journeys WHERE clinic_id = 't-paris-01' "
        "AND stage NOT IN ('completed', 'withdrawn', 'excluded') LIMIT 1"
    )
    described = await dev_env.client.get_workflow_handle(still_open).describe()
    assert described.status == WorkflowExecutionStatus.TERMINATED


def test_simulate_help_states_the_rates_and_defaults() -> None:
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(app, ["simulate", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for option, default in (
        ("--no-show", "0.05"),
        ("--reschedule", "0.08"),
        ("--prolonged", "0.03"),
        ("--adverse", "0.01"),
        ("--withdrawal", "0.03"),
        ("--devices", ""),
        ("--time-scale", "45000"),
    ):
        assert option in text
        assert default in text


def test_simulate_refuses_bad_input_before_starting_anything(tmp_path: Path) -> None:
    import subprocess
    import sys

    journey = Path(sys.executable).with_name("journey")
    bad_date = subprocess.run(
        [str(journey), "simulate", "--from", "someday"], capture_output=True, text=True
    )
    assert bad_date.returncode == 2
    assert "error: --from 'someday' is not a date" in bad_date.stderr
    broken = tmp_path / "clinic.toml"
    broken.write_text("[clinic]\nclinic_id = 'x'\nnot_a_key = 1\n")
    bad_file = subprocess.run(
        [str(journey), "simulate", "--clinic", str(broken)], capture_output=True, text=True
    )
    assert bad_file.returncode == 2
    assert bad_file.stderr.startswith("error: ")
