"""The restore drill of deploy/README.md, steps 2–4, on a real PostgreSQL: a custom-format
dump (what the backup CronJob writes) restores into a new database that ``journey migrate``
accepts without applying anything, with the same rows."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from activities.repository import PatientCreate, create_patient, ensure_default_clinic
from tests.fixtures_pg import PgServer
from worker.database import create_database, create_pool, psql_path

JOURNEY = Path(sys.executable).with_name("journey")
COUNTS = """
    SELECT (SELECT count(*) FROM patients) AS patients,
           (SELECT count(*) FROM clinics) AS clinics,
           (SELECT count(*) FROM schema_migrations) AS migrations
"""


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _run(*command: str, env: dict[str, str] | None = None) -> str:
    process = await asyncio.create_subprocess_exec(
        *command,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"{command[0]} exited {process.returncode}: {text}"
    return text


@pytest.fixture
async def drill_dsn(pg_server: PgServer) -> AsyncIterator[str]:
    name = f"drill_{uuid.uuid4().hex[:12]}"
    await create_database(pg_server.admin_dsn, name)
    yield pg_server.dsn(name)
    conn = await asyncpg.connect(pg_server.admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def test_a_dump_restores_into_a_database_the_product_accepts(
    pg_dsn: str, drill_dsn: str, tmp_path: Path
) -> None:
    pool = await create_pool(pg_dsn, min_size=1, max_size=2)
    try:
        await ensure_default_clinic(pool)
        await create_patient(
            pool,
            PatientCreate(full_name="Drill Patient", email="drill@example.invalid"),
        )
        before = dict(await pool.fetchrow(COUNTS) or {})
    finally:
        await pool.close()
    assert before["patients"] == 1

    bin_dir = psql_path().parent
    dump = tmp_path / "journey.dump"
    # What deploy/kubernetes/backup-cronjob.yaml runs, then the drill's restore.
    await _run(str(bin_dir / "pg_dump"), "--format=custom", "--no-owner", f"--file={dump}", pg_dsn)
    await _run(str(bin_dir / "pg_restore"), "--list", str(dump))
    await _run(
        str(bin_dir / "pg_restore"), "--no-owner", "--exit-on-error", "-d", drill_dsn, str(dump)
    )

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "TEMPORAL_"))}
    output = await _run(str(JOURNEY), "migrate", env={**env, "DATABASE_URL": drill_dsn})
    assert "Database schema is up to date." in output

    conn = await asyncpg.connect(drill_dsn)
    try:
        after = dict(await conn.fetchrow(COUNTS) or {})
        name = await conn.fetchval("SELECT full_name FROM patients")
    finally:
        await conn.close()
    assert after == before  # migrate applied nothing; every row came back
    assert name == "Drill Patient"


def test_the_drill_is_the_documented_one() -> None:
    readme = (Path(__file__).resolve().parent.parent / "deploy" / "README.md").read_text()
    assert "pg_restore --no-owner --exit-on-error" in readme
    assert "journey migrate" in readme
    assert "tests/test_restore_drill.py" in readme
