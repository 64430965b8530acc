"""``journey resources …`` (cli/scheduling.py) on a real PostgreSQL: load the example clinic
file's [scheduling] section, list it, add and remove a closure, list free times."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import typer
from typer.testing import CliRunner, Result

from activities import repository
from cli import scheduling
from workflows.protocol import load_clinic_protocol

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "clinic.toml"


async def run(dsn: str, *args: str) -> Result:
    app = typer.Typer()
    scheduling.register(app)
    env = {"DATABASE_URL": dsn, "JOURNEY_ENV": "test", "COLUMNS": "200"}
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


async def test_load_list_closures_and_free_times(pg_pool: asyncpg.Pool, pg_dsn: str) -> None:
    r = await run(pg_dsn, "resources", "load", str(EXAMPLE))
    assert r.exit_code != 0 and "journey clinic add" in r.output  # the clinic comes first
    await repository.upsert_clinic(pg_pool, load_clinic_protocol(EXAMPLE))
    r = await run(pg_dsn, "resources", "load", str(EXAMPLE))
    assert r.exit_code == 0, r.output
    assert "4 resource(s), 2 closure(s)" in r.output
    r = await run(pg_dsn, "resources", "list", "paris-01", "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert [x["resource_id"] for x in got["resources"]] == [
        "laser-1",
        "laser-2",
        "prac-ab",
        "prac-cd",
    ]
    r = await run(pg_dsn, "resources", "list", "paris-01")
    assert r.exit_code == 0 and "laser-2" in r.output and "Christmas" in r.output
    r = await run(
        pg_dsn,
        "resources",
        "closure-add",
        "paris-01",
        "--from",
        "2027-02-01",
        "--reason",
        "Training day",
        "--json",
    )
    assert r.exit_code == 0, r.output
    closure_id = json.loads(r.output)["id"]
    r = await run(
        pg_dsn, "resources", "free", "paris-01", "--from", "2027-02-01", "--days", "2", "--json"
    )
    assert r.exit_code == 0, r.output
    days = {f["on"] for f in json.loads(r.output)}
    assert days == {"2027-02-02"}  # the 1st is closed
    r = await run(pg_dsn, "resources", "closure-remove", "paris-01", str(closure_id))
    assert r.exit_code == 0, r.output
    r = await run(pg_dsn, "resources", "closure-remove", "paris-01", str(closure_id))
    assert r.exit_code != 0
    r = await run(
        pg_dsn,
        "resources",
        "closure-add",
        "paris-01",
        "--from",
        "2027-02-02",
        "--to",
        "2027-02-01",
        "--reason",
        "x",
    )
    assert r.exit_code != 0 and "ends_on" in r.output
    r = await run(pg_dsn, "resources", "list", "bad id!")
    assert r.exit_code != 0
