"""``journey staff list|disable|rotate`` and ``journey token create|list|revoke`` (issue 16),
through the real command on real PostgreSQL; the tokens they print work (or stop) on the API."""

from __future__ import annotations

import json

import asyncpg

from tests.access_helpers import app_client, bearer, make_chain
from tests.test_cli_journeys import Cli, cli

__all__ = ["cli"]  # the fixture


async def test_staff_and_token_commands(cli: Cli, pg_dsn: str, pg_pool: asyncpg.Pool) -> None:
    await make_chain(pg_pool)
    r = await cli.run(
        "staff", "add", "Mia Manager", "--role", "manager", "--clinic", "hamburg", "--json"
    )
    assert r.exit_code == 0, r.output
    mia = json.loads(r.stdout)
    assert mia["role"] == "manager" and mia["clinics"] == ["hamburg"]

    # A token beyond the member's role or clinics is refused (exit 2); a good one printed once.
    r = await cli.run(
        "token", "create", "--staff", str(mia["id"]), "--name", "x", "--role", "admin"
    )
    assert r.exit_code == 2 and "may not grant the role admin" in r.stderr
    r = await cli.run(
        "token",
        "create",
        "--staff",
        str(mia["id"]),
        "--name",
        "x",
        "--role",
        "manager",
        "--clinic",
        "munich",
    )
    assert r.exit_code == 2 and "munich" in r.stderr
    r = await cli.run(
        "token",
        "create",
        "--staff",
        str(mia["id"]),
        "--name",
        "fhir export",
        "--role",
        "manager",
        "--days",
        "30",
        "--json",
    )
    assert r.exit_code == 0, r.output
    made = json.loads(r.stdout)
    assert made["clinics"] == ["hamburg"] and made["roles"] == ["manager"]
    secret = made["token"]
    r = await cli.run("token", "list", "--json")
    listed = json.loads(r.stdout)
    assert [t["id"] for t in listed] == [made["id"]] and secret not in r.stdout

    r = await cli.run("staff", "list", "--json")
    members = {m["id"]: m for m in json.loads(r.stdout)}
    assert members[mia["id"]]["live_tokens"] == 1 and members[mia["id"]]["sign_in"] == "token"

    async with app_client(pg_dsn) as http:
        assert (await http.get("/fhir/R4/Patient", headers=bearer(secret))).status_code == 200
        r = await cli.run("token", "revoke", str(made["id"]))
        assert r.exit_code == 0
        assert (await http.get("/fhir/R4/Patient", headers=bearer(secret))).status_code == 401
        assert (await cli.run("token", "revoke", str(made["id"]))).exit_code == 3

        # Rotate: the old own token stops, the new one works; disable: everything stops.
        r = await cli.run("staff", "rotate", str(mia["id"]), "--json")
        new = json.loads(r.stdout)["token"]
        assert (await http.get("/api/journeys", headers=bearer(mia["token"]))).status_code == 401
        assert (await http.get("/api/journeys", headers=bearer(new))).status_code == 200
        r = await cli.run(
            "token",
            "create",
            "--staff",
            str(mia["id"]),
            "--name",
            "y",
            "--role",
            "manager",
            "--json",
        )
        second = json.loads(r.stdout)["token"]
        r = await cli.run("staff", "disable", str(mia["id"]), "--json")
        assert json.loads(r.stdout)["tokens_revoked"] == 1
        assert (await http.get("/api/journeys", headers=bearer(new))).status_code == 401
        assert (await http.get("/fhir/R4/Patient", headers=bearer(second))).status_code == 401
