"""One trace per request on the real stack, and spans printed by a real process.

* An enrolment (``POST /api/journeys``) against the Temporal dev server, a worker with the real
  activities on a fresh PostgreSQL database and the FastAPI app (as ``tests/test_api.py`` runs
  them) yields ONE trace: the API's server span → ``StartWorkflow`` → ``RunWorkflow`` and
  ``StartActivity:record_step`` → ``RunActivity:record_step`` → the activity's SQL (asyncpg).
  No span attribute anywhere holds the patient's name, e-mail, phone or link token.
* uvicorn's access log (routed through ``configure_logging``) loses link tokens and queries.
* ``journey worker`` with ``OTEL_TRACES_EXPORTER=console`` prints its spans (with
  ``service.name=worker``) on standard output, as ``make run``-style processes do.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities import repository
from activities.store import build_activities
from api.main import create_app
from tests.fixtures_temporal import new_worker
from tests.test_api import FAST_PROTOCOL, make_settings, serve
from worker.logging_setup import configure_logging
from worker.telemetry import instrument_asyncpg, setup_tracing, temporal_interceptors

JOURNEY = Path(sys.executable).with_name("journey")
PATIENT = {
    "full_name": "Rosalind Tracewell",
    "email": "rosalind.tracewell@example.com",
    "phone": "+44 7700 900461",
}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """An in-memory exporter on the process's tracer provider, with asyncpg instrumented.

    Afterwards the exporter is shut down (it stops keeping spans of later tests) and asyncpg
    is uninstrumented again if this fixture instrumented it.
    """
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    exporter = InMemorySpanExporter()
    setup_tracing("test", exporter=exporter)
    # The instrumentor is a singleton; its constructor is untyped upstream.
    instrumentor = AsyncPGInstrumentor.__new__(AsyncPGInstrumentor)
    already = instrumentor.is_instrumented_by_opentelemetry
    instrument_asyncpg()
    try:
        yield exporter
    finally:
        exporter.shutdown()
        if not already:
            instrumentor.uninstrument()


@pytest.fixture
async def traced_stack(
    dev_env: WorkflowEnvironment, pg_pool: asyncpg.Pool, pg_dsn: str, spans: InMemorySpanExporter
) -> AsyncIterator[tuple[Any, str]]:
    """The API (whose client carries the tracing interceptor, as in production) and a worker
    on a client with the interceptor; yields the HTTP client and an admin token."""
    task_queue = f"tq-{uuid.uuid4()}"
    settings = make_settings(
        temporal_address=dev_env.client.service_client.config.target_host,
        temporal_task_queue=task_queue,
        database_url=pg_dsn,
    )
    await repository.upsert_clinic(pg_pool, FAST_PROTOCOL)
    _, admin = await repository.create_staff_user(pg_pool, "Ada Admin", "admin")
    # The worker inherits the client's interceptors (TracingInterceptor is both kinds).
    client = Client(**{**dev_env.client.config(), "interceptors": temporal_interceptors()})
    async with (
        new_worker(client, build_activities(pg_pool), task_queue=task_queue),
        serve(create_app(settings)) as http,
    ):
        yield http, admin


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _one(chain: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in chain if s.name == name]
    assert len(found) == 1, f"{name}: {sorted(s.name for s in chain)}"
    return found[0]


def _statement(span: ReadableSpan) -> str:
    """The span's SQL on one line ("" for a span that is not SQL)."""
    return " ".join(str((span.attributes or {}).get("db.statement", "")).split())


def _tree(chain: list[ReadableSpan]) -> str:
    """The trace as an indented tree (start order), for failure messages and the docs."""
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in sorted(chain, key=lambda s: s.start_time or 0):
        children.setdefault(_parent(span), []).append(span)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for span in children.get(parent, []):
            statement = _statement(span)
            detail = f"  [{statement[:60]}]" if statement else ""
            lines.append(f"{'  ' * depth}{span.name}{detail}")
            walk(span.context.span_id, depth + 1)

    walk(None, 0)
    return "\n".join(lines)


def _values(span: ReadableSpan) -> list[str]:
    """Every attribute value of the span and of its events, as text."""
    values = [str(v) for v in (span.attributes or {}).values()]
    for event in span.events:
        values += [str(v) for v in (event.attributes or {}).values()]
    return [*values, span.name]


async def test_enrolment_is_one_trace_from_http_to_sql_without_phi(
    traced_stack: tuple[Any, str], spans: InMemorySpanExporter
) -> None:
    http, admin = traced_stack
    started = time.monotonic()
    response = await http.post(
        "/api/journeys",
        json={
            "patient": PATIENT,
            "pore_grade": "moderate",
            "clinic_id": FAST_PROTOCOL.clinic.clinic_id,
        },
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert response.status_code == 201, response.text
    enrolled = response.json()
    link_token = enrolled["patient_link"].rsplit("/", 1)[-1]

    server = next(
        s
        for s in spans.get_finished_spans()
        if s.kind == trace.SpanKind.SERVER and s.name == "POST /api/journeys"
    )
    trace_id = server.context.trace_id

    def chain() -> list[ReadableSpan]:
        return [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]

    def sql_under_record_step() -> list[tuple[ReadableSpan, ReadableSpan]]:
        found = chain()
        runs = {s.context.span_id: s for s in found if s.name == "RunActivity:record_step"}
        return [
            (runs[p], s)
            for s in found
            if (p := _parent(s)) in runs and _statement(s).startswith("INSERT INTO journey_steps")
        ]

    # The workflow's first step is written by an activity a moment after the 201.
    deadline = time.monotonic() + 15
    while not sql_under_record_step():
        assert time.monotonic() < deadline, _tree(chain())
        await asyncio.sleep(0.05)

    spans_of_trace = chain()
    print(_tree(spans_of_trace))  # shown with ``pytest -s``: the tree in docs/observability.md
    start = _one(spans_of_trace, "StartWorkflow:PatientJourney")
    run = _one(spans_of_trace, "RunWorkflow:PatientJourney")
    run_activity, sql = sql_under_record_step()[0]
    start_activity = next(s for s in spans_of_trace if s.context.span_id == _parent(run_activity))
    assert _parent(server) is None
    assert server.resource.attributes.get("service.name")  # whatever the first set-up named
    assert _parent(start) == server.context.span_id
    # TracingInterceptor ends workflow spans at once (replay-safe): the workflow task and the
    # activity it schedules hang off the client's StartWorkflow span.
    assert _parent(run) == start.context.span_id
    assert start_activity.name == "StartActivity:record_step"
    assert _parent(start_activity) == start.context.span_id
    assert sql.kind == trace.SpanKind.CLIENT
    assert (sql.attributes or {}).get("db.system") == "postgresql"
    # The statement keeps its placeholders: parameter values (patients' data) are not captured.
    assert "$1" in str((sql.attributes or {}).get("db.statement"))
    assert (start.attributes or {}).get("temporalWorkflowID") == enrolled["workflow_id"]

    # Server spans carry the route template, never the concrete path (tokens live in paths).
    assert (server.attributes or {}).get("http.target") == "/api/journeys"
    await http.get(f"/p/{link_token}")  # the patient's page: its token is in the path

    # No PHI in any span of the process (this trace and anything else recorded meanwhile).
    phi = [PATIENT["full_name"], *PATIENT["full_name"].split(), PATIENT["email"], link_token]
    phi += [PATIENT["phone"], PATIENT["phone"].replace(" ", "")]
    everything = [v for s in spans.get_finished_spans() for v in _values(s)]
    leaks = [(secret, v) for secret in phi for v in everything if secret.lower() in v.lower()]
    assert not leaks, leaks
    assert time.monotonic() - started < 15


# ---------------------------------------------------------------- a real process prints spans


def test_worker_process_prints_spans_with_the_console_exporter(
    dev_env: WorkflowEnvironment, pg_dsn: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DATABASE_"))}
    env.update(
        OTEL_TRACES_EXPORTER="console",
        TEMPORAL_ADDRESS=dev_env.client.service_client.config.target_host,
        TEMPORAL_TASK_QUEUE=f"tq-{uuid.uuid4()}",
        DATABASE_URL=pg_dsn,
        JOURNEY_DATA_DIR=str(tmp_path),
        LOG_LEVEL="INFO",
    )
    stderr_file = tmp_path / "worker.err"
    with stderr_file.open("wb") as err:
        worker = subprocess.Popen(
            [str(JOURNEY), "worker"], env=env, stdout=subprocess.PIPE, stderr=err
        )
    try:
        deadline = time.monotonic() + 30
        while "worker polling" not in stderr_file.read_text(errors="replace"):
            assert worker.poll() is None, stderr_file.read_text(errors="replace")
            assert time.monotonic() < deadline, stderr_file.read_text(errors="replace")
            time.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, stderr_file.read_text(errors="replace")
    text = out.decode()
    # ConsoleSpanExporter prints one indented JSON object per span.
    decoder = json.JSONDecoder()
    printed: list[dict[str, Any]] = []
    index = 0
    while (start := text.find("{", index)) != -1:
        span, index = decoder.raw_decode(text, start)
        printed.append(span)
    assert printed, text
    assert {s["resource"]["attributes"]["service.name"] for s in printed} == {"worker"}
    # Start-up SQL (migrations check, default clinic) is traced through asyncpg.
    assert any(s["attributes"].get("db.system") == "postgresql" for s in printed), printed
    # The log lines went to standard error as JSON, stamped with the service name.
    first_log = json.loads(stderr_file.read_text().splitlines()[0])
    assert first_log["service"] == "worker"


# ---------------------------------------------------------------- access logs


def test_access_log_paths_lose_patient_tokens_and_queries() -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.StringIO()
    configure_logging("api", "INFO", stream=buffer, json_lines=True)
    try:
        access = logging.getLogger("uvicorn.access")
        # uvicorn's own call: (client, method, path with query, http version, status).
        for path in (
            "/p/SECRET-TOKEN",
            "/p/SECRET-TOKEN/checkin?x=1",
            "/api/journeys?token=SECRET",
        ):
            access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", path, "1.1", 200)
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    messages = [json.loads(line)["message"] for line in buffer.getvalue().splitlines()]
    assert messages == [
        '127.0.0.1:5 - "GET /p/{token} HTTP/1.1" 200',
        '127.0.0.1:5 - "GET /p/{token}/checkin HTTP/1.1" 200',
        '127.0.0.1:5 - "GET /api/journeys HTTP/1.1" 200',
    ]
