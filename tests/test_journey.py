"""Whole journeys in the time-skipping server with the real protocol durations."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from tests.fixtures_temporal import new_worker
from tests.journey_helpers import (
    advance_to,
    advance_until_stage,
    complete_session,
    eventually,
    status,
    update,
)
from tests.slot_standin import SLOT_ACTIVITIES
from workflows import calendar
from workflows.ids import workflow_id
from workflows.journey import PatientJourney
from workflows.messages import JourneyStartRequest, JourneyStatus, ReviewRequest
from workflows.planner import review_date, spf_window_end
from workflows.protocol import ClinicProtocol, ClinicSettings
from workflows.records import ClinicRef, StepRecord


class RecordingStore:
    """Stands in for the PostgreSQL store in pure-workflow tests: records every step."""

    def __init__(self, clinic: ClinicProtocol) -> None:
        self.clinic = clinic
        self.steps: dict[int, StepRecord] = {}

    @activity.defn(name="record_step")
    async def record_step(self, record: StepRecord) -> None:
        self.steps.setdefault(record.step, record)

    @activity.defn(name="load_clinic")
    async def load_clinic(self, ref: ClinicRef) -> ClinicProtocol:
        return self.clinic

    def activities(self) -> list[Any]:
        return [self.record_step, self.load_clinic, *SLOT_ACTIVITIES]

    def event_kinds(self) -> list[str]:
        return [e.kind for step in sorted(self.steps) for e in self.steps[step].events]

    def notification_kinds(self) -> list[str]:
        return [n.kind for step in sorted(self.steps) for n in self.steps[step].notifications]


BERLIN = ClinicProtocol(clinic=ClinicSettings(clinic_id="berlin", timezone="Europe/Berlin"))


async def start(
    env: WorkflowEnvironment, task_queue: str, **fields: Any
) -> WorkflowHandle[PatientJourney, JourneyStatus]:
    patient_id = fields.pop("patient_id", f"p{uuid.uuid4().hex[:10]}")
    return await env.client.start_workflow(
        PatientJourney.run,
        JourneyStartRequest(patient_id=patient_id, **fields),
        id=workflow_id(patient_id),
        task_queue=task_queue,
    )


@pytest.mark.parametrize(("grade", "sessions"), [("moderate", 3), ("large", 4)])
async def test_happy_path(ts_env: WorkflowEnvironment, grade: str, sessions: int) -> None:
    store = RecordingStore(BERLIN)
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(
            ts_env, w.task_queue, clinic_id="berlin", pore_grade=grade, numbing_cream=True
        )
        st = await eventually(
            handle, lambda s: s.stage in ("scheduled", "awaiting_season", "session_due")
        )
        assert len(st.sessions) == sessions
        assert st.protocol_version == BERLIN.protocol.version
        for s in st.sessions:
            assert s.arrive_by == s.starts_at - timedelta(minutes=20)  # type: ignore[operator]
        for n in range(1, sessions + 1):
            await complete_session(ts_env, handle, n)
        st = await advance_until_stage(ts_env, handle, {"spf_window"})
        last_done = calendar.clinic_today(st.sessions[-1].completed_at, "Europe/Berlin")  # type: ignore[arg-type]
        assert st.spf_until == spf_window_end(last_done, BERLIN.protocol)
        assert st.review_on == review_date(last_done, BERLIN.protocol)
        st = await advance_until_stage(ts_env, handle, {"awaiting_review"})
        await advance_to(ts_env, st.next_action_at)  # type: ignore[arg-type]
        await update(handle, PatientJourney.record_review, ReviewRequest(outcome="complete"))
        result = await handle.result()
    assert result.stage == "completed"
    assert [s.state for s in result.sessions] == ["done"] * sessions
    intervals = [
        (b.planned_on - a.planned_on).days
        for a, b in zip(result.sessions, result.sessions[1:], strict=False)
    ]
    assert all(d >= BERLIN.protocol.min_interval_days for d in intervals)
    kinds = store.event_kinds()
    assert kinds.count("session_completed") == sessions
    assert kinds[-1] == "completed"
    assert "no_pre_session_check" in result.flags
    assert store.notification_kinds().count("booking_confirmation") == sessions
    assert sorted(store.steps) == list(range(1, len(store.steps) + 1))
    _ = status
