"""Payload encryption on a real journey: Temporal's history holds no clinical free text or
identifiers in plaintext, and rotating the key keeps running journeys readable."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities import repository
from activities.store import build_activities
from tests.fixtures_temporal import new_worker
from tests.test_journey import BERLIN
from worker.client import connect_client
from worker.codec import generate_key
from worker.settings import Settings
from workflows.ids import workflow_id
from workflows.journey import PatientJourney
from workflows.messages import AdverseEventSignal, JourneyStartRequest
from workflows.screening import ScreeningAnswers

CONDITION = "rosacea flare on left cheek"
NOTE = "emr-note-secret-4711"


def settings_for(env: WorkflowEnvironment, keys: str, active: str) -> Settings:
    return Settings(
        temporal_address=env.client.service_client.config.target_host,
        journey_codec_keys=keys,
        journey_codec_active_key=active,
    )


async def raw_history_bytes(client: Client, wf_id: str) -> bytes:
    history = await client.get_workflow_handle(wf_id).fetch_history()
    return b"".join(e.SerializeToString() for e in history.events)


async def test_history_is_encrypted_and_keys_rotate(
    dev_env: WorkflowEnvironment, pg_pool: asyncpg.Pool
) -> None:
    await repository.upsert_clinic(pg_pool, BERLIN)
    k1, k2 = generate_key(), generate_key()
    old = await connect_client(settings_for(dev_env, f"k1:{k1}", "k1"))
    patient_id = f"enc{uuid.uuid4().hex[:8]}"
    task_queue = f"tq-{uuid.uuid4()}"
    # No sticky cache: the second worker must not wait for the first one's sticky queue to time out.
    async with new_worker(
        old, build_activities(pg_pool), task_queue=task_queue, max_cached_workflows=0
    ):
        handle = await old.start_workflow(
            PatientJourney.run,
            JourneyStartRequest(
                patient_id=patient_id,
                clinic_id="berlin",
                pore_grade="moderate",
                screening=ScreeningAnswers(other_condition=CONDITION),
            ),
            id=workflow_id(patient_id),
            task_queue=task_queue,
        )
        for _ in range(100):
            st = await handle.query(PatientJourney.get_status)
            if st.stage == "deferred":
                break
            await asyncio.sleep(0.05)
        assert st.stage == "deferred"  # "other condition": a clinician decides

    # A client without the codec sees only ciphertext.
    raw = await raw_history_bytes(dev_env.client, handle.id)
    assert b"binary/encrypted" in raw
    for secret in (CONDITION, "other_condition", "pore_grade", "pore-2026.1"):
        assert secret.encode() not in raw

    # Rotation: k2 encrypts from now on, k1 still decrypts what was written before.
    rotated = await connect_client(settings_for(dev_env, f"k1:{k1},k2:{k2}", "k2"))
    async with new_worker(
        rotated, build_activities(pg_pool), task_queue=task_queue, max_cached_workflows=0
    ):
        h2 = rotated.get_workflow_handle_for(PatientJourney.run, handle.id)
        await h2.signal(
            PatientJourney.record_adverse_event,
            AdverseEventSignal(idempotency_key="ae", severity="mild", note_ref=NOTE),
        )
        for _ in range(100):
            st = await h2.query(PatientJourney.get_status)
            if "adverse_event" in st.flags:
                break
            await asyncio.sleep(0.05)
        assert "adverse_event" in st.flags
        assert st.screening_outcome == "deferred"
        await h2.terminate("test over")
    raw = await raw_history_bytes(dev_env.client, handle.id)
    assert NOTE.encode() not in raw
    assert b"k1" in raw and b"k2" in raw  # both key ids in the metadata
