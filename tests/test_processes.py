"""The product's processes: the worker and dispatcher entrypoints, ``journey dev`` as a user runs
it, and a worker killed with SIGKILL mid-journey (issue 5)."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from rich.console import Console
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment

from activities.repository import PatientCreate, create_patient, get_journey, upsert_clinic
from worker.database import create_pool
from worker.devstack import DEMO_EMAIL_DOMAIN, DemoIntegration
from worker.main import run_dispatcher, run_worker
from worker.settings import Settings
from workflows.ids import workflow_id
from workflows.journey import PatientJourney
from workflows.messages import JourneyStartRequest, JourneyStatus
from workflows.protocol import clinic_protocol_from_dict

JOURNEY = Path(sys.executable).with_name("journey")


def _settings(dev_env: WorkflowEnvironment, dsn: str, tmp: Path, task_queue: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        temporal_address=dev_env.client.service_client.config.target_host,
        temporal_task_queue=task_queue,
        database_url=dsn,
        journey_data_dir=tmp,
        notification_outbox_file=tmp / "outbox.log",
    )


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "TEMPORAL_"))}
    env.update(
        TEMPORAL_ADDRESS=settings.temporal_address,
        TEMPORAL_TASK_QUEUE=settings.temporal_task_queue,
        DATABASE_URL=settings.database_url or "",
        JOURNEY_DATA_DIR=str(settings.journey_data_dir),
        NOTIFICATION_OUTBOX_FILE=str(settings.outbox_file),
    )
    return env


async def _until(check: Callable[[], Coroutine[Any, Any, bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _start_journey(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    *,
    task_timeout: timedelta | None = None,
    **request: Any,
) -> WorkflowHandle[PatientJourney, JourneyStatus]:
    # The product's enrolment path: the patient record first, then the journey with the id.
    patient = await create_patient(
        pool,
        PatientCreate(
            full_name="Test Patient",
            email=f"t{uuid.uuid4().hex[:8]}@{DEMO_EMAIL_DOMAIN}",
            clinic_id=request.get("clinic_id", "default"),
        ),
    )
    return await client.start_workflow(
        PatientJourney.run,
        JourneyStartRequest(patient_id=patient.patient_id, **request),
        id=workflow_id(patient.patient_id),
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        task_timeout=task_timeout,
    )


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(pg_dsn, min_size=1, max_size=4)
    yield p
    await p.close()


async def test_worker_and_dispatcher_run_until_stopped(
    dev_env: WorkflowEnvironment, pg_dsn: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = _settings(dev_env, pg_dsn, tmp_path, f"tq-{uuid.uuid4()}")
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop=stop, telemetry=False))
    dispatcher = asyncio.create_task(run_dispatcher(settings, stop=stop, telemetry=False))
    # run_worker creates the default clinic; the patient record needs it.
    await _until(
        lambda: _exists(pool, "SELECT 1 FROM clinics WHERE clinic_id = 'default'"), 20, "clinic"
    )
    handle = await _start_journey(
        dev_env.client, pool, settings, pore_grade="small", time_scale=50_000
    )
    patient_id = handle.id.removeprefix("journey-")
    await _until(lambda: _has_row(pool, patient_id), 20, "the read-model row")
    row = await get_journey(pool, patient_id)
    assert row is not None and row.stage in {"scheduled", "session_due", "screening"}
    # The dispatcher sent the booking confirmation through the file channel.
    await _until(lambda: _exists(pool, _SENT), 20, "a sent notification")

    stop.set()
    await asyncio.wait_for(asyncio.gather(worker, dispatcher), 60)
    assert worker.exception() is None and dispatcher.exception() is None
    await handle.terminate("test over")


_SENT = "SELECT 1 FROM notification_outbox WHERE status = 'sent'"


async def _exists(pool: asyncpg.Pool, sql: str) -> bool:
    return bool(await pool.fetchval(sql))


async def _has_row(pool: asyncpg.Pool, patient_id: str) -> bool:
    return await get_journey(pool, patient_id) is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(
    importlib.util.find_spec("api.main") is None,
    reason="the HTTP API (api/main.py) is not there yet",
)
def test_journey_dev_starts_and_stops_on_ctrl_c() -> None:
    # Not under pytest's tmp_path: the embedded server's system user must traverse the folder.
    folder = Path(tempfile.mkdtemp(prefix="journey-dev-"))
    api_port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "TEMPORAL_"))}
    env.update(
        JOURNEY_DATA_DIR=str(folder / "data"),
        TEMPORAL_ADDRESS=f"127.0.0.1:{_free_port()}",
        TEMPORAL_UI_PORT=str(_free_port()),
        API_PORT=str(api_port),
    )
    process = subprocess.Popen(
        [str(JOURNEY), "dev"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        output: list[str] = []
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            output.append(line)
            if "journey dev is ready" in line:
                break
        assert any("journey dev is ready" in line for line in output), "".join(output)
        assert httpx.get(f"http://127.0.0.1:{api_port}/healthz", timeout=5).status_code == 200

        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=30)
        assert process.returncode == 0, "".join(output) + rest
        assert "Temporal dev server stopped" in rest
        assert (folder / "data" / "temporal.db").exists()  # kept for next time
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


# A protocol short enough for a whole journey in seconds at a large time_scale, with a long
# no-show grace so a session stays due while the worker restarts.
_FAST_CLINIC = {
    "clinic": {"clinic_id": "fast", "name": "Fast test clinic", "timezone": "UTC", "sandbox": True},
    "protocol": {
        "version": "fast-test",
        "min_interval_days": 14,
        "target_interval_min_days": 14,
        "target_interval_max_days": 14,
        "recovery_checkin_day": 2,
        "spf_months": 1,
        "review_months": 1,
        "no_show_grace_hours": 72,
        "booking_notice_days": 0,
    },
}


def _spawn_worker(settings: Settings) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(JOURNEY), "worker"],
        env=_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_worker_killed_mid_journey_loses_and_repeats_nothing(
    dev_env: WorkflowEnvironment, pg_dsn: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = _settings(dev_env, pg_dsn, tmp_path, f"tq-{uuid.uuid4()}")
    await upsert_clinic(pool, clinic_protocol_from_dict(_FAST_CLINIC))
    first = _spawn_worker(settings)
    second: subprocess.Popen[bytes] | None = None
    # Plays the booking system and the clinician from the read model (completions when due,
    # check-ins, the review), so nothing here queries the workflow while no worker runs.
    # Check-ins report no reaction: one sent while no worker runs is applied weeks later on
    # this clock, and an "expected" redness that late is a prolonged reaction (a pause).
    harness = DemoIntegration(
        dev_env.client,
        pool,
        Console(file=io.StringIO()),
        interval=0.05,
        checkin_reaction="none",
    )
    stop = asyncio.Event()
    driver = asyncio.create_task(harness.run(stop))
    try:
        handle = await _start_journey(
            dev_env.client,
            pool,
            settings,
            clinic_id="fast",
            pore_grade="small",
            time_scale=400_000,
            # The killed worker's workflow task is retried after this timeout (default 10 s).
            task_timeout=timedelta(seconds=2),
        )
        patient_id = handle.id.removeprefix("journey-")

        async def sessions_done(n: int) -> bool:
            row = await get_journey(pool, patient_id)
            return row is not None and row.sessions_done >= n

        await _until(lambda: sessions_done(1), 40, "session 1 done")
        first.send_signal(signal.SIGKILL)  # mid-journey: the worker is writing the next step
        assert first.wait(timeout=10) == -signal.SIGKILL
        second = _spawn_worker(settings)

        result = await asyncio.wait_for(handle.result(), 120)
        assert result.stage == "completed"
    finally:
        stop.set()
        await driver
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)

    wf_id = handle.id
    keys = await pool.fetch(
        "SELECT event_key, count(*) AS n FROM journey_events WHERE workflow_id = $1 "
        "GROUP BY event_key HAVING count(*) > 1",
        wf_id,
    )
    assert keys == []
    completed = await pool.fetchval(
        "SELECT count(*) FROM journey_events WHERE workflow_id = $1 AND kind = 'session_completed'",
        wf_id,
    )
    assert completed == 3
    # Nothing refused, and no fact kept as an anomaly (each was applied when sent).
    refused = await pool.fetchval(
        "SELECT count(*) FROM journey_events WHERE workflow_id = $1"
        " AND (kind LIKE '%refused%' OR kind = 'fact_kept')",
        wf_id,
    )
    assert refused == 0
    steps = await pool.fetchval(
        "SELECT max(step) FROM journey_events WHERE workflow_id = $1", wf_id
    )
    row = await get_journey(pool, patient_id)
    assert row is not None and row.stage == "completed" and row.version == steps
