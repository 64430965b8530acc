"""Stuck journeys: open ``PatientJourney`` runs whose workflow task keeps failing.

A bug in workflow code (an exception that is not an ``ApplicationError``, a value that
overflows a date) fails the workflow task, and Temporal retries it forever: the journey does
not fail, it silently stops moving, and its queries answer "Workflow Task in failed state".
This module finds such journeys for the ``journeys_stuck`` gauge and the dashboard's
"Stuck journeys" page.

Two ways, chosen per call from the namespace's capabilities:

- ``reported_problems``: Temporal Server 1.28+ sets the system search attribute
  ``TemporalReportedProblems`` (``category=WorkflowTaskFailed`` / ``WorkflowTaskTimedOut``)
  after N consecutive workflow task problems and clears it on the next success. One visibility
  query finds them all. Self-hosted servers (and ``temporal server start-dev``) only do this
  when the dynamic config ``system.numConsecutiveWorkflowTaskProblemsToTriggerSearchAttribute``
  is set above 0; the namespace then reports the ``reported_problems_search_attribute``
  capability.
- ``scan``: otherwise, list open journeys (newest first) and describe each, flagging those
  whose pending workflow task is on attempt 2 or more. Bounded: at most ``scan_limit``
  journeys per call; :attr:`StuckReport.complete` is False when there were more.

Only ids, times and the failure message (from workflow code, not from payloads) are read: no
PHI. Lists and dashboards otherwise read the PostgreSQL read model; this is the one page that
asks Temporal, because a stuck journey's read model is, by definition, not being updated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflow.v1 import PendingWorkflowTaskInfo
from temporalio.api.workflowservice.v1 import (
    DescribeNamespaceRequest,
    DescribeWorkflowExecutionRequest,
    GetWorkflowExecutionHistoryReverseRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode

from worker.telemetry import Metrics, get_metrics
from workflows.ids import WORKFLOW_TYPE, patient_id_from_workflow_id

__all__ = [
    "OPEN_JOURNEYS_QUERY",
    "REPORTED_PROBLEMS",
    "REPORTED_PROBLEMS_QUERY",
    "SCAN_LIMIT",
    "STUCK_ATTEMPT",
    "StuckJourney",
    "StuckReport",
    "find_stuck_journeys",
    "refresh_journeys_stuck",
    "reported_problems_enabled",
]

logger = logging.getLogger(__name__)

REPORTED_PROBLEMS = SearchAttributeKey.for_keyword_list("TemporalReportedProblems")
OPEN_JOURNEYS_QUERY = f"WorkflowType = '{WORKFLOW_TYPE}' AND ExecutionStatus = 'Running'"
REPORTED_PROBLEMS_QUERY = f"{OPEN_JOURNEYS_QUERY} AND TemporalReportedProblems IS NOT NULL"
# A pending workflow task on attempt 2 has failed (or timed out) at least once in a row.
STUCK_ATTEMPT = 2
# Describes per call when the server does not flag problems itself (about 10 ms each).
SCAN_LIMIT = 200
# Describes in flight at once during a scan: enough to finish 200 in well under a second,
# few enough not to crowd the frontend.
SCAN_CONCURRENCY = 8
# Newest history events read to find the workflow task failure (its message and time).
HISTORY_TAIL = 20
RPC_TIMEOUT = timedelta(seconds=10)
# How often the worker re-counts stuck journeys for the gauge.
STUCK_REFRESH_INTERVAL_SECONDS = 60.0

Method = Literal["reported_problems", "scan"]


@dataclass(frozen=True)
class StuckJourney:
    """One journey whose workflow task keeps failing."""

    workflow_id: str
    run_id: str
    patient_id: str | None
    """None for a workflow id that is not ``journey-<patient id>``."""
    since: datetime | None
    """When the failing workflow task first failed (or was first scheduled)."""
    attempt: int | None
    """The pending workflow task's attempt (0 when unknown)."""
    failure: str | None
    """The last recorded workflow task failure message, when the history has it."""
    problems: tuple[str, ...] = ()
    """``TemporalReportedProblems`` values (``category=…``, ``cause=…``), when set."""


@dataclass(frozen=True)
class StuckReport:
    """What :func:`find_stuck_journeys` found and how."""

    journeys: list[StuckJourney]
    method: Method
    checked: int
    """Journeys looked at (listed by the query, or described by the scan)."""
    complete: bool
    """False when more journeys matched than the limit allowed to check."""


async def reported_problems_enabled(
    client: Client, *, rpc_timeout: timedelta = RPC_TIMEOUT
) -> bool:
    """True when the server flags workflow task problems in ``TemporalReportedProblems`` for
    this namespace (Server 1.28+ with the dynamic config above 0)."""
    response = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=client.namespace), timeout=rpc_timeout
    )
    return bool(response.namespace_info.capabilities.reported_problems_search_attribute)


async def find_stuck_journeys(
    client: Client,
    *,
    limit: int = SCAN_LIMIT,
    method: Method | None = None,
    rpc_timeout: timedelta = RPC_TIMEOUT,
) -> StuckReport:
    """Open journeys whose workflow task keeps failing, oldest failure first.

    Args:
        client: A connected client of the journeys' namespace.
        limit: At most this many journeys listed (``reported_problems``) or described
            (``scan``).
        method: Force a method; None picks ``reported_problems`` when the namespace has the
            capability, else ``scan``.
        rpc_timeout: Deadline of each RPC.

    Raises:
        temporalio.service.RPCError: Temporal refused or could not be reached.
    """
    if method is None:
        method = (
            "reported_problems"
            if await reported_problems_enabled(client, rpc_timeout=rpc_timeout)
            else "scan"
        )
    query = REPORTED_PROBLEMS_QUERY if method == "reported_problems" else OPEN_JOURNEYS_QUERY
    listed: list[tuple[str, str, tuple[str, ...]]] = []
    more = False
    async for execution in client.list_workflows(
        query, limit=limit + 1, page_size=min(limit + 1, 1000), rpc_timeout=rpc_timeout
    ):
        if len(listed) == limit:
            more = True
            break
        problems = tuple(execution.typed_search_attributes.get(REPORTED_PROBLEMS) or ())
        listed.append((execution.id, execution.run_id, problems))

    gate = asyncio.Semaphore(SCAN_CONCURRENCY)

    async def check(wf_id: str, run_id: str, problems: tuple[str, ...]) -> StuckJourney | None:
        async with gate:
            try:
                pending = await _pending_task(client, wf_id, run_id, rpc_timeout)
                attempt = pending.attempt if pending is not None else 0
                if method == "scan" and attempt < STUCK_ATTEMPT:
                    return None
                failure, failed_at = await _last_task_failure(client, wf_id, run_id, rpc_timeout)
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:
                    return None  # closed (or its retention passed) since it was listed
                raise
        since = failed_at
        if since is None and pending is not None and pending.HasField("original_scheduled_time"):
            since = pending.original_scheduled_time.ToDatetime().astimezone()
        patient_id: str | None
        try:
            patient_id = patient_id_from_workflow_id(wf_id)
        except ValueError:
            patient_id = None
        return StuckJourney(wf_id, run_id, patient_id, since, attempt, failure, problems)

    found = await asyncio.gather(*(check(*item) for item in listed))
    journeys = [j for j in found if j is not None]
    journeys.sort(key=lambda j: (j.since is None, j.since or datetime.min, j.workflow_id))
    return StuckReport(journeys, method, len(listed), not more)


async def _pending_task(
    client: Client, wf_id: str, run_id: str, rpc_timeout: timedelta
) -> PendingWorkflowTaskInfo | None:
    response = await client.workflow_service.describe_workflow_execution(
        DescribeWorkflowExecutionRequest(
            namespace=client.namespace,
            execution=WorkflowExecution(workflow_id=wf_id, run_id=run_id),
        ),
        timeout=rpc_timeout,
    )
    return response.pending_workflow_task if response.HasField("pending_workflow_task") else None


async def _last_task_failure(
    client: Client, wf_id: str, run_id: str, rpc_timeout: timedelta
) -> tuple[str | None, datetime | None]:
    """The message and time of the newest ``WorkflowTaskFailed`` event among the last
    :data:`HISTORY_TAIL` events.

    Only the first failure of a run of retries is written to the history (later attempts are
    transient), so its time is when the journey got stuck.
    """
    response = await client.workflow_service.get_workflow_execution_history_reverse(
        GetWorkflowExecutionHistoryReverseRequest(
            namespace=client.namespace,
            execution=WorkflowExecution(workflow_id=wf_id, run_id=run_id),
            maximum_page_size=HISTORY_TAIL,
        ),
        timeout=rpc_timeout,
    )
    for event in response.history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            attrs = event.workflow_task_failed_event_attributes
            message = attrs.failure.message if attrs.HasField("failure") else None
            return (message or None), event.event_time.ToDatetime().astimezone()
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            break  # a task succeeded after any older failure: that one is not why it is stuck
    return None, None


async def refresh_journeys_stuck(
    client: Client,
    stop: asyncio.Event,
    *,
    metrics: Metrics | None = None,
    interval: float = STUCK_REFRESH_INTERVAL_SECONDS,
    limit: int = SCAN_LIMIT,
) -> None:
    """Feed the ``journeys_stuck`` gauge every ``interval`` until ``stop`` is set.

    Like ``refresh_journeys_by_stage``: the count is taken on the event loop and handed to the
    gauge as a snapshot; a failed round keeps the last value and is retried next time.
    """
    target = metrics or get_metrics()
    while not stop.is_set():
        try:
            report = await find_stuck_journeys(client, limit=limit)
            target.update_journeys_stuck(len(report.journeys))
            if report.journeys:
                logger.warning(
                    "%d stuck journey(s): workflow tasks failing",
                    len(report.journeys),
                    extra={"workflow_ids": [j.workflow_id for j in report.journeys[:20]]},
                )
            if not report.complete:
                logger.warning(
                    "stuck journeys: only %d open journeys checked (%s); enable "
                    "system.numConsecutiveWorkflowTaskProblemsToTriggerSearchAttribute",
                    report.checked,
                    report.method,
                )
        except Exception as error:  # an outage must not end the loop; the next round retries
            logger.warning("stuck journeys not counted: %s", type(error).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
