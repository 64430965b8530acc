"""HTTP API against the real stack: the Temporal dev server, a worker with the real activities on
a fresh PostgreSQL database, and the app with its lifespan (httpx over ASGI, in the test's loop
so the worker keeps running while requests wait for updates)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from temporalio.testing import WorkflowEnvironment

from activities import repository
from activities.store import build_activities
from api.inbound import sign_hmac_v2
from api.main import create_app
from api.tokens import PATIENT_LINK_SALT, make_patient_token
from tests.fixtures_temporal import new_worker
from worker.binaries import temporal_cli
from worker.settings import Settings
from workflows.ids import workflow_id
from workflows.protocol import ClinicProtocol, ClinicSettings, Protocol

SECRETS = {"emr": "emr-secret-for-tests", "device": "device-secret-for-tests"}
FAST_CLINIC = "fast"
# A clinic where a journey is due for its first session at once and stays due for ten
# simulated days: sessions every day, no booking notice, a long no-show grace.
FAST_PROTOCOL = ClinicProtocol(
    clinic=ClinicSettings(
        clinic_id=FAST_CLINIC, name="Fast", open_weekdays=(0, 1, 2, 3, 4, 5, 6), sandbox=True
    ),
    protocol=Protocol(booking_notice_days=0, no_show_grace_hours=240),
)
FAST_SCALE = 5_000.0  # ten simulated days last ~170 s: far longer than any test


@dataclass
class Stack:
    http: httpx.AsyncClient
    pool: asyncpg.Pool
    settings: Settings
    admin: str
    staff: str

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.admin}"}


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "journey_env": "test",
        "journey_integration_secrets": SECRETS,
        "journey_public_url": "http://testserver",
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan, over ASGI in this event loop."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver", timeout=30
        ) as http,
    ):
        yield http


@pytest.fixture
async def stack(
    dev_env: WorkflowEnvironment, pg_pool: asyncpg.Pool, pg_dsn: str
) -> AsyncIterator[Stack]:
    task_queue = f"tq-{uuid.uuid4()}"
    settings = make_settings(
        temporal_address=dev_env.client.service_client.config.target_host,
        temporal_task_queue=task_queue,
        database_url=pg_dsn,
    )
    await repository.upsert_clinic(pg_pool, FAST_PROTOCOL)
    _, admin = await repository.create_staff_user(pg_pool, "Ada Admin", "admin")
    _, staff = await repository.create_staff_user(pg_pool, "Sam Staff", "staff")
    async with (
        new_worker(dev_env.client, build_activities(pg_pool), task_queue=task_queue),
        serve(create_app(settings)) as http,
    ):
        yield Stack(http, pg_pool, settings, admin, staff)


def enrol_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "patient": {"full_name": "Jo Example", "email": "jo@example.com"},
        "pore_grade": "moderate",
        "numbing_cream": True,
    }
    body.update(overrides)
    return body


async def enrol(s: Stack, **overrides: Any) -> dict[str, Any]:
    r = await s.http.post("/api/journeys", json=enrol_body(**overrides), headers=s.auth())
    assert r.status_code == 201, r.text
    return dict(r.json())


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 10.0, interval: float = 0.02
) -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(interval)


async def stage_of(s: Stack, patient_id: str) -> str:
    r = await s.http.get(f"/api/journeys/{patient_id}", headers=s.auth())
    assert r.status_code == 200, r.text
    return str(r.json()["stage"])


async def wait_stage(s: Stack, patient_id: str, stage: str) -> None:
    async def reached() -> bool:
        return await stage_of(s, patient_id) == stage

    await eventually(reached)


def signed(
    body: bytes,
    *,
    secret: str = SECRETS["emr"],
    integration: str | None = "emr",
    key: str | None = None,
    at: int | None = None,
) -> dict[str, str]:
    ts = str(at if at is not None else int(time.time()))
    idem = key or str(uuid.uuid4())
    # HMAC v2 (api/inbound.py): the signature covers the integration and the key too.
    signer = integration or next((n for n, s in SECRETS.items() if s == secret), "emr")
    sig = sign_hmac_v2(secret, int(ts), signer, idem, body)
    headers = {
        "Content-Type": "application/json",
        "X-Timestamp": ts,
        "X-Signature": f"sha256={sig}",
        "Idempotency-Key": idem,
    }
    if integration:
        headers["X-Integration"] = integration
    return headers


def completion(patient_id: str, session: int = 1) -> bytes:
    return json.dumps(
        {
            "patient_id": patient_id,
            "session_number": session,
            "completed_at": datetime.now(UTC).isoformat(),
        }
    ).encode()


async def timeline_kinds(s: Stack, patient_id: str) -> list[str]:
    rows = await repository.get_timeline(s.pool, workflow_id(patient_id))
    return [r.kind for r in rows]


# ---------------------------------------------------------------- health


async def test_health_and_ready(stack: Stack) -> None:
    assert (await stack.http.get("/healthz")).json() == {"status": "ok"}
    r = await stack.http.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "temporal": True, "database": True}


# ---------------------------------------------------------------- staff


async def test_enrol_list_and_detail(stack: Stack) -> None:
    started = time.monotonic()
    created = await enrol(stack)
    pid = created["patient_id"]
    assert created["workflow_id"] == workflow_id(pid)
    assert created["patient_link"].startswith("http://testserver/p/")

    async def listed() -> list[dict[str, Any]]:
        r = await stack.http.get("/api/journeys", headers=stack.auth())
        return [j for j in r.json()["data"] if j["patient_id"] == pid]

    row = (await eventually(listed))[0]
    assert time.monotonic() - started < 1.0, "the read model lags more than a second"
    assert row["patient_name"] == "Jo Example"
    await wait_stage(stack, pid, "scheduled")

    r = await stack.http.get(
        "/api/journeys",
        params={"stage": "scheduled", "clinic": "default", "limit": 1, "offset": 0},
        headers=stack.auth(),
    )
    assert r.status_code == 200
    assert r.json()["count"] == 1 and r.json()["data"][0]["patient_id"] == pid
    r = await stack.http.get("/api/journeys", params={"stage": "paused"}, headers=stack.auth())
    assert r.json() == {"data": [], "count": 0}
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    r = await stack.http.get(
        "/api/journeys", params={"next_action_before": later}, headers=stack.auth()
    )
    assert r.json()["count"] == 1

    detail = (await stack.http.get(f"/api/journeys/{pid}", headers=stack.auth())).json()
    assert detail["patient"]["email"] == "jo@example.com"
    assert detail["status"]["pore_grade"] == "moderate"
    assert len(detail["sessions"]) >= 1
    assert "journey_started" in [e["kind"] for e in detail["timeline"]]


async def test_controls_and_refusals(stack: Stack) -> None:
    pid = (await enrol(stack))["patient_id"]
    await wait_stage(stack, pid, "scheduled")
    base = f"/api/journeys/{pid}"
    detail = (await stack.http.get(base, headers=stack.auth())).json()
    first = date.fromisoformat(detail["sessions"][0]["planned_on"])

    # The pre-session check is a clinician's (or an admin's), issue 16: reception gets 403.
    check = {"session_number": 1, "answers": {}}
    r = await stack.http.post(
        f"{base}/pre-session-check", json=check, headers=stack.auth(stack.staff)
    )
    assert r.status_code == 403 and r.json()["detail"][0]["rule"] == "forbidden"
    r = await stack.http.post(f"{base}/pre-session-check", json=check, headers=stack.auth())
    assert r.status_code == 200, r.text
    assert r.json()["cleared"] is True

    # A date in the past breaks the planner's rules: 409 with every reason.
    r = await stack.http.post(
        f"{base}/reschedule",
        json={"session_number": 1, "new_date": (first - timedelta(days=60)).isoformat()},
        headers=stack.auth(),
    )
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "RescheduleRefused"
    assert r.json()["detail"] and all({"rule", "message"} <= set(d) for d in r.json()["detail"])

    new_date = first + timedelta(days=7)  # same weekday: the clinic is open
    r = await stack.http.post(
        f"{base}/reschedule",
        json={"session_number": 1, "new_date": new_date.isoformat()},
        headers=stack.auth(),
    )
    assert r.status_code == 200, r.text
    assert r.json()["new_dates"][0] == new_date.isoformat()

    r = await stack.http.post(f"{base}/screening", json={"answers": {}}, headers=stack.auth())
    assert r.status_code == 409 and r.json()["detail"][0]["rule"] == "not_screening"

    # Staff may not record a review (403); a clinician/admin too early gets every reason.
    review = {"outcome": "further_course", "further_sessions": 99}
    r = await stack.http.post(f"{base}/review", json=review, headers=stack.auth(stack.staff))
    assert r.status_code == 403
    r = await stack.http.post(f"{base}/review", json=review, headers=stack.auth())
    assert r.status_code == 409
    assert {d["rule"] for d in r.json()["detail"]} == {"review_not_due", "further_sessions"}

    r = await stack.http.post(f"{base}/pause", json={"reason": "Holiday"}, headers=stack.auth())
    assert r.status_code == 200 and r.json()["previous_stage"] == "scheduled"
    # (Whether the journey then stays paused is test_pause_holds_a_scheduled_journey.)
    r = await stack.http.post(f"{base}/withdraw", json={"reason": "Moved"}, headers=stack.auth())
    assert r.status_code == 200 and r.json()["stage"] == "withdrawn"
    r = await stack.http.post(f"{base}/withdraw", json={"reason": "x"}, headers=stack.auth())
    assert r.status_code == 409
    assert r.json()["detail"][0]["rule"] == "journey_closed"
    # A closed journey's status comes from the read model, not a replaying query.
    r = await stack.http.get(base, headers=stack.auth())
    assert r.status_code == 200
    assert r.json()["status"]["stage"] == "withdrawn"
    assert r.json()["status"]["closed_reason"] == "Moved"

    refused = [
        e
        for e in await repository.get_timeline(stack.pool, workflow_id(pid))
        if e.kind == "request_refused"
    ]
    assert len(refused) == 4  # reschedule, screening, review, withdraw
    assert refused[0].data["reasons"] and refused[0].data["type"] == "RescheduleRefused"


async def test_pause_holds_a_scheduled_journey(stack: Stack) -> None:
    pid = (await enrol(stack))["patient_id"]
    await wait_stage(stack, pid, "scheduled")
    base = f"/api/journeys/{pid}"
    r = await stack.http.post(f"{base}/pause", json={"reason": "Holiday"}, headers=stack.auth())
    assert r.json() == {"stage": "paused", "previous_stage": "scheduled"}
    r = await stack.http.get(base, headers=stack.auth())
    assert r.json()["status"]["stage"] == "paused"
    r = await stack.http.post(f"{base}/pause", json={"reason": "Again"}, headers=stack.auth())
    assert r.status_code == 409 and r.json()["error"] == "PauseRefused"
    r = await stack.http.post(f"{base}/resume", json={"reason": "Back"}, headers=stack.auth())
    assert r.status_code == 200 and r.json()["stage"] == "scheduled"


async def test_staff_auth_and_not_found(stack: Stack) -> None:
    assert (await stack.http.get("/api/journeys")).status_code == 401
    r = await stack.http.get("/api/journeys", headers=stack.auth("not-a-token"))
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = await stack.http.get("/api/journeys", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401
    patient_token = make_patient_token(stack.settings, "p_someone")
    r = await stack.http.get("/api/journeys", headers=stack.auth(patient_token))
    assert r.status_code == 403
    for path in ("/api/journeys/p_unknown", "/api/journeys/not%20an%20id"):
        r = await stack.http.get(path, headers=stack.auth())
        assert r.status_code == 404, r.text
        assert r.json()["detail"][0]["rule"] == "journey_not_found"
    r = await stack.http.post(
        "/api/journeys/p_unknown/pause", json={"reason": "x"}, headers=stack.auth()
    )
    assert r.status_code == 404


async def test_validation_errors_name_field_and_rule(stack: Stack) -> None:
    r = await stack.http.post(
        "/api/journeys", json=enrol_body(pore_grade="huge"), headers=stack.auth()
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "body.pore_grade"
    assert r.json()["detail"][0]["rule"] == "literal_error"
    r = await stack.http.post(
        "/api/journeys",
        content=b'{"patient": ',
        headers={**stack.auth(), "Content-Type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["detail"][0]["rule"] == "json_invalid"
    r = await stack.http.post(
        "/api/journeys", json=enrol_body(clinic_id="nowhere"), headers=stack.auth()
    )
    assert r.status_code == 422
    assert r.json()["detail"] == [
        {"field": "body.clinic_id", "rule": "unknown_clinic", "message": "No clinic 'nowhere'."}
    ]
    r = await stack.http.post(
        "/api/journeys",
        json=enrol_body(patient={"full_name": "No Phone", "preferred_channel": "sms"}),
        headers=stack.auth(),
    )
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body.patient"
    r = await stack.http.get("/api/journeys", params={"limit": 0}, headers=stack.auth())
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "query.limit"


async def test_plan_preview(stack: Stack) -> None:
    r = await stack.http.post(
        "/api/plans/preview",
        json={
            "pore_grade": "large",
            "earliest": "2027-03-01",
            "screening": {"fitzpatrick_type": 5},
        },
        headers=stack.auth(stack.staff),
    )
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["sessions"] and plan["conservative"] is True
    assert plan["screening_outcome"] == "eligible"
    r = await stack.http.post("/api/plans/preview", json={"pore_grade": 3}, headers=stack.auth())
    assert r.status_code == 422


# ---------------------------------------------------------------- patients


async def test_patient_endpoints(stack: Stack) -> None:
    mine = await enrol(stack)
    other = await enrol(stack, patient={"full_name": "Other", "email": "o@example.com"})
    pid = mine["patient_id"]
    token = mine["patient_link"].rsplit("/", 1)[1]
    await wait_stage(stack, pid, "scheduled")
    bearer = {"Authorization": f"Bearer {token}"}

    r = await stack.http.get("/api/me/journey", headers=bearer)
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["patient_id"] == pid and plan["stage"] == "scheduled"
    assert plan["lines"][0].startswith("Session 1: ") and "arrive by" in plan["lines"][0]
    assert (await stack.http.get("/api/me/journey", params={"token": token})).status_code == 200

    r = await stack.http.get(
        "/api/me/journey", params={"patient_id": other["patient_id"]}, headers=bearer
    )
    assert r.status_code == 403
    r = await stack.http.get(f"/api/journeys/{other['patient_id']}", headers=bearer)
    assert r.status_code == 403
    assert (await stack.http.get("/api/me/journey")).status_code == 401
    assert (await stack.http.get("/api/me/journey", params={"token": "x.y.z"})).status_code == 401
    expired = _token_signed_days_ago(
        stack.settings, pid, stack.settings.journey_patient_link_days + 1
    )
    r = await stack.http.get("/api/me/journey", params={"token": expired})
    assert r.status_code == 401 and "expired" in r.json()["detail"][0]["message"]

    first = date.fromisoformat(plan["sessions"][0]["date"])
    r = await stack.http.post(
        "/api/me/reschedule",
        json={"session_number": 1, "new_date": (first - timedelta(days=60)).isoformat()},
        headers=bearer,
    )
    assert r.status_code == 409 and r.json()["error"] == "RescheduleRefused"
    r = await stack.http.post(
        "/api/me/reschedule",
        json={"session_number": 1, "new_date": (first + timedelta(days=7)).isoformat()},
        headers=bearer,
    )
    assert r.status_code == 200, r.text

    # Neither fact applies before a session: the journey keeps each for staff (an anomaly
    # with a clinician task) and the patient is told it was not recorded, with the reason.
    today = (await stack.http.get(f"/api/journeys/{pid}", headers=stack.auth())).json()
    on = today["status"]["journey_now"][:10]
    r = await stack.http.post("/api/me/spf-attestation", json={"on": on}, headers=bearer)
    assert r.status_code == 409, r.text
    kept = r.json()
    assert (kept["error"], kept["outcome"]) == ("FactKeptForStaff", "kept_for_staff")
    assert [d["rule"] for d in kept["detail"]] == ["no_session_yet"]
    assert kept["anomaly_id"] == 1 and kept["stage"] == "scheduled"
    # A resend (same default key, one per date) is the same anomaly, not a second one.
    r = await stack.http.post("/api/me/spf-attestation", json={"on": on}, headers=bearer)
    assert (r.status_code, r.json()) == (409, kept)
    r = await stack.http.post(
        "/api/me/reaction",
        json={"session_number": 1, "day": 3, "reaction": "expected"},
        headers=bearer,
    )
    assert r.status_code == 409
    assert (r.json()["anomaly_id"], r.json()["detail"][0]["rule"]) == (2, "session_not_done")
    r = await stack.http.post(
        "/api/me/reaction", json={"session_number": 1, "day": "three"}, headers=bearer
    )
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body.day"
    kinds = await timeline_kinds(stack, pid)
    assert kinds.count("fact_kept") == 2
    assert not {"spf_attested", "recovery_checkin"} & set(kinds)
    st = (await stack.http.get(f"/api/journeys/{pid}", headers=stack.auth())).json()["status"]
    assert [(a["id"], a["kind"], a["resolved"]) for a in st["anomalies"]] == [
        (1, "spf_attested", False),
        (2, "recovery_checkin", False),
    ]
    assert sum("anomaly" in t for t in st["clinician_tasks"]) == 2

    # An adverse event applies in any open stage: 202, and the journey pauses.
    r = await stack.http.post(
        "/api/me/reaction",
        json={"session_number": 1, "day": 2, "reaction": "prolonged", "severity": "severe"},
        headers=bearer,
    )
    assert r.status_code == 202
    assert (r.json()["outcome"], r.json()["duplicate"]) == ("applied", False)

    async def alerted() -> bool:
        return "adverse_event" in await timeline_kinds(stack, pid)

    await eventually(alerted)
    row = await repository.get_journey(stack.pool, pid)
    assert row is not None and "adverse_event" in row.flags


def _token_signed_days_ago(settings: Settings, patient_id: str, days: int) -> str:
    class PastSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - days * 86_400

    serializer = URLSafeTimedSerializer(
        settings.journey_patient_link_secret.get_secret_value(),
        salt=PATIENT_LINK_SALT,
        signer=PastSigner,
    )
    return serializer.dumps({"p": patient_id})


# ---------------------------------------------------------------- integrations


async def due_journey(s: Stack, **overrides: Any) -> str:
    pid = (await enrol(s, clinic_id=FAST_CLINIC, time_scale=FAST_SCALE, **overrides))["patient_id"]
    await wait_stage(s, pid, "session_due")
    return pid


async def test_webhook_signature_and_body_errors(stack: Stack) -> None:
    url = "/api/integrations/session-completed"
    body = completion("p_whatever")
    r = await stack.http.post(url, content=body, headers={"Idempotency-Key": "k"})
    assert r.status_code == 401  # unsigned
    bad = signed(body, secret="wrong")
    assert (await stack.http.post(url, content=body, headers=bad)).status_code == 401
    stale = signed(body, at=int(time.time()) - 3600)
    r = await stack.http.post(url, content=body, headers=stale)
    assert r.status_code == 401 and r.json()["detail"][0]["rule"] == "bad_signature"
    unknown = signed(body, integration="fax")
    assert (await stack.http.post(url, content=body, headers=unknown)).status_code == 401
    tampered = signed(body)
    r = await stack.http.post(
        url, content=body.replace(b"p_whatever", b"p_other"), headers=tampered
    )
    assert r.status_code == 401
    # Without X-Integration the matching secret names the integration.
    anonymous = signed(body, secret=SECRETS["device"], integration=None)
    assert (await stack.http.post(url, content=body, headers=anonymous)).status_code == 404

    no_key = signed(body)
    del no_key["Idempotency-Key"]
    r = await stack.http.post(url, content=body, headers=no_key)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "header.Idempotency-Key"
    malformed = b'{"patient_id": "p_x", '
    r = await stack.http.post(url, content=malformed, headers=signed(malformed))
    assert r.status_code == 422 and r.json()["detail"][0]["rule"] == "json_invalid"
    wrong = json.dumps(
        {"patient_id": "p_x", "session_number": "first", "completed_at": "2026-01-01"}
    ).encode()
    r = await stack.http.post(url, content=wrong, headers=signed(wrong))
    assert r.status_code == 422
    fields = {d["field"] for d in r.json()["detail"]}
    assert {"body.session_number", "body.completed_at"} <= fields


async def test_webhook_replay_sends_one_signal(stack: Stack) -> None:
    pid = await due_journey(stack)
    url = "/api/integrations/session-completed"
    body = completion(pid)
    key = f"emr-{uuid.uuid4()}"
    first = await stack.http.post(url, content=body, headers=signed(body, key=key))
    assert first.status_code == 202, first.text
    assert (first.json()["outcome"], first.json()["duplicate"]) == ("applied", False)
    # A retry minutes later is signed again; same key, same body: same answer, nothing sent.
    again = await stack.http.post(url, content=body, headers=signed(body, key=key))
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    await wait_stage(stack, pid, "recovery")
    other = completion(pid, session=2)
    r = await stack.http.post(url, content=other, headers=signed(other, key=key))
    assert r.status_code == 422 and r.json()["detail"][0]["rule"] == "idempotency_key_reused"
    await asyncio.sleep(0.2)  # give a wrongly sent second signal the time to show
    kinds = await timeline_kinds(stack, pid)
    assert kinds.count("session_completed") == 1
    assert "fact_kept" not in kinds


async def test_webhook_fact_the_journey_cannot_apply_is_kept_not_acknowledged(
    stack: Stack,
) -> None:
    """A completion the journey cannot apply now is answered 409 with the reasons and kept
    for staff; its key is not spent: the same delivery once the journey can take it is
    applied (202) and settles the anomaly."""
    pid = await due_journey(stack)
    base = f"/api/journeys/{pid}"
    url = "/api/integrations/session-completed"
    wrong = completion(pid, session=2)
    r = await stack.http.post(url, content=wrong, headers=signed(wrong))
    assert r.status_code == 409, r.text
    assert (r.json()["error"], r.json()["outcome"]) == ("FactKeptForStaff", "kept_for_staff")
    assert [d["rule"] for d in r.json()["detail"]] == ["out_of_order"]

    r = await stack.http.post(f"{base}/pause", json={"reason": "Call"}, headers=stack.auth())
    assert r.status_code == 200, r.text
    body = completion(pid)
    key = f"emr-{uuid.uuid4()}"
    held = await stack.http.post(url, content=body, headers=signed(body, key=key))
    assert held.status_code == 409, held.text
    assert held.json()["stage"] == "paused" and held.json()["anomaly_id"] == 2
    # Not stored as the key's answer: a resend reaches the journey (the same anomaly).
    again = await stack.http.post(url, content=body, headers=signed(body, key=key))
    assert (again.status_code, again.json()) == (409, held.json())
    stored = await stack.pool.fetchval(
        "SELECT count(*) FROM idempotency_keys WHERE scope = 'session-completed:emr'"
    )
    assert stored == 0
    assert "session_completed" not in await timeline_kinds(stack, pid)

    r = await stack.http.post(f"{base}/resume", json={"reason": "Back"}, headers=stack.auth())
    assert r.status_code == 200, r.text
    applied = await stack.http.post(url, content=body, headers=signed(body, key=key))
    assert applied.status_code == 202, applied.text
    assert applied.json()["outcome"] == "applied"
    # From now on the key has its answer, and the journey applied the fact once.
    replay = await stack.http.post(url, content=body, headers=signed(body, key=key))
    assert (replay.status_code, replay.json()) == (202, applied.json())
    kinds = await timeline_kinds(stack, pid)
    assert kinds.count("session_completed") == 1 and kinds.count("fact_kept") == 2
    # The status lists open anomalies only: #2 settled when its resend was applied.
    st = (await stack.http.get(base, headers=stack.auth())).json()["status"]
    assert [(a["id"], a["resolved"]) for a in st["anomalies"]] == [(1, False)]
    tasks = [t for t in st["clinician_tasks"] if "anomaly" in t]
    assert len(tasks) == 1 and "#1" in tasks[0]

    # Staff resolve #1 (session 2 reported while session 1 was next): applying it is still
    # refused with the journey's reasons; dismissing it settles it, once.
    resolve = f"{base}/anomalies/1/resolve"
    # Resolving a kept fact is a clinician's or an admin's (issue 16): reception gets 403.
    r = await stack.http.post(
        resolve, json={"action": "dismiss", "note": "x"}, headers=stack.auth(stack.staff)
    )
    assert r.status_code == 403 and r.json()["detail"][0]["rule"] == "forbidden"
    r = await stack.http.post(
        resolve, json={"action": "apply", "note": "EMR resent"}, headers=stack.auth()
    )
    assert r.status_code == 409 and r.json()["error"] == "ResolveAnomalyRefused", r.text
    assert r.json()["detail"][0]["rule"] == "not_expecting_session"
    r = await stack.http.post(
        resolve,
        json={"action": "dismiss", "note": "Wrong session number from the EMR"},
        headers=stack.auth(),
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"anomaly_id": 1, "resolution": "dismissed", "stage": "recovery"}
    r = await stack.http.post(
        resolve, json={"action": "dismiss", "note": "again"}, headers=stack.auth()
    )
    assert r.status_code == 409 and r.json()["detail"][0]["rule"] == "no_such_anomaly"
    r = await stack.http.post(
        f"{base}/anomalies/0/resolve", json={"action": "dismiss", "note": "x"}, headers=stack.auth()
    )
    assert r.status_code == 422
    st = (await stack.http.get(base, headers=stack.auth())).json()["status"]
    assert st["anomalies"] == [] and not any("anomaly" in t for t in st["clinician_tasks"])
    resolved = [
        e
        for e in await repository.get_timeline(stack.pool, workflow_id(pid))
        if e.kind == "anomaly_resolved"
    ]
    assert len(resolved) == 1 and "Wrong session number from the EMR" in resolved[0].summary


async def test_webhook_burst_each_session_done_once(stack: Stack) -> None:
    """200 deliveries, 20 % of them replays of an earlier key: every journey's session 1 is
    done exactly once (one ``applied`` per journey), every other distinct key reports what is
    already applied and is answered as a duplicate (202, nothing for staff), and every replay
    gets the first answer."""
    journeys = await asyncio.gather(*(due_journey(stack) for _ in range(8)))
    url = "/api/integrations/session-completed"
    deliveries: list[tuple[str, bytes, str]] = []
    for i in range(160):  # 20 distinct keys per journey (EMR, device and booking all report)
        pid = journeys[i % len(journeys)]
        deliveries.append((pid, completion(pid), f"burst-{i}"))
    deliveries += [deliveries[i * 4] for i in range(40)]  # 40 replays of earlier keys
    assert len(deliveries) == 200

    latencies: list[float] = []
    busy: list[str] = []

    async def deliver(pid: str, body: bytes, key: str) -> httpx.Response:
        started = time.monotonic()
        while True:
            r = await stack.http.post(url, content=body, headers=signed(body, key=key))
            # Temporal runs at most 10 updates at once per journey, and a busy journey may
            # not answer within the deadline: told to retry (503 + Retry-After), the sender
            # does, with the same key (a fact applied meanwhile then answers as a duplicate).
            if r.status_code != 503:
                break
            assert "Retry-After" in r.headers, r.text
            busy.append(key)
            await asyncio.sleep(0.1)
        latencies.append(time.monotonic() - started)
        return r

    first_pass = await asyncio.gather(*(deliver(*d) for d in deliveries[:160]))
    replays = await asyncio.gather(*(deliver(*d) for d in deliveries[160:]))
    applied = dict.fromkeys(journeys, 0)
    for (pid, _, _), r in zip(deliveries, first_pass, strict=False):
        assert r.status_code == 202, r.text
        if r.json()["outcome"] == "applied":
            applied[pid] += 1
        else:
            assert (r.json()["outcome"], r.json()["duplicate"]) == ("duplicate", True)
    assert set(applied.values()) == {1}
    for i, r in enumerate(replays):
        first = first_pass[i * 4]
        assert (r.status_code, r.json()) == (first.status_code, first.json())

    # Answered only once written: the timeline already holds every fact, once.
    counts = await stack.pool.fetch(
        "SELECT workflow_id, kind, count(*) AS n FROM journey_events"
        " WHERE kind IN ('session_completed', 'fact_kept') GROUP BY workflow_id, kind"
    )
    assert {(r["workflow_id"], r["kind"], r["n"]) for r in counts} == {
        (workflow_id(p), kind, n) for p in journeys for kind, n in (("session_completed", 1),)
    }
    # Applied and duplicate answers are the keys' stored answers (a kept fact's is not).
    keys = await stack.pool.fetchval(
        "SELECT count(*) FROM idempotency_keys WHERE scope = 'session-completed:emr'"
    )
    assert keys == 160
    latencies.sort()
    print(
        f"\n{len(busy)} deliveries were told to retry (503, journey busy);"
        f" answer latency over {len(latencies)} deliveries:"
        f" median {statistics.median(latencies) * 1000:.0f} ms,"
        f" p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.0f} ms"
    )


async def test_webhook_to_read_model_latency(stack: Stack) -> None:
    """Measured once: from the webhook's request to the read model showing the session done."""
    pids = await asyncio.gather(*(due_journey(stack) for _ in range(20)))
    url = "/api/integrations/session-completed"
    samples: list[float] = []
    for pid in pids:
        body = completion(pid)
        started = time.monotonic()
        r = await stack.http.post(url, content=body, headers=signed(body))
        assert r.status_code == 202

        async def done(pid: str = pid) -> bool:
            row = await repository.get_journey(stack.pool, pid)
            return row is not None and row.sessions_done == 1

        await eventually(done, interval=0.005)
        samples.append(time.monotonic() - started)
    samples.sort()
    print(
        f"\nwebhook → read model: median {statistics.median(samples) * 1000:.0f} ms,"
        f" p95 {samples[int(len(samples) * 0.95) - 1] * 1000:.0f} ms,"
        f" max {samples[-1] * 1000:.0f} ms over {len(samples)}"
    )
    assert statistics.median(samples) < 1.0


# ---------------------------------------------------------------- outages


async def test_temporal_unreachable_is_503(pg_pool: asyncpg.Pool, pg_dsn: str) -> None:
    """The API starts without Temporal; what needs it answers 503 with Retry-After, what only
    reads the read model still works."""
    _, token = await repository.create_staff_user(pg_pool, "Ada", "admin")
    auth = {"Authorization": f"Bearer {token}"}
    settings = make_settings(temporal_address="127.0.0.1:1", database_url=pg_dsn)
    async with serve(create_app(settings)) as http:
        r = await http.post("/api/journeys/p_abc/pause", json={"reason": "x"}, headers=auth)
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        r = await http.post("/api/journeys", json=enrol_body(), headers=auth)
        assert r.status_code == 503
        assert (await http.get("/api/journeys", headers=auth)).status_code == 200
        r = await http.get("/readyz")
        assert r.status_code == 503 and r.json()["temporal"] is False
        assert r.json()["database"] is True


async def test_temporal_stopped_is_503(pg_pool: asyncpg.Pool, pg_dsn: str) -> None:
    """Temporal goes away after the API connected: requests answer 503, not 500."""
    env = await WorkflowEnvironment.start_local(dev_server_existing_path=str(temporal_cli()))
    _, token = await repository.create_staff_user(pg_pool, "Ada", "admin")
    auth = {"Authorization": f"Bearer {token}"}
    settings = make_settings(
        temporal_address=env.client.service_client.config.target_host, database_url=pg_dsn
    )
    app = create_app(settings)
    async with serve(app) as http:
        assert (await http.get("/readyz")).status_code == 200
        # The SDK retries an unreachable server until the deadline: keep the test short.
        app.state.service.rpc_timeout = timedelta(seconds=1)
        app.state.service.update_rpc_timeout = timedelta(seconds=1)
        await env.shutdown()
        r = await http.get("/api/journeys/p_abc", headers=auth)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "5"
        r = await http.post("/api/journeys/p_abc/pause", json={"reason": "x"}, headers=auth)
        assert r.status_code == 503
        body = completion("p_abc")
        r = await http.post(
            "/api/integrations/session-completed", content=body, headers=signed(body)
        )
        assert r.status_code == 503
        assert (await http.get("/readyz")).status_code == 503
