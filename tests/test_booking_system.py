"""A clinic with its own booking system, end to end over real HTTP (issue 17 item 2): the
Temporal dev server, a worker with the real activities, a fresh PostgreSQL, our API under
uvicorn, the outbound webhook dispatcher, and a fake booking system (tests/booking_fake.py) that
receives the session windows and sends every appointment event type back, signed.

The clinic is a sandbox on a fast clock (``FAST_SCALE``: a simulated day passes in ~17 s), so a
booked session becomes due within the test."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from activities import repository
from activities.store import build_activities
from activities.webhooks import WebhookDispatcher
from api.inbound import sign_standard
from api.main import create_app
from tests.booking_fake import FakeBookingSystem
from tests.fixtures_temporal import new_worker
from tests.messaging_fakes import free_port, serve_asgi
from tests.test_api import FAST_SCALE, SECRETS, enrol_body, eventually, make_settings
from workflows.protocol import ClinicProtocol, ClinicSettings, Protocol

CLINIC = "ext-booking"
OTHER = "other-clinic"
EXTERNAL = ClinicProtocol(
    clinic=ClinicSettings(
        clinic_id=CLINIC,
        name="Booked Elsewhere",
        timezone="UTC",
        open_weekdays=(0, 1, 2, 3, 4, 5, 6),
        sandbox=True,
        booking="external",
    ),
    protocol=Protocol(booking_notice_days=0, no_show_grace_hours=240),
)


@dataclass
class World:
    api: httpx.AsyncClient
    pool: asyncpg.Pool
    fake: FakeBookingSystem
    admin: str
    registered: dict[str, Any]

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin}"}

    async def enrol(self) -> str:
        r = await self.api.post(
            "/api/journeys",
            json=enrol_body(clinic_id=CLINIC, time_scale=FAST_SCALE),
            headers=self.auth(),
        )
        assert r.status_code == 201, r.text
        return str(r.json()["patient_id"])

    async def journey(self, patient_id: str) -> dict[str, Any]:
        r = await self.api.get(f"/api/journeys/{patient_id}", headers=self.auth())
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def session(self, patient_id: str, number: int = 1) -> dict[str, Any]:
        detail = await self.journey(patient_id)
        return dict(next(s for s in detail["sessions"] if s["number"] == number))

    async def window(self, patient_id: str, count: int = 1) -> dict[str, Any]:
        """The ``count``-th window the booking system received for the patient."""

        async def arrived() -> bool:
            return len(self.fake.windows.get(patient_id, [])) >= count

        await eventually(arrived, timeout=60)
        return self.fake.windows[patient_id][count - 1]

    async def wait_session(
        self, patient_id: str, state: str, starts_at: datetime | None = None
    ) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            s = await self.session(patient_id)
            if s["state"] != state:
                return None
            if starts_at is not None and (
                s["starts_at"] is None or datetime.fromisoformat(s["starts_at"]) != starts_at
            ):
                return None
            return s

        found: dict[str, Any] = await eventually(reached, timeout=60)
        return found

    async def wait_stage(self, patient_id: str, stage: str, timeout: float = 90) -> None:
        async def reached() -> bool:
            return (await self.journey(patient_id))["stage"] == stage

        await eventually(reached, timeout=timeout, interval=0.2)

    async def events(self, **params: Any) -> list[dict[str, Any]]:
        r = await self.api.get(f"/api/booking/{CLINIC}/events", params=params, headers=self.auth())
        assert r.status_code == 200, r.text
        return list(r.json()["data"])


@pytest.fixture
async def world(
    dev_env: WorkflowEnvironment, pg_pool: asyncpg.Pool, pg_dsn: str
) -> AsyncIterator[World]:
    task_queue = f"tq-{uuid.uuid4()}"
    settings = make_settings(
        temporal_address=dev_env.client.service_client.config.target_host,
        temporal_task_queue=task_queue,
        database_url=pg_dsn,
    )
    await repository.upsert_clinic(pg_pool, EXTERNAL)
    await repository.upsert_clinic(
        pg_pool, ClinicProtocol(clinic=ClinicSettings(clinic_id=OTHER, name="Other"))
    )
    _, admin = await repository.create_staff_user(pg_pool, "Ada Admin", "admin")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    fake = FakeBookingSystem(api_url=api_url, clinic_id=CLINIC)
    stop = asyncio.Event()
    dispatcher = WebhookDispatcher(pg_pool, base_backoff_seconds=0.05)
    async with (
        new_worker(dev_env.client, build_activities(pg_pool), task_queue=task_queue),
        serve_asgi(create_app(settings), port),
        fake.running(),
        httpx.AsyncClient(base_url=api_url, timeout=30) as api,
    ):
        r = await api.put(
            f"/api/booking/{CLINIC}/system",
            json={"base_url": fake.base_url, "webhook_url": fake.url, "description": "fake"},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert r.status_code == 200, r.text
        registered = r.json()
        fake.inbound_secret = registered["inbound_secret"]
        fake.outbound_secret = registered["outbound_secret"]
        task = asyncio.create_task(dispatcher.run(stop, poll_interval=0.05))
        try:
            yield World(api, pg_pool, fake, admin, registered)
        finally:
            stop.set()
            await task
    assert fake.bad_signatures == 0


def at(day: str, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC) + timedelta(
        hours=hour, minutes=minute
    )


# ---------------------------------------------------------------- registration and refusals


async def test_registration_subscribes_the_booking_system(world: World) -> None:
    reg = world.registered
    assert reg["clinic_booking"] == "external" and reg["signed_with"] == "secret"
    assert (
        reg["inbound_secret"].startswith("whsec_")
        and reg["outbound_secret"] != (reg["inbound_secret"])
    )
    assert "journey.session_window" in reg["event_types"]
    r = await world.api.get(f"/api/booking/{CLINIC}/system", headers=world.auth())
    assert r.status_code == 200 and "inbound_secret" not in r.json()
    subscriber = await world.pool.fetchrow(
        "SELECT url, event_types, disabled_at FROM webhook_subscribers WHERE id = $1",
        reg["subscriber_id"],
    )
    assert subscriber["url"] == world.fake.url and subscriber["disabled_at"] is None
    assert "journey.session_window" in subscriber["event_types"]
    # Not both kinds of secret; an integration must exist; the clinic must exist.
    bad = [
        ({"base_url": "http://x.example", "secret": reg["inbound_secret"], "integration": "emr"}),
        ({"base_url": "http://x.example", "integration": "fax"}),
        ({"base_url": "ftp://x.example"}),
    ]
    for body in bad:
        r = await world.api.put(f"/api/booking/{CLINIC}/system", json=body, headers=world.auth())
        assert r.status_code == 422, (body, r.text)
    await _rotations(world)
    r = await world.api.put(
        "/api/booking/no-such-clinic/system",
        json={"base_url": "http://x.example"},
        headers=world.auth(),
    )
    assert r.status_code == 422 and r.json()["detail"][0]["rule"] == "unknown_clinic"


async def _rotations(world: World) -> None:
    """The inbound secret from JOURNEY_INTEGRATION_SECRETS, then a stored pair during a
    rotation; the outbound secret stays what the booking system verifies."""
    fake = world.fake
    body = json.dumps(
        {"type": "appointment.cancelled", "data": {"external_appointment_id": "R-1"}}
    ).encode()

    async def status(secret: str) -> int:
        message_id = f"rot-{uuid.uuid4()}"
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(time.time())),
            "webhook-signature": sign_standard(secret, message_id, int(time.time()), body),
        }
        return (await fake.post(body, headers)).status_code

    url = f"/api/booking/{CLINIC}/system"
    base = {"base_url": fake.base_url, "webhook_url": fake.url}
    r = await world.api.put(url, json={**base, "integration": "emr"}, headers=world.auth())
    assert r.status_code == 200 and r.json()["signed_with"] == "integration", r.text
    assert r.json()["inbound_secret"] is None
    assert r.json()["outbound_secret"] == fake.outbound_secret  # kept
    # Past the signature: 422, an appointment never seen (only a signed event gets this far).
    assert await status(SECRETS["emr"]) == 422
    assert await status(fake.inbound_secret) == 401
    new = "whsec_" + "bmV3LXNlY3JldC1mb3ItdGVzdHMtMzItYnl0ZXMhIQ=="
    r = await world.api.put(
        url, json={**base, "secret": f"{new} {fake.inbound_secret}"}, headers=world.auth()
    )
    assert r.status_code == 200, r.text
    assert await status(new) == 422 and await status(fake.inbound_secret) == 422
    assert await status(SECRETS["emr"]) == 401
    r = await world.api.put(url, json={**base, "secret": fake.inbound_secret}, headers=world.auth())
    assert r.status_code == 200 and await status(new) == 401
    live = await world.pool.fetchval(
        "SELECT count(*) FROM webhook_subscribers WHERE clinic_id = $1 AND disabled_at IS NULL",
        CLINIC,
    )
    assert live == 1  # each registration replaced the subscription
    await world.pool.execute("DELETE FROM booking_events")


async def test_signatures_are_refused_and_unknown_ids_answered(world: World) -> None:
    fake = world.fake
    body = json.dumps(
        {
            "type": "appointment.created",
            "data": {
                "external_appointment_id": "A-0",
                "external_patient_id": "NOBODY",
                "session": 1,
                "starts_at": "2027-03-08T10:00:00+00:00",
            },
        }
    ).encode()
    unsigned = await fake.post(body, {"content-type": "application/json", "webhook-id": "m1"})
    assert unsigned.status_code == 401
    wrong = await fake.post(body, fake.sign("m1", body, secret=world.registered["outbound_secret"]))
    assert wrong.status_code == 401 and wrong.json()["detail"][0]["rule"] == "bad_signature"
    stale = await fake.post(body, fake.sign("m1", body, at=datetime.now(UTC) - timedelta(hours=1)))
    assert stale.status_code == 401
    tampered = await fake.post(body.replace(b"A-0", b"A-9"), fake.sign("m1", body))
    assert tampered.status_code == 401
    # A clinic with no booking system: the same 401 (nobody learns which clinics have one).
    elsewhere = await fake.post(body, fake.sign("m1", body), clinic_id=OTHER)
    assert elsewhere.status_code == 401
    # Unsigned requests are not logged (nobody to attribute them to).
    assert await world.events() == []

    # Signed, but nobody we know: 422 with what to send.
    unknown = await fake.send(
        "created",
        external_appointment_id="A-0",
        external_patient_id="NOBODY",
        session=1,
        starts_at=at("2027-03-08", 10),
    )
    assert unknown.status_code == 422, unknown.answer
    [item] = unknown.answer["detail"]
    assert item["rule"] == "unknown_patient" and "NOBODY" in item["message"]
    no_such = await fake.send(
        "created",
        external_appointment_id="A-0",
        external_patient_id="P-0",
        patient_id="p_doesnotexist",
        session=1,
        starts_at=at("2027-03-08", 10),
    )
    assert no_such.status_code == 422 and no_such.answer["detail"][0]["rule"] == "unknown_patient"
    # An appointment never seen, without its session: 422.
    orphan = await fake.send("cancelled", external_appointment_id="A-404")
    assert orphan.status_code == 422
    # A bad body, signed: 422 with the field.
    bad = await fake.send("created", external_appointment_id="A-0", session=1)
    assert bad.status_code == 422 and bad.answer["detail"][0]["field"].startswith("body")
    logged = await world.events()
    assert [e["status"] for e in logged] == ["refused"] * 4
    assert logged[-1]["reasons"][0]["rule"] == "unknown_patient"
    assert await world.pool.fetchval("SELECT count(*) FROM booking_patients") == 0

    # Disabled: its events are refused from now on.
    r = await world.api.delete(f"/api/booking/{CLINIC}/system", headers=world.auth())
    assert r.status_code == 200 and r.json()["disabled_at"] is not None
    again = await fake.send("cancelled", external_appointment_id="A-404")
    assert again.status_code == 401


# ---------------------------------------------------------------- the whole appointment life


async def test_the_booking_system_books_moves_cancels_and_completes(world: World) -> None:
    fake = world.fake
    pid = await world.enrol()
    window = await world.window(pid)
    assert (window["session"], window["course"], window["clinic_id"]) == (1, 1, CLINIC)
    days = window["allowed_days"]
    assert days and window["earliest"] == days[0] and window["latest"] == days[-1]
    assert (await world.session(pid))["state"] == "planned"
    ids = {"external_appointment_id": "A-1", "session": 1, "course": 1}

    # Outside the window: 409 with the reasons, kept for staff, nothing booked.
    outside = await fake.send(
        "created",
        external_patient_id="P-1",
        patient_id=pid,
        starts_at=at(days[-1], 10) + timedelta(days=60),
        **ids,
    )
    assert outside.status_code == 409, outside.answer
    assert outside.answer["error"] == "FactKeptForStaff"
    assert outside.answer["outcome"] == "kept_for_staff"
    assert outside.answer["detail"] and all(r["message"] for r in outside.answer["detail"])
    assert (await world.session(pid))["state"] == "planned"
    # The first event recorded both mappings (the patient, and the appointment → session 1).
    assert (
        await world.pool.fetchval(
            "SELECT patient_id FROM booking_patients WHERE clinic_id = $1 AND "
            "external_patient_id = 'P-1'",
            CLINIC,
        )
        == pid
    )

    # The booking system moves it inside the window: booked at its time. Later events name
    # only the booking system's ids.
    inside = at(days[min(2, len(days) - 1)], 14, 30)
    moved_in = await fake.send(
        "rescheduled", external_appointment_id="A-1", external_patient_id="P-1", starts_at=inside
    )
    assert moved_in.status_code == 200, moved_in.answer
    assert moved_in.answer["outcome"] == "applied" and moved_in.answer["session"] == 1
    s = await world.wait_session(pid, state="booked")
    assert datetime.fromisoformat(s["starts_at"]) == inside

    # The same webhook-id again: a duplicate, the journey is not asked again.
    replay_body = moved_in.body
    raw = json.dumps(replay_body).encode()
    replay = await fake.post(raw, fake.sign(moved_in.webhook_id, raw))
    assert replay.status_code == 200 and replay.json()["duplicate"] is True
    assert replay.json()["outcome"] == "duplicate"
    # ... and a different event under that id is refused.
    other = await fake.send(
        "cancelled", webhook_id=moved_in.webhook_id, external_appointment_id="A-1"
    )
    assert other.status_code == 422
    assert other.answer["detail"][0]["rule"] == "idempotency_key_reused"

    # Moved again inside the window.
    later = at(days[-1], 9, 15)
    moved = await fake.send("rescheduled", external_appointment_id="A-1", starts_at=later)
    assert moved.status_code == 200, moved.answer
    await world.wait_session(pid, state="booked", starts_at=later)

    # Cancelled: planned again, and the window is published again.
    cancelled = await fake.send("cancelled", external_appointment_id="A-1")
    assert cancelled.status_code == 200, cancelled.answer
    await world.wait_session(pid, state="planned")
    second = await world.window(pid, count=2)
    assert second["session"] == 1 and second["window_id"] != window["window_id"]

    # A new appointment in the new window, early in a day soon: it becomes due, then completed.
    day = second["allowed_days"][min(1, len(second["allowed_days"]) - 1)]
    start = at(day, 0, 30)
    created = await fake.send(
        "created",
        external_appointment_id="A-2",
        external_patient_id="P-1",
        session=1,
        starts_at=start,
    )
    assert created.status_code == 200, created.answer
    await world.wait_stage(pid, "session_due")
    await asyncio.sleep(2)  # ~3 simulated hours: the completion is not in the journey's future
    done = await fake.send(
        "completed", external_appointment_id="A-2", completed_at=start + timedelta(minutes=50)
    )
    assert done.status_code == 200, done.answer
    await world.wait_session(pid, state="done")

    # The mappings and the log, as staff see them.
    r = await world.api.get(
        f"/api/booking/{CLINIC}/appointments", params={"patient_id": pid}, headers=world.auth()
    )
    mapped = {a["external_appointment_id"]: a for a in r.json()["data"]}
    assert (mapped["A-1"]["status"], mapped["A-1"]["session_number"]) == ("cancelled", 1)
    assert (mapped["A-2"]["status"], mapped["A-2"]["outcome"]) == ("completed", "applied")
    assert mapped["A-2"]["workflow_id"] == f"journey-{pid}" and mapped["A-2"]["course_number"] == 1
    statuses = [
        (e["event_type"], e["status"], e["http_status"]) for e in reversed(await world.events())
    ]
    assert statuses == [
        ("appointment.created", "anomaly", 409),
        ("appointment.rescheduled", "applied", 200),
        ("appointment.rescheduled", "duplicate", 200),
        ("appointment.cancelled", "refused", 422),
        ("appointment.rescheduled", "applied", 200),
        ("appointment.cancelled", "applied", 200),
        ("appointment.created", "applied", 200),
        ("appointment.completed", "applied", 200),
    ]
    r = await world.api.get(f"/api/booking/{CLINIC}/patients", headers=world.auth())
    assert [
        (p["external_patient_id"], p["patient_id"], p["mapped_by"]) for p in r.json()["data"]
    ] == [("P-1", pid, "event")]
    # The booking system heard what the journey did with its events.
    assert "journey.session_booked" in fake.types()


async def test_a_no_show_and_a_staff_mapped_patient(world: World) -> None:
    fake = world.fake
    pid = await world.enrol()
    # Staff map the booking system's patient id first; its events then need no id of ours.
    r = await world.api.put(
        f"/api/booking/{CLINIC}/patients",
        json={"external_patient_id": "P-2", "patient_id": pid},
        headers=world.auth(),
    )
    assert r.status_code == 200 and r.json()["mapped_by"] == "staff", r.text
    r = await world.api.put(
        f"/api/booking/{CLINIC}/patients",
        json={"external_patient_id": "P-2", "patient_id": "p_someoneelse"},
        headers=world.auth(),
    )
    assert r.status_code == 422  # not a patient of this clinic
    window = await world.window(pid)
    day = window["allowed_days"][min(1, len(window["allowed_days"]) - 1)]
    start = at(day, 0, 30)
    # Two copies of one event race each other: applied once, the other a duplicate.
    message_id = f"msg_{uuid.uuid4().hex}"
    copies = await asyncio.gather(
        *(
            fake.send(
                "created",
                webhook_id=message_id,
                external_appointment_id="B-1",
                external_patient_id="P-2",
                session=1,
                starts_at=start,
            )
            for _ in range(2)
        )
    )
    assert [c.status_code for c in copies] == [200, 200], [c.answer for c in copies]
    assert sorted(c.answer["outcome"] for c in copies) == ["applied", "duplicate"]
    assert all(c.answer["patient_id"] == pid for c in copies)
    booked = [e for e in await _timeline(world, pid) if e == "session_booked"]
    assert len(booked) == 1
    # An id conflict: the appointment belongs to P-2's patient, not to another one.
    clash = await fake.send("no_show", external_appointment_id="B-1", patient_id="p_another")
    assert clash.status_code == 422 and clash.answer["detail"][0]["rule"] == "id_conflict"
    await world.wait_stage(pid, "session_due")
    await asyncio.sleep(2)
    no_show = await fake.send("no_show", external_appointment_id="B-1")
    assert no_show.status_code == 200, no_show.answer
    detail = await eventually(lambda: _flagged(world, pid), timeout=30)
    assert "no_show" in detail["status"]["flags"]
    # The journey asks the booking system for a new appointment: a new window for session 1.
    again = await world.window(pid, count=2)
    assert again["session"] == 1 and again["window_id"] != window["window_id"]


async def _timeline(world: World, pid: str) -> list[str]:
    rows = await repository.get_timeline(world.pool, f"journey-{pid}")
    return [r.kind for r in rows]


async def _flagged(world: World, pid: str) -> dict[str, Any] | None:
    detail = await world.journey(pid)
    return detail if "no_show" in detail["status"].get("flags", []) else None


async def test_windows_published_before_registration_reach_the_booking_system(
    world: World,
) -> None:
    # The booking system is off while a journey publishes its window.
    r = await world.api.delete(f"/api/booking/{CLINIC}/system", headers=world.auth())
    assert r.status_code in (200, 204), r.text
    pid = await world.enrol()

    async def published() -> int | None:
        found: int | None = await world.pool.fetchval(
            "SELECT min(id) FROM journey_events WHERE workflow_id = $1 AND kind = 'session_window'",
            f"journey-{pid}",
        )
        return found

    event_id = await eventually(published, timeout=60)

    async def fanned_out() -> bool:
        left = await world.pool.fetchval(
            "SELECT count(*) FROM webhook_fanout WHERE event_id = $1", event_id
        )
        return left == 0

    # The dispatcher has fanned the window out (to nobody: the booking system is off).
    await eventually(fanned_out, timeout=30)
    assert pid not in world.fake.windows
    # Registered again: the open window goes out to it (the same event, the same webhook-id).
    r = await world.api.put(
        f"/api/booking/{CLINIC}/system",
        json={"base_url": world.fake.base_url, "webhook_url": world.fake.url},
        headers=world.auth(),
    )
    assert r.status_code == 200, r.text
    world.fake.inbound_secret = r.json()["inbound_secret"]
    world.fake.outbound_secret = r.json()["outbound_secret"]
    window = await world.window(pid)
    assert window["session"] == 1 and window["window_id"] == f"evt_{event_id}"
