"""Schemathesis over the whole OpenAPI document against the real app (issue 12).

The app runs under uvicorn with its lifespan, on a fresh PostgreSQL database, against the
Temporal dev server with a real worker; one journey is enrolled first so the patient
endpoints have something to read. ``schemathesis run`` (the CLI, in a subprocess, so the
worker and the server keep running in this loop) drives every operation with every check
(``--checks all``) twice: as an admin (staff and integration routes) and with that journey's
patient link (``/api/me``). The test asserts:

* 0 server errors (``not_a_server_error``: no 5xx other than the documented 503s of an
  unavailable dependency; none is expected with the stack up);
* 0 schema violations: responses match their documented schema, status codes, content types
  and headers (``response_schema_conformance``, ``status_code_conformance``,
  ``content_type_conformance``, ``response_headers_conformance``).

Other checks (``positive_data_acceptance``, ``negative_data_rejection``, ``ignored_auth``,
…) also run and are printed with their counts; the domain refuses schema-valid requests on
purpose (an unknown clinic is a 422, a refused update a 409), so they are reported, not
asserted. ``FUZZ_MAX_EXAMPLES`` (default 5, a few tens of seconds) and ``FUZZ_PHASES`` set the
size: ``make fuzz`` runs the long version.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities import repository
from activities.store import build_activities
from api.main import create_app
from tests.fixtures_temporal import new_worker
from tests.test_api import FAST_PROTOCOL, SECRETS, enrol_body
from worker.client import connect_client
from worker.codec import generate_key
from worker.settings import Settings

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "5"))
PHASES = os.environ.get("FUZZ_PHASES", "examples,coverage,fuzzing")
SEED = os.environ.get("FUZZ_SEED", "20261130")
# What the test asserts on; every other check runs and is reported.
ASSERTED = frozenset(
    {
        "not_a_server_error",
        "response_schema_conformance",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
    }
)

pytestmark = pytest.mark.skipif(
    not SCHEMATHESIS.exists(), reason="schemathesis is not installed (make install)"
)


@dataclass
class Api:
    base: str
    admin: str
    patient_link_token: str
    workflow_id: str
    client: Client


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def api(
    dev_env: WorkflowEnvironment, pg_pool: asyncpg.Pool, pg_dsn: str
) -> AsyncIterator[Api]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    task_queue = f"tq-{uuid.uuid4()}"
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        journey_env="test",
        temporal_address=dev_env.client.service_client.config.target_host,
        temporal_task_queue=task_queue,
        database_url=pg_dsn,
        journey_public_url=base,
        journey_integration_secrets=SECRETS,
        journey_codec_keys=f"k1:{generate_key()}",  # the codec endpoint as deployed
    )
    await repository.upsert_clinic(pg_pool, FAST_PROTOCOL)
    _, admin = await repository.create_staff_user(pg_pool, "Fuzz Admin", "admin")
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="error")
    )
    serving = asyncio.create_task(server.serve())
    try:
        # The worker decrypts what the API encrypts: the same codec, from the same settings.
        client = await connect_client(settings)
        async with new_worker(client, build_activities(pg_pool), task_queue=task_queue):
            while not server.started:
                assert not serving.done(), "uvicorn did not start"
                await asyncio.sleep(0.02)
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                r = await http.post(
                    "/api/journeys",
                    json=enrol_body(),
                    headers={"Authorization": f"Bearer {admin}"},
                )
                assert r.status_code == 201, r.text
                link = r.json()["patient_link"]
            yield Api(base, admin, link.rsplit("/", 1)[-1], r.json()["workflow_id"], client)
    finally:
        server.should_exit = True
        await serving


async def _schemathesis(api: Api, token: str, report: Path, *filters: str) -> dict[str, Any]:
    """Run the CLI against the live app; returns the parsed NDJSON events' summary."""
    args = [
        str(SCHEMATHESIS),
        "run",
        f"{api.base}/openapi.json",
        "--checks",
        "all",
        "--phases",
        PHASES,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        SEED,
        "--workers",
        "1",
        "--no-shrink",
        "--suppress-health-check",
        "all",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
        "--header",
        f"Authorization: Bearer {token}",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
        "--no-color",
        *filters,
    ]
    process = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    output, _ = await process.communicate()
    return summarise(report, output.decode(errors="replace"))


def summarise(report: Path, output: str) -> dict[str, Any]:
    """Requests, operations and failures by check from schemathesis' NDJSON events."""
    requests = 0
    operations: set[str] = set()
    failures: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for line in report.read_text().splitlines():
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if not finished:
            continue
        recorder = finished.get("recorder") or {}
        label = recorder.get("label") or finished.get("label") or "?"
        operations.add(label)
        cases = recorder.get("cases") or {}
        interactions = recorder.get("interactions") or {}
        requests += len(interactions)
        for checks in (recorder.get("checks") or {}).values():
            for check in checks:
                if str(check.get("status", "")).lower() == "failure":
                    failures[check["name"]] += 1
                    examples.setdefault(
                        check["name"],
                        f"{label}: {json.dumps(check.get('failure_info') or {}, default=str)[:600]}",
                    )
        del cases
    return {
        "requests": requests,
        "operations": sorted(operations),
        "failures": dict(failures),
        "examples": examples,
        "output_tail": output[-3000:],
    }


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    api: Api, tmp_path: Path
) -> None:
    staff = await _schemathesis(
        api, api.admin, tmp_path / "staff.ndjson", "--exclude-path-regex", "^/api/me"
    )
    patient = await _schemathesis(
        api, api.patient_link_token, tmp_path / "patient.ndjson", "--include-path-regex", "^/api/me"
    )
    broken = await _failed_workflow_tasks(api)
    assert not broken, broken
    for name, run in (("staff", staff), ("patient", patient)):
        print(  # the figures for the closing note (pytest -s)
            f"schemathesis {name}: {run['requests']} requests, "
            f"{len(run['operations'])} operations, failures by check: {run['failures']}"
        )
        assert run["requests"] > 0, run["output_tail"]
        asserted = {k: v for k, v in run["failures"].items() if k in ASSERTED}
        assert not asserted, (asserted, run["examples"], run["output_tail"])


async def _failed_workflow_tasks(api: Api) -> list[str]:
    """The failures of the enrolled journey's workflow tasks: none may have failed (a poison
    input leaves a journey retrying its task forever, and its queries time out)."""
    from temporalio.api.enums.v1 import EventType

    handle = api.client.get_workflow_handle(api.workflow_id)
    failures: list[str] = []
    kinds: Counter[str] = Counter()
    async for event in handle.fetch_history_events():
        kinds[EventType.Name(event.event_type)] += 1
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            failures.append(event.workflow_task_failed_event_attributes.failure.message)
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            failures.append(event.workflow_execution_failed_event_attributes.failure.message)
    print("journey history:", sum(kinds.values()), "events", dict(kinds))
    return failures
