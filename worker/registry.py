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
    # Only its activity definitions are referenced (typed activity calls); asyncpg is not
    # used inside the sandbox.
    "activities.store",
    "asyncpg",
)


# The journey's own modules (workflows/journey/: the workflow class and a module per stage;
# functions over the state and the workflow API, no module state). Re-imported in the sandbox
# for every run, each cached journey carried its own copy of them: measured with `make bench`
# (docs/performance.md), worker memory per idle journey 414 KB (3.3x the bare journey), 242 KB
# with the stage modules shared, 157 KB (1.1x) with the workflow module shared too, and a module
# execution less per cache miss. Production shares them; the tests run the strict sandbox
# (``strict=True``), which re-imports them per run so its restrictions still check this code.
JOURNEY_MODULES = (
    "workflows.journey",
    "workflows.journey.aftercare",
    "workflows.journey.effects",
    "workflows.journey.facts",
    "workflows.journey.planning",
    "workflows.journey.recovery",
    "workflows.journey.screening",
    "workflows.journey.sessions",
    "workflows.journey.workflow",
)


def workflow_runner(*, strict: bool = False) -> SandboxedWorkflowRunner:
    """The sandbox with our pure modules passed through, and the journey's own modules unless
    ``strict`` (see :data:`JOURNEY_MODULES`)."""
    modules = PASSTHROUGH_MODULES if strict else (*PASSTHROUGH_MODULES, *JOURNEY_MODULES)
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*modules)
    )


# Longer than the longest activity (a database write: ACTIVITY_TIMEOUT), so a deploy finishes
# in-flight work; Kubernetes' grace period is longer still (deploy/README.md).
GRACEFUL_SHUTDOWN = timedelta(seconds=45)


def build_worker(
    client: Client,
    task_queue: str,
    activities: Sequence[Callable[..., Any]],
    *,
    strict_sandbox: bool = False,
    **options: Any,
) -> Worker:
    """A worker for the journey task queue with the given activities (``strict_sandbox``:
    the tests' sandbox, see :func:`workflow_runner`)."""
    return Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=list(activities),
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        workflow_runner=workflow_runner(strict=strict_sandbox),
        **options,
    )
