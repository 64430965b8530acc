"""The review's outcome end to end (issue 19 item 3): a journey run to its review on the
time-skipping server with the real activities and PostgreSQL; the patient answers the
satisfaction question on their link, a clinician records the review with the grades and the
adverse-events summary through the API; both are stored and read back (API and journey page)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from activities import repository
from activities.store import build_activities
from api.main import create_app
from tests.fixtures_temporal import new_worker
from tests.journey_helpers import advance_to, advance_until_stage, complete_session
from tests.test_api import make_settings, serve
from workflows.ids import workflow_id
from workflows.journey import PatientJourney
from workflows.protocol import ClinicProtocol, ClinicSettings, Protocol

CLINIC = ClinicProtocol(
    clinic=ClinicSettings(clinic_id="short", name="Short course", open_weekdays=(0, 1, 2, 3, 4)),
    protocol=Protocol(
        sessions_by_grade={"small": 1, "moderate": 1, "large": 1}, spf_months=1, review_months=1
    ),
)


@dataclass
class App:
    http: httpx.AsyncClient
    pool: asyncpg.Pool
    env: WorkflowEnvironment
    clinician: str
    staff: str


@pytest.fixture
async def app(
    ts_env: WorkflowEnvironment, pg_pool: asyncpg.Pool, pg_dsn: str
) -> AsyncIterator[App]:
    await repository.upsert_clinic(pg_pool, CLINIC)
    _, clinician = await repository.create_staff_user(pg_pool, "Cleo Clinician", "clinician")
    _, staff = await repository.create_staff_user(pg_pool, "Sam Staff", "staff")
    async with new_worker(ts_env.client, build_activities(pg_pool)) as worker:
        settings = make_settings(
            temporal_address=ts_env.client.service_client.config.target_host,
            temporal_task_queue=worker.task_queue,
            database_url=pg_dsn,
        )
        async with serve(create_app(settings)) as http:
            yield App(http, pg_pool, ts_env, clinician, staff)


@pytest.mark.timeout(180)
async def test_review_outcome_and_satisfaction_end_to_end(app: App) -> None:
    auth = {"Authorization": f"Bearer {app.clinician}"}
    r = await app.http.post(
        "/api/journeys",
        json={
            "patient": {"full_name": "Rae Review", "email": "rae@example.com"},
            "pore_grade": "small",
            "clinic_id": "short",
        },
        headers=auth,
    )
    assert r.status_code == 201, r.text
    pid = r.json()["patient_id"]
    me = {"Authorization": f"Bearer {r.json()['patient_link'].rsplit('/', 1)[1]}"}
    handle = app.env.client.get_workflow_handle_for(PatientJourney.run, workflow_id(pid))
    await complete_session(app.env, handle, 1)
    st = await advance_until_stage(app.env, handle, {"spf_window"})

    # Before the review the patient is asked once (a second answer keeps the first).
    r = await app.http.post("/api/me/satisfaction", json={"score": 6}, headers=me)
    assert r.status_code == 422
    r = await app.http.post(
        "/api/me/satisfaction", json={"score": 4, "comment": "Pores much smaller"}, headers=me
    )
    assert r.status_code == 200 and r.json()["new"] is True, r.text
    r = await app.http.post("/api/me/satisfaction", json={"score": 1}, headers=me)
    assert r.json()["new"] is False and r.json()["score"] == 4

    st = await advance_until_stage(app.env, handle, {"awaiting_review"})
    assert st.next_action_at is not None
    await advance_to(app.env, st.next_action_at)
    review = {
        "outcome": "complete",
        "global_improvement": 4,
        "pore_visibility": 2,
        "adverse_events_summary": "Redness for 3 days after session 1; resolved.",
    }
    # Grades are bounded; reception may not record the review.
    r = await app.http.post(
        f"/api/journeys/{pid}/review",
        json={**review, "global_improvement": 9},
        headers=auth,
    )
    assert r.status_code == 422
    r = await app.http.post(
        f"/api/journeys/{pid}/review",
        json=review,
        headers={"Authorization": f"Bearer {app.staff}"},
    )
    assert r.status_code == 403
    r = await app.http.post(
        f"/api/journeys/{pid}/review",
        json=review,
        headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert r.status_code == 200, r.text
    assert r.json()["stage"] == "completed"

    r = await app.http.get(f"/api/journeys/{pid}/outcome", headers=auth)
    assert r.status_code == 200, r.text
    outcome = r.json()
    assert outcome["review"]["global_improvement"] == 4
    assert outcome["review"]["global_improvement_text"] == "Much improved"
    assert outcome["review"]["pore_visibility"] == 2
    assert outcome["review"]["adverse_events_summary"].startswith("Redness for 3 days")
    assert outcome["satisfaction"]["score"] == 4
    assert outcome["satisfaction"]["comment"] == "Pores much smaller"
    r = await app.http.get(
        f"/api/journeys/{pid}/outcome", headers={"Authorization": f"Bearer {app.staff}"}
    )
    assert r.status_code == 403

    # The reports read these: the timeline's completed event and patient_satisfaction.
    data = await app.pool.fetchval(
        "SELECT data FROM journey_events WHERE workflow_id = $1 AND kind = 'completed'",
        workflow_id(pid),
    )
    assert data["global_improvement"] == 4 and data["pore_visibility"] == 2
    row = await app.pool.fetchrow(
        "SELECT workflow_id, patient_id, score, comment, created_at FROM patient_satisfaction"
    )
    assert row is not None
    assert (row["workflow_id"], row["patient_id"], row["score"]) == (workflow_id(pid), pid, 4)
