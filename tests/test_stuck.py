"""Stuck journeys (issue 11, item 8): a journey whose workflow task keeps failing is listed by
``worker.stuck``, counted by the ``journeys_stuck`` gauge and shown on the dashboard's
"Stuck journeys" page, on a real Temporal dev server.

The broken journey is a test-only workflow registered as ``PatientJourney`` on its own task
queue (tests/broken_journey.py), run by a worker WITHOUT ``workflow_failure_exception_types``
so that its exception fails the workflow task and Temporal retries it, as a bug would.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.repository import create_staff_user
from api.main import create_app
from tests.broken_journey import BUG_MESSAGE, BrokenJourney
from tests.test_api import make_settings, serve
from tests.test_staff_sessions import login
from worker.binaries import temporal_cli
from worker.stuck import (
    StuckReport,
    find_stuck_journeys,
    refresh_journeys_stuck,
)
from worker.telemetry import Metrics
from workflows.ids import workflow_id

T = TypeVar("T")

# Consecutive failures before the server sets TemporalReportedProblems; the dev server's
# default is 5 (about a minute of retries), 2 keeps this test short.
PROBLEMS_THRESHOLD = 2


async def eventually(check: Callable[[], Awaitable[T | None]], deadline: float) -> T:
    """Poll ``check`` until it returns something truthy or ``deadline`` seconds pass."""
    end = time.monotonic() + deadline
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < end, "condition not reached before the deadline"
        await asyncio.sleep(0.2)


@asynccontextmanager
async def journeys(
    client: Client,
) -> AsyncIterator[tuple[WorkflowHandle[Any, Any], WorkflowHandle[Any, Any]]]:
    """A broken and a healthy ``PatientJourney`` on a worker of their own; both terminated
    at the end (a stuck workflow otherwise retries for the rest of the session)."""
    task_queue = f"tq-stuck-{uuid.uuid4()}"
    handles: list[WorkflowHandle[Any, Any]] = []
    async with Worker(client, task_queue=task_queue, workflows=[BrokenJourney]):
        try:
            for fail in (True, False):
                handles.append(
                    await client.start_workflow(
                        BrokenJourney.run,
                        fail,
                        id=workflow_id(f"stuck-{uuid.uuid4().hex[:12]}"),
                        task_queue=task_queue,
                    )
                )
            yield handles[0], handles[1]
        finally:
            for handle in handles:
                await handle.terminate("test over")


def listed(report: StuckReport, handle: WorkflowHandle[Any, Any]) -> bool:
    return any(j.workflow_id == handle.id for j in report.journeys)


async def test_scan_lists_a_journey_whose_workflow_task_keeps_failing(
    dev_env: WorkflowEnvironment,
) -> None:
    client = dev_env.client
    async with journeys(client) as (broken, healthy):

        async def found() -> StuckReport | None:
            report = await find_stuck_journeys(client, method="scan")
            return report if listed(report, broken) else None

        report = await eventually(found, deadline=60)
        assert report.method == "scan"
        assert not listed(report, healthy)
        stuck = next(j for j in report.journeys if j.workflow_id == broken.id)
        assert stuck.patient_id is not None and broken.id == workflow_id(stuck.patient_id)
        assert stuck.attempt is not None and stuck.attempt >= 2
        assert stuck.failure == BUG_MESSAGE
        assert stuck.since is not None


@pytest.fixture
async def problems_env() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server that flags workflows after 2 consecutive workflow task failures."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()),
        dev_server_extra_args=[
            "--dynamic-config-value",
            "system.numConsecutiveWorkflowTaskProblemsToTriggerSearchAttribute="
            f"{PROBLEMS_THRESHOLD}",
        ],
    )
    try:
        yield env
    finally:
        await env.shutdown()


def _gauge(reader: InMemoryMetricReader, name: str) -> list[Any] | None:
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else []:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == name:
                    return [getattr(p, "value", None) for p in metric.data.data_points]
    return None


async def test_reported_problems_feed_the_gauge_and_the_stuck_page(
    problems_env: WorkflowEnvironment, pg_pool: asyncpg.Pool, pg_dsn: str
) -> None:
    client = problems_env.client
    reader = InMemoryMetricReader()
    metrics = Metrics(MeterProvider(metric_readers=[reader]).get_meter("tests"))
    async with journeys(client) as (broken, healthy):

        async def found() -> StuckReport | None:
            report = await find_stuck_journeys(client)  # the server's own flag
            return report if listed(report, broken) else None

        report = await eventually(found, deadline=90)
        assert report.method == "reported_problems"
        assert not listed(report, healthy)
        stuck = next(j for j in report.journeys if j.workflow_id == broken.id)
        assert "category=WorkflowTaskFailed" in stuck.problems
        assert stuck.failure == BUG_MESSAGE
        assert stuck.patient_id is not None

        # The gauge, refreshed the way the worker does it.
        stop = asyncio.Event()
        refresher = asyncio.create_task(
            refresh_journeys_stuck(client, stop, metrics=metrics, interval=0.2)
        )
        try:

            async def counted() -> bool:
                return _gauge(reader, "journeys_stuck") == [1]

            await eventually(counted, deadline=30)
        finally:
            stop.set()
            await refresher

        # The dashboard page lists it with a link to the journey page.
        # The stuck journeys are a report (issue 16: reports.view, a manager's).
        _, token = await create_staff_user(pg_pool, "Mia Manager", "manager")
        app = create_app(
            make_settings(
                database_url=pg_dsn,
                temporal_address=client.service_client.config.target_host,
            )
        )
        async with serve(app) as http:
            assert (await login(http, token)).status_code == 303
            page = await http.get("/stuck")
            assert page.status_code == 200
            assert f'href="/journeys/{stuck.patient_id}"' in page.text
            assert BUG_MESSAGE in page.text
            assert healthy.id.removeprefix("journey-") not in page.text
            assert 'href="/stuck"' in (await http.get("/journeys")).text  # in the navigation
