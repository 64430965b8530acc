"""Clinic report page times with 100,000 journeys (a measurement, not a test: pytest does not
collect it). Target (issue 19): at most 500 ms per report page.

    .venv/bin/python -m tests.bench_reports [--journeys 100000] [--rounds 10]

Starts an embedded PostgreSQL in a temporary folder, migrates it, and seeds with COPY: journeys
over two years of enrolments in two clinics, their timeline events as the journey writes them
(``journey_started``, ``planned``/``awaiting_season``, ``session_booked``,
``session_completed``, ``no_show``, ``spf_attested``, ``adverse_event``, ``completed``/
``further_course`` with the review's grades), their appointments and some patient satisfaction
answers; then serves the real app in-process as an admin and times full responses of the
reports page (every clinic and one clinic, the default 26 weeks and two years), a chart's CSV
and the three exports. Prints median and p95 in milliseconds (docs/reports.md has the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from activities import repository
from api.main import create_app
from worker.database import EmbeddedPostgres, create_database, create_pool, migrate
from worker.settings import Settings
from workflows.protocol import ClinicProtocol, ClinicSettings

CLOSED_STAGES = ["completed", "withdrawn", "excluded"]
OPEN_STAGES = [
    "screening",
    "deferred",
    "awaiting_season",
    "scheduled",
    "recovery",
    "spf_window",
    "awaiting_review",
    "paused",
]


def _journey_rows(i: int, rng: random.Random, now: datetime) -> tuple[tuple[Any, ...], list[Any]]:
    """One journey row and its events (workflow_id, key, step, kind, actor, at, summary, data)."""
    pid = f"p_rep{i:06d}"
    wf = f"journey-{pid}"
    clinic = "berlin" if i % 3 == 0 else "default"
    enrolled = now - timedelta(days=rng.uniform(0, 730))
    age = (now - enrolled).days
    events: list[tuple[Any, ...]] = []

    def ev(kind: str, at: datetime, data: dict[str, Any] | None = None) -> None:
        n = len(events)
        events.append((wf, f"{n + 1}.0", n + 1, kind, "system", at, kind, json.dumps(data or {})))

    ev("journey_started", enrolled, {"course": 1})
    waits = rng.random() < 0.15
    first = enrolled + timedelta(days=rng.randint(7, 30) + (120 if waits else 0))
    ev("awaiting_season" if waits else "planned", enrolled + timedelta(hours=1))
    flags: list[str] = ["course_split"] if rng.random() < 0.05 else []
    done = 0
    at = first
    for number in (1, 2, 3):
        if at > now:
            break
        ev("session_booked", at - timedelta(days=14), {"session": number})
        if rng.random() < 0.08:
            ev("no_show", at + timedelta(hours=20), {"session": number})
            flags.append("no_show")
            at += timedelta(days=7)
            if at > now:
                break
        ev("session_completed", at, {"session": number})
        done += 1
        if rng.random() < 0.02:
            ev(
                "adverse_event",
                at + timedelta(days=2),
                {"severity": rng.choice(["mild", "moderate", "severe"])},
            )
            flags.append("adverse_event")
        at += timedelta(days=rng.randint(21, 28))
    if done == 3:
        for k in range(rng.randint(0, 6)):
            spf = at + timedelta(days=3 * k)
            if spf < now:
                ev("spf_attested", spf, {"on": spf.date().isoformat()})
        review = at + timedelta(days=90)
        if review < now:
            grades = {
                "global_improvement": rng.randint(1, 5),
                "pore_visibility": rng.randint(1, 5),
            }
            ev("completed" if rng.random() < 0.85 else "further_course", review, grades)
            stage = "completed"
        else:
            stage = "spf_window"
    elif done:
        stage = "recovery"
    else:
        stage = "awaiting_season" if waits else rng.choice(OPEN_STAGES[:4])
    if age > 60 and rng.random() < 0.05:
        stage = "withdrawn"
    journey = (
        wf,
        pid,
        clinic,
        len(events),
        stage,
        1,
        3,
        done,
        None,
        None,
        sorted(set(flags)),
        "pore-2026.1",
        "{}",
    )
    return journey, events


async def seed(pool: asyncpg.Pool, n: int) -> dict[str, int]:
    """Insert ``n`` journeys with their events, appointments and satisfaction answers."""
    await repository.ensure_default_clinic(pool)
    await repository.upsert_clinic(
        pool,
        ClinicProtocol(
            clinic=ClinicSettings(clinic_id="berlin", name="Berlin", timezone="Europe/Berlin")
        ),
    )
    rng = random.Random(19)
    now = datetime.now(UTC)
    journeys: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    appointments: list[tuple[Any, ...]] = []
    satisfaction: list[tuple[Any, ...]] = []
    for i in range(n):
        journey, evs = _journey_rows(i, rng, now)
        journeys.append(journey)
        events.extend(evs)
        starts = [e[5] for e in evs if e[3] == "session_completed"]
        for k, start in enumerate(starts, 1):
            appointments.append((journey[0], 1, k, start, None, 45, "done", 1))
        if journey[4] == "completed" and rng.random() < 0.6:
            satisfaction.append((journey[0], journey[1], 1, rng.randint(1, 5), evs[-1][5]))
    async with pool.acquire() as conn:
        # Bulk load only: no per-row triggers (append-only guard, webhook fan-out).
        await conn.execute("SET session_replication_role = replica")
        await conn.execute(
            "CREATE TEMP TABLE seed_journeys AS SELECT * FROM journeys WITH NO DATA;"
            "ALTER TABLE seed_journeys ALTER COLUMN status TYPE text;"
            "CREATE TEMP TABLE seed_events AS SELECT * FROM journey_events WITH NO DATA;"
            "ALTER TABLE seed_events ALTER COLUMN data TYPE text"
        )
        jcols = [
            "workflow_id", "patient_id", "clinic_id", "version", "stage", "course_number",
            "sessions_planned", "sessions_done", "next_action", "next_action_at", "flags",
            "protocol_version", "status",
        ]  # fmt: skip
        await conn.copy_records_to_table("seed_journeys", records=journeys, columns=jcols)
        await conn.execute(
            f"INSERT INTO journeys ({', '.join(jcols)}) SELECT {', '.join(jcols[:-1])},"
            " status::jsonb FROM seed_journeys"
        )
        # In time order, as a live system appends them (a week's events share pages).
        events.sort(key=lambda e: e[5])
        ecols = [
            "workflow_id",
            "event_key",
            "step",
            "kind",
            "actor",
            "occurred_at",
            "summary",
            "data",
        ]
        await conn.copy_records_to_table("seed_events", records=events, columns=ecols)
        await conn.execute(
            f"INSERT INTO journey_events ({', '.join(ecols)}) SELECT {', '.join(ecols[:-1])},"
            " data::jsonb FROM seed_events"
        )
        await conn.copy_records_to_table(
            "appointments",
            records=appointments,
            columns=[
                "workflow_id",
                "course_number",
                "session_number",
                "starts_at",
                "arrive_by",
                "duration_minutes",
                "status",
                "version",
            ],
        )
        has_satisfaction = await conn.fetchval("SELECT to_regclass('patient_satisfaction')")
        if has_satisfaction is not None:
            await conn.copy_records_to_table(
                "patient_satisfaction",
                records=satisfaction,
                columns=["workflow_id", "patient_id", "course_number", "score", "created_at"],
            )
    await pool.execute("VACUUM ANALYZE")
    return {
        "journeys": len(journeys),
        "events": len(events),
        "appointments": len(appointments),
        "satisfaction": len(satisfaction) if has_satisfaction else 0,
    }


async def timed(http: httpx.AsyncClient, url: str, rounds: int) -> tuple[list[float], int]:
    r = await http.get(url)  # warm-up: template compile, first pool connection, plans
    assert r.status_code == 200, (url, r.status_code, r.text[:300])
    out: list[float] = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        r = await http.get(url)
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200
    return out, len(r.content)


async def measure(
    n: int, rounds: int, dsn: str | None = None
) -> tuple[dict[str, int], list[tuple[str, float, float, int]]]:
    """Seed ``n`` journeys and time each report URL: (label, median ms, p95 ms, bytes).
    With ``dsn``, time a database this script seeded before (no new server, no seeding)."""
    results: list[tuple[str, float, float, int]] = []
    pg: EmbeddedPostgres | None = None
    counts: dict[str, int] = {}
    try:
        if dsn is None:
            pg = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="bench-reports-")) / "pg")
            admin = await asyncio.to_thread(pg.start)
            await create_database(admin, "bench")
            dsn = pg.dsn("bench")
        pool = await create_pool(dsn)
        await migrate(pool)
        if pg is not None:
            t0 = time.perf_counter()
            counts = await seed(pool, n)
            counts["seed_seconds"] = round(time.perf_counter() - t0)
        _, token = await repository.create_staff_user(pool, "Bench", "admin")
        await pool.close()
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            journey_env="test",
            database_url=dsn,
            temporal_address="127.0.0.1:9",  # nothing listens: reports need PostgreSQL only
        )
        app = create_app(settings)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=120
            ) as http,
        ):
            form = await http.get("/login")
            match = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
            assert match is not None
            r = await http.post("/login", data={"csrf_token": match.group(1), "token": token})
            assert r.status_code == 303
            today = date.today()
            two_years = f"from={today - timedelta(days=729)}&to={today}"
            pages = {
                "/reports (all clinics, 26 weeks)": "/reports",
                "/reports?clinic=berlin (26 weeks)": "/reports?clinic=berlin",
                "/reports?clinic=default (2 years)": f"/reports?clinic=default&{two_years}",
                "/reports (all clinics, 2 years)": f"/reports?{two_years}",
                "chart CSV: sessions-per-week, 2 years": f"/reports/sessions-per-week.csv?{two_years}",
                "export journeys.csv (all, 26 weeks)": "/reports/export/journeys.csv",
                "export sessions.csv (all, 26 weeks)": "/reports/export/sessions.csv",
                "export outcomes.csv (all, 2 years)": f"/reports/export/outcomes.csv?{two_years}",
            }
            for label, url in pages.items():
                times, size = await timed(http, url, rounds)
                ms = sorted(times)
                p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
                results.append((label, statistics.median(ms), p95, size))
    finally:
        if pg is not None:
            await asyncio.to_thread(pg.stop)
    return counts, results


async def main(n: int, rounds: int, dsn: str | None) -> None:
    print(f"{n} journeys, {rounds} requests each (in-process ASGI, embedded PostgreSQL)")
    counts, results = await measure(n, rounds, dsn)
    print("  seeded: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for label, median, p95, size in results:
        print(f"  {label:40} median {median:7.1f} ms   p95 {p95:7.1f} ms   {size / 1024:6.0f} KB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--journeys", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--dsn", help="a database seeded by an earlier run (kept running)")
    args = parser.parse_args()
    asyncio.run(main(args.journeys, args.rounds, args.dsn))
