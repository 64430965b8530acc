"""What a journey worker runs: the workflows, and how it is built (shared by worker, tests and
the replayer, so they cannot drift apart)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from workflows.journey import PatientJourney

WORKFLOWS: list[type] = [PatientJourney]

# Pure, deterministic modules the sandbox may share instead of re-importing them for every
# workflow run (TEMPORAL-NOTES: re-imports are slow, and zoneinfo is restricted by default).
PASSTHROUGH_MODULES = (
    "zoneinfo",
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "workflows.bounds",
    "workflows.calendar",
    "workflows.changes",
    "workflows.clock",
    "workflows.guards",
    "workflows.ids",
    "workflows.journey.state",
    "workflows.messages",
    "workflows.planner",
    "workflows.protocol",
    "workflows.reasons",
    "workflows.records",
    "workflows.screening",
    "workflows.screening_rules",
    "workflows.season",
    # The journey's stage modules: functions over the state and the workflow API, no module
    # state (registries of constants only). Re-imported per run they cost every journey its
    # own copy in the worker's memory and a module execution on every cache miss (issue 13:
    # 3.3x the bare journey's memory per idle journey, 1.75x its worker CPU). The workflow
    # class's own module, workflows.journey.workflow, is still imported in the sandbox.
    "workflows.journey.aftercare",
    "workflows.journey.effects",
    "workflows.journey.facts",
    "workflows.journey.planning",
    "workflows.journey.recovery",
    "workflows.journey.screening",
    "workflows.journey.sessions",
    # Only its activity definitions are referenced (typed activity calls); asyncpg is not
    # used inside the sandbox.
    "activities.store",
    "asyncpg",
)


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox with our pure modules passed through."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
    )


# Longer than the longest activity (a database write: ACTIVITY_TIMEOUT), so a deploy finishes
# in-flight work; Kubernetes' grace period is longer still (deploy/README.md).
GRACEFUL_SHUTDOWN = timedelta(seconds=45)


def build_worker(
    client: Client,
    task_queue: str,
    activities: Sequence[Callable[..., Any]],
    **options: Any,
) -> Worker:
    """A worker for the journey task queue with the given activities."""
    return Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=list(activities),
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        workflow_runner=workflow_runner(),
        **options,
    )
