"""The journey commands (cli/journeys.py) against the real stack, through a local Typer app
(``cli/main.py`` registers them in the product), plus the installed ``journey`` once it does."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import pytest
import typer
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner, Result

from activities import repository
from activities.store import build_activities
from cli import journeys
from tests.fixtures_temporal import new_worker


@dataclass
class Cli:
    app: typer.Typer
    env: dict[str, str]
    pool: asyncpg.Pool

    async def run(self, *args: str) -> Result:
        # In a thread: the command runs its own event loop while the worker runs in this one.
        runner = CliRunner()
        return await asyncio.to_thread(runner.invoke, self.app, list(args), env=self.env)


@pytest.fixture
async def cli(
    dev_env: WorkflowEnvironment, pg_pool: asyncpg.Pool, pg_dsn: str
) -> AsyncIterator[Cli]:
    app = typer.Typer()
    journeys.register(app)
    task_queue = f"tq-{uuid.uuid4()}"
    env = {
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TEMPORAL_TASK_QUEUE": task_queue,
        "DATABASE_URL": pg_dsn,
        "JOURNEY_ENV": "test",
        "COLUMNS": "200",
    }
    async with new_worker(dev_env.client, build_activities(pg_pool), task_queue=task_queue):
        yield Cli(app, env, pg_pool)


async def test_enrol_status_list_and_controls(cli: Cli) -> None:
    r = await cli.run(
        "enrol", "--name", "Jo Example", "--email", "jo@example.com", "--grade", "small", "--json"
    )
    assert r.exit_code == 0, r.output
    pid = json.loads(r.stdout)["patient_id"]

    async def scheduled() -> bool:
        row = await repository.get_journey(cli.pool, pid)
        return row is not None and row.stage == "scheduled"

    for _ in range(200):
        if await scheduled():
            break
        await asyncio.sleep(0.02)
    r = await cli.run("status", pid, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["stage"] == "scheduled"
    r = await cli.run("status", pid)
    assert r.exit_code == 0 and "scheduled" in r.stdout
    r = await cli.run("list", "--stage", "scheduled", "--json")
    assert json.loads(r.stdout)["count"] == 1
    r = await cli.run("list")
    assert r.exit_code == 0 and "Jo Example" in r.stdout
    first = json.loads((await cli.run("status", pid, "--json")).stdout)["sessions"][0]

    r = await cli.run("reschedule", pid, "--session", "1", "--date", "2001-01-01")
    assert r.exit_code == 4
    assert r.stderr.startswith("error: refused (RescheduleRefused): ")
    assert len(r.stderr.strip().splitlines()) == 1
    r = await cli.run("reschedule", pid, "--session", "1", "--date", "tomorrow")
    assert r.exit_code == 2 and "use YYYY-MM-DD" in r.stderr
    r = await cli.run("review", pid, "--outcome", "complete")
    assert r.exit_code == 4 and "review" in r.stderr.lower()
    r = await cli.run("complete-session", pid, "--session", "1", "--key", "k1", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["idempotency_key"] == "k1"
    assert json.loads(r.stdout)["outcome"] == "applied"
    r = await cli.run("complete-session", pid, "--session", "1", "--key", "k1")
    assert r.exit_code == 0 and "already applied" in r.stdout
    # The journey is in recovery: a completion it cannot apply is kept for staff, exit 4.
    r = await cli.run("complete-session", pid, "--session", "2", "--key", "k2")
    assert r.exit_code == 4
    assert r.stderr.startswith(
        "error: not applied: kept for staff as anomaly #1 (journey recovery)"
    )
    r = await cli.run("pause", pid, "--reason", "Holiday", "--json")
    assert r.exit_code == 0, r.output
    r = await cli.run("withdraw", pid, "--reason", "Moved away")
    assert r.exit_code == 0 and "withdrawn" in r.stdout
    r = await cli.run("resume", pid, "--reason", "Back")
    assert r.exit_code == 4
    r = await cli.run("patient-link", pid)
    assert r.exit_code == 0 and "/p/" in r.stdout
    assert first["number"] == 1


async def test_errors_are_one_line(cli: Cli) -> None:
    r = await cli.run("status", "p_nobody")
    assert r.exit_code == 3 and r.stderr == "error: No journey for patient p_nobody.\n"
    r = await cli.run("patient-link", "p_nobody")
    assert r.exit_code == 3
    r = await cli.run("enrol", "--name", "X", "--grade", "huge")
    assert r.exit_code == 2 and r.stderr.startswith("error: pore_grade")
    r = await cli.run("enrol", "--name", "X", "--grade", "small", "--clinic", "nowhere")
    assert r.exit_code == 2 and r.stderr == "error: No clinic 'nowhere'.\n"
    r = await cli.run("staff", "add", "Ada", "--role", "boss")
    assert r.exit_code == 2
    down = {**cli.env, "TEMPORAL_ADDRESS": "127.0.0.1:1"}
    r = await asyncio.to_thread(CliRunner().invoke, cli.app, ["status", "p_abc"], env=down)
    assert r.exit_code == 5 and r.stderr == "error: Temporal is not reachable.\n"
    assert "Traceback" not in r.output


async def test_staff_add_prints_token_once(cli: Cli) -> None:
    r = await cli.run("staff", "add", "Ada Admin", "--role", "admin", "--json")
    assert r.exit_code == 0, r.output
    token = json.loads(r.stdout)["token"]
    staff = await repository.get_staff_by_token(cli.pool, token)
    assert staff is not None and staff.role == "admin"
    stored = await cli.pool.fetchval("SELECT token_hash FROM staff_users WHERE id = $1", staff.id)
    assert stored != token and token not in stored


def _installed_journey_has_commands() -> bool:
    exe = shutil.which("journey") or os.path.join(os.path.dirname(os.sys.executable), "journey")
    if not os.path.exists(exe):
        return False
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    return "patient-link" in out.stdout


@pytest.mark.skipif(
    not _installed_journey_has_commands(),
    reason="cli/main.py does not register cli.journeys yet (journeys.register(app))",
)
async def test_installed_journey_command(cli: Cli) -> None:
    exe = shutil.which("journey") or os.path.join(os.path.dirname(os.sys.executable), "journey")
    proc = await asyncio.create_subprocess_exec(
        exe,
        "staff",
        "add",
        "Ops",
        "--role",
        "staff",
        "--json",
        env={**os.environ, **cli.env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["role"] == "staff"
    proc = await asyncio.create_subprocess_exec(
        exe,
        "status",
        "p_nobody",
        env={**os.environ, **cli.env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 3 and err.decode() == "error: No journey for patient p_nobody.\n"


async def test_enrol_with_an_idempotency_key_answers_the_same_patient_on_a_retry(cli: Cli) -> None:
    args = ("--email", "jo@example.com", "--grade", "small", "--idempotency-key", "import-17")
    first = await cli.run("enrol", "--name", "Jo Example", *args, "--json")
    assert first.exit_code == 0, first.output
    again = await cli.run("enrol", "--name", "Jo Example", *args, "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["patient_id"] == json.loads(first.stdout)["patient_id"]
    assert json.loads(again.stdout)["workflow_id"] == json.loads(first.stdout)["workflow_id"]
    assert await cli.pool.fetchval("SELECT count(*) FROM patients") == 1
    # The same key for another enrolment is refused, and nothing is stored for it.
    other = await cli.run("enrol", "--name", "Someone Else", *args, "--json")
    assert other.exit_code == 2 and "Idempotency-Key" in other.stderr
    assert await cli.pool.fetchval("SELECT count(*) FROM patients") == 1


async def test_staff_disable_revokes_the_token_and_ends_sessions(cli: Cli) -> None:
    from api.web.sessions import create_session, get_session

    added = await cli.run("staff", "add", "Temp Locum", "--role", "clinician", "--json")
    assert added.exit_code == 0, added.output
    staff_id = json.loads(added.stdout)["id"]
    session_id, session = await create_session(cli.pool, staff_id, timedelta(hours=1))
    assert session is not None
    r = await cli.run("staff", "disable", str(staff_id), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {
        "id": staff_id,
        "disabled": True,
        "sessions_ended": 1,
        "tokens_revoked": 0,
    }
    assert await get_session(cli.pool, session_id) is None
    token = json.loads(added.stdout)["token"]
    assert await repository.get_staff_by_token(cli.pool, token) is None
    again = await cli.run("staff", "disable", str(staff_id))
    assert again.exit_code != 0
