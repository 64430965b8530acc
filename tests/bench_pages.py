"""Page load times of the dashboard with 1,000 journeys in the read model (a measurement, not a
test: pytest does not collect it).

    .venv/bin/python -m tests.bench_pages [--journeys 1000] [--rounds 30]

Starts an embedded PostgreSQL in a temporary folder, inserts patients and journeys (with the
status JSON the workflow writes) directly with SQL, then serves the real app in-process (its
lifespan, pool and templates; Temporal is not needed, the pages read PostgreSQL only) and
times full responses of the overview, the list (plain, filtered, searched, a later page) and a
journey page. Prints median and p95 in milliseconds.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from activities import repository
from api.main import create_app
from worker.database import EmbeddedPostgres, create_database, create_pool, migrate
from worker.settings import Settings
from workflows.ids import workflow_id
from workflows.messages import JourneyStatus, SessionStatus
from workflows.protocol import ClinicProtocol, ClinicSettings

STAGES = [
    "screening",
    "deferred",
    "awaiting_season",
    "scheduled",
    "scheduled",
    "session_due",
    "recovery",
    "spf_window",
    "awaiting_review",
    "completed",
    "paused",
    "withdrawn",
]
FLAGS = ["", "", "", "", "no_show", "course_split", "prolonged_reaction", "no_pre_session_check"]
FIRST = ["Alice", "Bruno", "Chloe", "Dora", "Emil", "Fatima", "Goran", "Hana", "Ivo", "Jana"]
LAST = ["Moreau", "Keller", "Novak", "Lindqvist", "Rossi", "Silva", "Weber", "Dubois", "Costa"]


async def seed(pool: asyncpg.Pool, n: int) -> str:
    """Insert ``n`` patients and journeys; returns one patient id for the journey page."""
    await repository.ensure_default_clinic(pool)
    await repository.upsert_clinic(
        pool,
        ClinicProtocol(
            clinic=ClinicSettings(clinic_id="berlin", name="Berlin", timezone="Europe/Berlin")
        ),
    )
    rng = random.Random(7)
    now = datetime.now(UTC)
    patients: list[tuple[Any, ...]] = []
    journeys: list[tuple[Any, ...]] = []
    for i in range(n):
        pid = f"p_bench{i:05d}"
        clinic = "default" if i % 3 else "berlin"
        stage = rng.choice(STAGES)
        flag = rng.choice(FLAGS)
        first = now.date() + timedelta(days=rng.randint(-60, 60))
        sessions = [
            SessionStatus(
                number=k + 1,
                planned_on=first + timedelta(days=21 * k),
                starts_at=datetime.combine(first + timedelta(days=21 * k), datetime.min.time(), UTC)
                + timedelta(hours=9),
                state="done"
                if k == 0 and stage not in ("scheduled", "awaiting_season")
                else "booked",
            )
            for k in range(3)
        ]
        next_at = now + timedelta(hours=rng.randint(-48, 24 * 60))
        status = JourneyStatus(
            patient_id=pid,
            clinic_id=clinic,
            stage=stage,  # type: ignore[arg-type]
            protocol_version="pore-2026.1",
            pore_grade="moderate",
            numbing_cream=bool(i % 2),
            sessions=sessions,
            next_action="Session 2",
            next_action_at=next_at,
            flags=[flag] if flag else [],
            timezone="UTC" if clinic == "default" else "Europe/Berlin",
            journey_now=now,
        )
        patients.append(
            (pid, f"{rng.choice(FIRST)} {rng.choice(LAST)} {i}", f"{pid}@example.com", clinic)
        )
        journeys.append(
            (
                workflow_id(pid),
                pid,
                clinic,
                1,
                stage,
                1,
                3,
                1,
                "Session 2",
                next_at,
                [flag] if flag else [],
                "pore-2026.1",
                status.model_dump(mode="json"),
            )
        )
    # COPY: 100,000 rows in seconds (executemany took minutes).
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "patients", records=patients, columns=["patient_id", "full_name", "email", "clinic_id"]
        )
        # COPY has no binary jsonb encoder: the status goes through a text column.
        await conn.execute(
            "CREATE TEMP TABLE seed_journeys AS SELECT * FROM journeys WITH NO DATA;"
            "ALTER TABLE seed_journeys ALTER COLUMN status TYPE text"
        )
        await conn.copy_records_to_table(
            "seed_journeys",
            records=[(*j[:-1], json.dumps(j[-1])) for j in journeys],
            columns=[
                "workflow_id",
                "patient_id",
                "clinic_id",
                "version",
                "stage",
                "course_number",
                "sessions_planned",
                "sessions_done",
                "next_action",
                "next_action_at",
                "flags",
                "protocol_version",
                "status",
            ],
        )
        await conn.execute(
            "INSERT INTO journeys (workflow_id, patient_id, clinic_id, version, stage,"
            " course_number, sessions_planned, sessions_done, next_action, next_action_at, flags,"
            " protocol_version, status) SELECT workflow_id, patient_id, clinic_id, version, stage,"
            " course_number, sessions_planned, sessions_done, next_action, next_action_at, flags,"
            " protocol_version, status::jsonb FROM seed_journeys"
        )
    await pool.execute("ANALYZE")
    return str(journeys[0][1])


async def timed(http: httpx.AsyncClient, url: str, rounds: int) -> list[float]:
    r = await http.get(url)  # warm-up: template compile, first pool connection
    assert r.status_code == 200, (url, r.status_code)
    out: list[float] = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        r = await http.get(url)
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200
    return out


async def main(n: int, rounds: int) -> None:
    print(f"{n} journeys, {rounds} requests each (in-process ASGI, embedded PostgreSQL)")
    for label, median, p95, size in await measure(n, rounds):
        print(f"  {label:28} median {median:6.1f} ms   p95 {p95:6.1f} ms   {size / 1024:5.0f} KB")


async def measure(n: int, rounds: int) -> list[tuple[str, float, float, int]]:
    """Seed ``n`` journeys and time each page: (label, median ms, p95 ms, bytes)."""
    results: list[tuple[str, float, float, int]] = []
    folder = Path(tempfile.mkdtemp(prefix="bench-pages-"))
    pg = EmbeddedPostgres(folder / "pg")
    admin = await asyncio.to_thread(pg.start)
    try:
        await create_database(admin, "bench")
        dsn = pg.dsn("bench")
        pool = await create_pool(dsn)
        await migrate(pool)
        one = await seed(pool, n)
        _, token = await repository.create_staff_user(pool, "Bench", "staff")
        await pool.close()
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            journey_env="test",
            database_url=dsn,
            temporal_address="127.0.0.1:9",  # nothing listens: pages need PostgreSQL only
        )
        app = create_app(settings)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://bench"
            ) as http,
        ):
            form = await http.get("/login")
            match = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
            assert match is not None
            r = await http.post("/login", data={"csrf_token": match.group(1), "token": token})
            assert r.status_code == 303
            pages = {
                "/ (overview)": "/",
                "/journeys": "/journeys",
                "/journeys?stage=scheduled": "/journeys?stage=scheduled",
                "/journeys?q=rossi": "/journeys?q=rossi",
                "/journeys?page=20": "/journeys?page=20",
                "/journeys/{id}": f"/journeys/{one}",
                "/live (poll, JSON)": "/live",
            }
            for label, url in pages.items():
                ms = sorted(await timed(http, url, rounds))
                p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
                size = len((await http.get(url)).content)
                results.append((label, statistics.median(ms), p95, size))
    finally:
        await asyncio.to_thread(pg.stop)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--journeys", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(main(args.journeys, args.rounds))
