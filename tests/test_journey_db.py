"""The journey against the real PostgreSQL store: the read model and the timeline match the
workflow's status, every step is written once, and no personal data reaches the history."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import timedelta

import asyncpg
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities import repository
from activities.store import build_activities
from tests.fixtures_pg import PgServer
from tests.fixtures_temporal import new_worker
from tests.journey_helpers import (
    advance_to,
    advance_until_stage,
    complete_session,
    settle,
    update,
)
from tests.test_journey import BERLIN
from workflows.ids import workflow_id
from workflows.journey import PatientJourney
from workflows.journey.effects import WRITE_RETRY
from workflows.messages import JourneyStartRequest, ReviewRequest, SessionCompletedSignal
from workflows.screening import ScreeningAnswers

NAME, EMAIL, PHONE = "Ana Example-Müller", "ana.mueller@example.org", "+49 30 1234567"


async def enrol(pool: asyncpg.Pool) -> str:
    await repository.upsert_clinic(pool, BERLIN)
    patient = await repository.create_patient(
        pool,
        repository.PatientCreate(
            full_name=NAME, email=EMAIL, phone=PHONE, clinic_id=BERLIN.clinic.clinic_id
        ),
    )
    return patient.patient_id


async def test_whole_journey_read_model_and_timeline(
    ts_env: WorkflowEnvironment, pg_pool: asyncpg.Pool
) -> None:
    patient_id = await enrol(pg_pool)
    async with new_worker(ts_env.client, build_activities(pg_pool)) as w:
        handle = await ts_env.client.start_workflow(
            PatientJourney.run,
            JourneyStartRequest(
                patient_id=patient_id,
                clinic_id="berlin",
                pore_grade="moderate",
                numbing_cream=True,
                screening=ScreeningAnswers(fitzpatrick_type=5, cold_sore_history=True),
            ),
            id=workflow_id(patient_id),
            task_queue=w.task_queue,
        )
        for n in (1, 2, 3):
            await complete_session(ts_env, handle, n)
        st = await advance_until_stage(ts_env, handle, {"awaiting_review"})
        await advance_to(ts_env, st.next_action_at)  # type: ignore[arg-type]
        await update(handle, PatientJourney.record_review, ReviewRequest(outcome="complete"))
        result = await handle.result()

    row = await repository.get_journey(pg_pool, patient_id)
    assert row is not None
    assert row.stage == "completed" == result.stage
    assert row.sessions_done == 3 and row.sessions_planned == 3
    assert set(row.flags) == set(result.flags)
    assert "conservative_settings" in row.flags
    assert row.spf_until == result.spf_until and row.review_on == result.review_on
    assert row.status["sessions"] == [s.model_dump(mode="json") for s in result.sessions]

    timeline = await repository.get_timeline(pg_pool, handle.id)
    kinds = [e.kind for e in timeline]
    assert kinds[0] == "journey_started" and kinds[-1] == "completed"
    assert kinds.count("session_completed") == 3
    assert len({(e.step, e.kind) for e in timeline}) == len(timeline)  # nothing written twice
    steps = await pg_pool.fetchval(
        "SELECT count(*) FROM journey_steps WHERE workflow_id=$1", handle.id
    )
    assert steps == row.version

    appointments = await repository.list_appointments(pg_pool, handle.id)
    assert [a.status for a in appointments] == ["done", "done", "done"]
    assert all(a.arrive_by == a.starts_at - timedelta(minutes=20) for a in appointments)

    outbox = await pg_pool.fetch(
        "SELECT kind, params::text AS params FROM notification_outbox WHERE workflow_id=$1",
        handle.id,
    )
    assert sum(1 for r in outbox if r["kind"] == "booking_confirmation") == 3

    # PHI lives in the patients table only: not in the history, not in the outbox params.
    history = (await handle.fetch_history()).to_json()
    for secret in (NAME, EMAIL, PHONE, "Müller"):
        assert secret not in history
        assert all(secret not in r["params"] for r in outbox)


async def test_dev_server_lists_journeys_by_stage(
    dev_env: WorkflowEnvironment, pg_pool: asyncpg.Pool
) -> None:
    client: Client = dev_env.client
    await repository.upsert_clinic(pg_pool, BERLIN)
    tag = uuid.uuid4().hex[:8]
    async with new_worker(client, build_activities(pg_pool)) as w:
        deferred = await client.start_workflow(
            PatientJourney.run,
            JourneyStartRequest(
                patient_id=f"d{tag}",
                clinic_id="berlin",
                pore_grade="moderate",
                screening=ScreeningAnswers(recent_tan=True),
            ),
            id=workflow_id(f"d{tag}"),
            task_queue=w.task_queue,
        )
        await client.start_workflow(
            PatientJourney.run,
            JourneyStartRequest(patient_id=f"s{tag}", clinic_id="berlin", pore_grade="large"),
            id=workflow_id(f"s{tag}"),
            task_queue=w.task_queue,
        )
        query = f"JourneyStage='deferred' AND ClinicId='berlin' AND WorkflowId='{deferred.id}'"
        found: list[str] = []
        for _ in range(100):
            found = [wf.id async for wf in client.list_workflows(query)]
            if found:
                break
            await asyncio.sleep(0.1)
        assert found == [deferred.id]
        scheduled_query = (
            f"JourneyStage IN ('scheduled','session_due') AND WorkflowId='{workflow_id(f's{tag}')}'"
        )
        scheduled: list[str] = []
        for _ in range(100):
            scheduled = [wf.id async for wf in client.list_workflows(scheduled_query)]
            if scheduled:
                break
            await asyncio.sleep(0.1)
        assert scheduled == [workflow_id(f"s{tag}")]
        # The deferred journey is not listed under a scheduled stage, and vice versa.
        assert deferred.id not in scheduled
        count = await client.count_workflows("ClinicId='berlin' AND JourneyStage='deferred'")
        assert count.count >= 1
        for wf_id in (deferred.id, workflow_id(f"s{tag}")):
            await client.get_workflow_handle(wf_id).terminate("test over")


async def test_postgres_outage_mid_journey_loses_nothing(
    ts_env: WorkflowEnvironment, pg_pool: asyncpg.Pool, pg_server: PgServer
) -> None:
    patient_id = await enrol(pg_pool)
    async with new_worker(ts_env.client, build_activities(pg_pool)) as w:
        handle = await ts_env.client.start_workflow(
            PatientJourney.run,
            JourneyStartRequest(patient_id=patient_id, clinic_id="berlin", pore_grade="moderate"),
            id=workflow_id(patient_id),
            task_queue=w.task_queue,
        )
        st = await advance_until_stage(ts_env, handle, {"session_due"})
        at = st.sessions[0].starts_at
        assert at is not None
        await advance_to(ts_env, at + timedelta(minutes=30))
        await settle(handle)
        # Real time from here: the activity's retries must not make the journey clock jump.
        with ts_env.auto_time_skipping_disabled():
            await asyncio.to_thread(pg_server.stop)
            await handle.signal(
                PatientJourney.record_session_completed,
                SessionCompletedSignal(
                    idempotency_key="outage-1", session_number=1, completed_at=at, source="emr"
                ),
            )
            await asyncio.sleep(2.5)  # record_step fails and is retried while the server is down
            assert (await handle.query(PatientJourney.get_status)).sessions[0].state == "done"
            await asyncio.to_thread(pg_server.start)
            # The write is a local activity retried with backoff (at most a minute apart,
            # WRITE_RETRY): wait for its next attempt, however long the server took to stop.
            row = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WRITE_RETRY.maximum_interval.total_seconds() + 30):
                    while True:
                        row = await repository.get_journey(pg_pool, patient_id)
                        if row is not None and row.sessions_done == 1 and row.stage == "recovery":
                            break
                        await asyncio.sleep(0.1)
            assert row is not None and row.sessions_done == 1 and row.stage == "recovery"
        # The check-in timer was started while the write was retried (workflow task heartbeats
        # in real time), so it fires seconds after the time the status shows: skip past it.
        assert row.next_action_at is not None
        await advance_to(ts_env, row.next_action_at + timedelta(minutes=1))
        for n in (2, 3):
            await complete_session(ts_env, handle, n)
        st = await advance_until_stage(ts_env, handle, {"awaiting_review"})
        await advance_to(ts_env, st.next_action_at)  # type: ignore[arg-type]
        await update(handle, PatientJourney.record_review, ReviewRequest(outcome="complete"))
        await handle.result()
    timeline = await repository.get_timeline(pg_pool, handle.id)
    kinds = [e.kind for e in timeline]
    assert kinds.count("session_completed") == 3
    assert kinds[-1] == "completed"
    # Writes are local activities: each one's attempt is in its marker.
    failures = 0
    async for event in handle.fetch_history_events():
        marker = event.marker_recorded_event_attributes
        if event.HasField("marker_recorded_event_attributes") and marker.marker_name == (
            "core_local_activity"
        ):
            data = marker.details["data"].payloads[0].data
            failures = max(failures, json.loads(data).get("attempt", 1) - 1)
    assert failures >= 1  # the outage really made a write retry
