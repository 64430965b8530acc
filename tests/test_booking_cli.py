"""``journey booking …`` through the real command on real PostgreSQL: register (secrets printed
once, the outbound subscription made), show, map a patient, list, disable; bad input exits 2,
an unknown clinic 3."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import typer
from typer.testing import CliRunner, Result

from activities import repository
from cli import booking
from tests.integration_rows import new_patient


async def run(pg_dsn: str, *args: str) -> Result:
    app = typer.Typer()
    booking.register(app)
    env = {"DATABASE_URL": pg_dsn, "JOURNEY_ENV": "test", "COLUMNS": "200"}
    return await asyncio.to_thread(CliRunner().invoke, app, ["booking", *args], env=env)


async def test_booking_commands(pg_dsn: str, pg_pool: asyncpg.Pool) -> None:
    await repository.ensure_default_clinic(pg_pool)
    pid = await new_patient(pg_pool, "Ann Example")
    r = await run(pg_dsn, "show", "default")
    assert r.exit_code == 3 and "no booking system" in r.stderr

    r = await run(pg_dsn, "register", "default", "--url", "ftp://nope")
    assert r.exit_code == 2, r.output
    r = await run(pg_dsn, "register", "default", "--url", "http://b.example", "--integration", "x")
    assert r.exit_code == 2 and "JOURNEY_INTEGRATION_SECRETS" in r.stderr
    r = await run(pg_dsn, "register", "default", "--url", "http://b.example/api", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["inbound_secret"].startswith("whsec_") and out["outbound_secret"].startswith(
        "whsec_"
    )
    assert out["clinic_booking"] == "builtin"  # the default clinic books by itself
    assert "journey.session_window" in out["event_types"]
    r = await run(pg_dsn, "register", "default", "--url", "http://b.example/api")
    assert r.exit_code == 0 and "shown once" in r.stdout and 'booking = "external"' in r.stdout
    # Registering again replaced the subscription: one live subscriber.
    assert (
        await pg_pool.fetchval("SELECT count(*) FROM webhook_subscribers WHERE disabled_at IS NULL")
        == 1
    )

    r = await run(pg_dsn, "show", "default", "--json")
    assert r.exit_code == 0 and "inbound_secret" not in json.loads(r.stdout)

    r = await run(pg_dsn, "map-patient", "default", "EXT-1", pid, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["new"] is True, r.output
    r = await run(pg_dsn, "map-patient", "default", "EXT-1", pid, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["new"] is False
    other = await new_patient(pg_pool, "Bo Example")
    r = await run(pg_dsn, "map-patient", "default", "EXT-1", other)
    assert r.exit_code == 2 and "already mapped" in r.stderr
    r = await run(pg_dsn, "map-patient", "default", "EXT-2", "p_nobody")
    assert r.exit_code == 2 and "No patient" in r.stderr

    r = await run(pg_dsn, "appointments", "default", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == []
    r = await run(pg_dsn, "events", "default", "--status", "weird")
    assert r.exit_code == 2
    r = await run(pg_dsn, "events", "default")
    assert r.exit_code == 0, r.output

    r = await run(pg_dsn, "disable", "default")
    assert r.exit_code == 0 and "disabled" in r.stdout
    assert (
        await pg_pool.fetchval("SELECT count(*) FROM webhook_subscribers WHERE disabled_at IS NULL")
        == 0
    )
    r = await run(pg_dsn, "disable", "nowhere")
    assert r.exit_code == 3
