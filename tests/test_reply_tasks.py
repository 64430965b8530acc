"""A patient's reply the journey cannot act on becomes a staff task; staff close it with
``answer_reply`` (a note on the timeline), once, and only a task that exists."""

from __future__ import annotations

import uuid

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from tests.fixtures_temporal import new_worker
from tests.journey_helpers import eventually, settle, update
from tests.test_journey import BERLIN, RecordingStore, start
from tests.test_journey_paths import refusal
from workflows.journey import PatientJourney
from workflows.replies import PatientReplyReport, ReplyAnsweredRequest


def reply(reply_id: int, kind: str = "other") -> PatientReplyReport:
    return PatientReplyReport(
        idempotency_key=f"reply:sms:{uuid.uuid4()}",
        reply_id=reply_id,
        kind=kind,  # type: ignore[arg-type]
        session_number=1,
        channel="sms",
    )


async def test_staff_close_the_task_a_reply_became(ts_env: WorkflowEnvironment) -> None:
    store = RecordingStore(BERLIN)
    async with new_worker(ts_env.client, store.activities()) as w:
        handle = await start(ts_env, w.task_queue, clinic_id="berlin", pore_grade="small")
        await eventually(handle, lambda s: s.stage in ("scheduled", "awaiting_season"))
        await update(handle, PatientJourney.report_reply, reply(1))
        await update(handle, PatientJourney.report_reply, reply(12))
        st = await eventually(handle, lambda s: len(s.clinician_tasks) == 2)
        assert st.clinician_tasks[0].startswith("Answer the patient's reply #1 ")
        # "#1" closes reply 1's task only, not reply 12's.
        done = await update(
            handle,
            PatientJourney.answer_reply,
            ReplyAnsweredRequest(reply_id=1, note="called back", staff_ref="staff:7 Kim"),
        )
        assert done.tasks_closed == 1
        st = await eventually(handle, lambda s: len(s.clinician_tasks) == 1)
        assert st.clinician_tasks[0].startswith("Answer the patient's reply #12")
        # Again, or a reply that never became a task: refused with the reason.
        for reply_id in (1, 99):
            with pytest.raises(WorkflowUpdateFailedError) as err:
                await update(
                    handle,
                    PatientJourney.answer_reply,
                    ReplyAnsweredRequest(reply_id=reply_id, note="again"),
                )
            assert refusal(err) == ("AnswerReplyRefused", ["no_open_reply_task"])
        await settle(handle)
    answered = [e for s in store.steps.values() for e in s.events if e.kind == "reply_answered"]
    assert len(answered) == 1 and "staff:7 Kim" in answered[0].summary
