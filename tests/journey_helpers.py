"""Drive a PatientJourney in the time-skipping server: move the clock to the journey's next
action, check the stage by query, then send the fact or request (TEMPORAL-NOTES: never await a
result while the workflow waits for a signal)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import WorkflowHandle, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from workflows.journey import PatientJourney
from workflows.messages import (
    JourneyStatus,
    RecoveryCheckinSignal,
    SessionCompletedSignal,
)


async def status(handle: WorkflowHandle[PatientJourney, JourneyStatus]) -> JourneyStatus:
    return await handle.query(PatientJourney.get_status)


async def eventually(
    handle: WorkflowHandle[PatientJourney, JourneyStatus],
    check: Callable[[JourneyStatus], bool],
    *,
    timeout: float = 10.0,
) -> JourneyStatus:
    """Poll the status (no time skipping) until ``check`` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            st = await status(handle)
        except RPCError:
            # A query right after continue-as-new can time out while the new run's first
            # workflow task is still queued on a loaded machine: ask again.
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)
            continue
        if check(st):
            return st
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"condition not reached; last status: {st.model_dump_json(indent=1)}"
            )
        await asyncio.sleep(0.02)


async def settle(handle: WorkflowHandle[Any, Any], *, timeout: float = 10.0) -> None:
    """Wait until the workflow has no workflow task or activity in flight."""
    deadline = asyncio.get_running_loop().time() + timeout
    quiet = 0
    while quiet < 2:
        # The raw RPC: the SDK's describe() cannot decode the test server's Datetime attributes.
        desc = await handle._client.workflow_service.describe_workflow_execution(
            DescribeWorkflowExecutionRequest(
                namespace=handle._client.namespace,
                execution=WorkflowExecution(workflow_id=handle.id),
            )
        )
        busy = bool(desc.pending_activities) or desc.HasField("pending_workflow_task")
        quiet = 0 if busy else quiet + 1
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("workflow never settled")
        await asyncio.sleep(0.02)


async def update(
    handle: WorkflowHandle[PatientJourney, JourneyStatus],
    method: Any,
    arg: Any,
    *,
    attempts: int = 10,
) -> Any:
    """Execute an update, retrying its RPC with the same update id.

    The Java time-skipping server now and then drops an update that arrives while a workflow
    task is in flight; a retry with the same id is safe (the server deduplicates by id).
    """
    await settle(handle)
    update_id = str(uuid.uuid4())
    for attempt in range(attempts):
        try:
            return await handle.execute_update(
                method, arg, id=update_id, rpc_timeout=timedelta(seconds=2)
            )
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


async def advance_to(env: WorkflowEnvironment, when: datetime) -> None:
    """Skip the test server's clock to ``when`` (no-op if it is already later)."""
    delta = when - await env.get_current_time()
    if delta > timedelta(0):
        await env.sleep(delta)


async def advance_until_stage(
    env: WorkflowEnvironment,
    handle: WorkflowHandle[PatientJourney, JourneyStatus],
    stages: set[str],
    *,
    max_hops: int = 60,
) -> JourneyStatus:
    """Hop from next action to next action until the journey is in one of ``stages``."""
    for _ in range(max_hops):
        st = await eventually(
            handle, lambda s: s.stage in stages or s.next_action_at is not None, timeout=5
        )
        if st.stage in stages:
            return st
        assert st.next_action_at is not None
        await advance_to(env, st.next_action_at + timedelta(seconds=1))
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached {stages}; last stage {st.stage}")


async def complete_session(
    env: WorkflowEnvironment,
    handle: WorkflowHandle[PatientJourney, JourneyStatus],
    number: int,
    *,
    checkin: str | None = "expected",
) -> JourneyStatus:
    """Run session ``number`` on its planned day: due → completed → recovery check-in."""
    st = await advance_until_stage(env, handle, {"session_due"})
    session = st.sessions[number - 1]
    assert session.number == number and session.starts_at is not None
    await advance_to(env, session.starts_at + timedelta(minutes=30))
    await handle.signal(
        PatientJourney.record_session_completed,
        SessionCompletedSignal(
            idempotency_key=f"done-{number}-{uuid.uuid4()}",
            session_number=number,
            completed_at=session.starts_at + timedelta(minutes=30),
            source="device",
        ),
    )
    st = await eventually(handle, lambda s: s.stage == "recovery")
    if checkin is not None:
        await handle.signal(
            PatientJourney.record_recovery_checkin,
            RecoveryCheckinSignal(
                idempotency_key=f"checkin-{number}-{uuid.uuid4()}",
                session_number=number,
                day=3,
                reaction=checkin,  # type: ignore[arg-type]
            ),
        )
    return st
