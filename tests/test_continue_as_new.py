"""A journey whose history grows long continues as new between sessions and carries the course
as it stands (a dev server with a low continue-as-new threshold)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tests.fixtures_temporal import new_worker
from tests.test_journey import RecordingStore
from worker.binaries import temporal_cli
from workflows.ids import SEARCH_ATTRIBUTES, workflow_id
from workflows.journey import PatientJourney
from workflows.messages import (
    JourneyStartRequest,
    JourneyStatus,
    RecoveryCheckinSignal,
    SessionCompletedSignal,
)
from workflows.protocol import ClinicProtocol, ClinicSettings, Protocol

# Open every day, no booking notice and a long grace: a session is due at once and stays due.
FAST = ClinicProtocol(
    clinic=ClinicSettings(clinic_id="fast", open_weekdays=(0, 1, 2, 3, 4, 5, 6), sandbox=True),
    protocol=Protocol(booking_notice_days=0, no_show_grace_hours=240),
)


@pytest.fixture(scope="module")
async def short_history_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()),
        data_converter=pydantic_data_converter,
        dev_server_extra_args=[
            *[a for n, k in SEARCH_ATTRIBUTES.items() for a in ("--search-attribute", f"{n}={k}")],
            "--dynamic-config-value",
            "limit.historyCount.suggestContinueAsNew=60",
        ],
    )
    try:
        yield env
    finally:
        await env.shutdown()


async def wait_for(
    handle: WorkflowHandle[PatientJourney, JourneyStatus], check, timeout: float = 30
):  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while True:
            st = await handle.query(PatientJourney.get_status)
            if check(st):
                return st
            await asyncio.sleep(0.05)


async def test_long_history_continues_as_new_mid_course(
    short_history_env: WorkflowEnvironment,
) -> None:
    client = short_history_env.client
    store = RecordingStore(FAST)
    pid = f"can{uuid.uuid4().hex[:8]}"
    async with new_worker(client, store.activities()) as w:
        handle = await client.start_workflow(
            PatientJourney.run,
            JourneyStartRequest(
                patient_id=pid, clinic_id="fast", pore_grade="moderate", time_scale=400_000
            ),
            id=workflow_id(pid),
            task_queue=w.task_queue,
        )
        first_run = handle.result_run_id
        for n in (1, 2):
            st = await wait_for(
                handle,
                lambda s, n=n: s.stage == "session_due" and s.sessions[n - 1].state == "booked",
            )
            at = st.sessions[n - 1].starts_at
            await handle.signal(
                PatientJourney.record_session_completed,
                SessionCompletedSignal(
                    idempotency_key=f"s{n}",
                    session_number=n,
                    # Now on the fast journey clock: a completion in its future is kept
                    # as an anomaly, not applied.
                    completed_at=min(at + timedelta(minutes=30), st.journey_now),
                    source="device",
                ),
            )
            await wait_for(handle, lambda s, n=n: s.sessions[n - 1].state == "done")
            await handle.signal(
                PatientJourney.record_recovery_checkin,
                RecoveryCheckinSignal(
                    idempotency_key=f"c{n}", session_number=n, day=3, reaction="expected"
                ),
            )
        latest = client.get_workflow_handle_for(PatientJourney.run, handle.id)  # type: ignore[arg-type]
        st = await wait_for(
            latest,
            lambda s: s.sessions[1].state == "done" and s.stage in ("scheduled", "session_due"),
        )
        desc = await latest.describe()
        assert desc.run_id != first_run  # continued as new at least once
        # The course carried over: same sessions, dates, flags and step counter.
        assert [s.state for s in st.sessions[:2]] == ["done", "done"]
        assert len(st.sessions) == 3
        assert "history_continued" in store.event_kinds()
        steps = sorted(store.steps)
        assert steps == list(range(1, len(steps) + 1))
        # A repeated fact from before the continue-as-new is still recognised.
        await latest.signal(
            PatientJourney.record_session_completed,
            SessionCompletedSignal(
                idempotency_key="s2",
                session_number=2,
                completed_at=st.sessions[1].completed_at,
                source="device",
            ),
        )
        await asyncio.sleep(0.3)
        assert (await latest.query(PatientJourney.get_status)).refused == st.refused
        await latest.terminate("test over")
