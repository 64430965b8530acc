"""Two-way replies (issue 18 item 2, docs/messaging.md) through the whole stack: a journey on the
Temporal dev server with the real activities on PostgreSQL, the API under uvicorn at its public
URL, the Twilio-compatible fake provider posting signed inbound SMS to it, a mail relay posting
Standard-Webhooks-signed e-mail replies, and the dispatcher sending the answers through the fake
provider and the local SMTP server. Then the staff pages that show them (issue 18 item 5)."""

from __future__ import annotations

import functools
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from activities import repository
from activities.channels import RoutingChannel, SmtpChannel
from activities.dispatcher import OutboxDispatcher
from activities.replies import store_reply
from activities.store import build_activities
from api.inbound import sign_standard
from api.main import create_app
from api.tokens import patient_link
from scheduling.store import sync_clinic
from tests.fixtures_temporal import new_worker
from tests.messaging_fakes import FakeSmsProvider, LocalSmtpServer, free_port, serve_asgi
from tests.test_api import eventually, make_settings
from tests.test_journey_slots import scheduling
from tests.test_messaging import PHONE, SENDER, STAFF, smtp  # noqa: F401
from worker.notifications import build_channel

MAIL_SECRET = "mail-relay-secret-for-tests"


@dataclass
class Replies:
    pool: asyncpg.Pool
    http: httpx.AsyncClient
    smtp: LocalSmtpServer
    provider: FakeSmsProvider
    dispatcher: OutboxDispatcher
    admin: str
    base_url: str

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin}"}

    async def sms(self, body: str, sid: str | None = None, sender: str = PHONE) -> httpx.Response:
        response = await self.provider.send_inbound(
            f"{self.base_url}/api/messaging/sms-reply", sender, body, sid=sid
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/xml")
        return response

    async def email(
        self, text: str, message_id: str, sender: str = "ada@example.com", secret: str = MAIL_SECRET
    ) -> httpx.Response:
        body = json.dumps(
            {"message_id": message_id, "from": sender, "subject": "Re: booked", "text": text}
        ).encode()
        webhook_id = f"msg_{uuid.uuid4().hex}"
        now = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(now),
            "webhook-signature": sign_standard(secret, webhook_id, now, body),
        }
        return await self.http.post("/api/messaging/email-reply", content=body, headers=headers)

    async def status(self, patient_id: str) -> dict[str, Any]:
        r = await self.http.get(f"/api/journeys/{patient_id}", headers=self.auth())
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def login(self) -> None:
        """Sign in to the staff pages (the session cookie stays on ``http``)."""
        form = await self.http.get("/login")
        match = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert match is not None
        await self.http.post("/login", data={"csrf_token": match.group(1), "token": self.admin})

    async def send_all(self) -> None:
        while await self.dispatcher.run_once():
            pass


@pytest.fixture
async def replies(
    dev_env: WorkflowEnvironment,
    pg_pool: asyncpg.Pool,
    pg_dsn: str,
    smtp: LocalSmtpServer,  # noqa: F811
) -> AsyncIterator[Replies]:
    provider = FakeSmsProvider()
    port = free_port()
    task_queue = f"tq-{uuid.uuid4()}"
    settings = make_settings(
        database_url=pg_dsn,
        temporal_address=dev_env.client.service_client.config.target_host,
        temporal_task_queue=task_queue,
        journey_public_url=f"http://127.0.0.1:{port}",
        mail_relay_secret=MAIL_SECRET,
        notification_channel="smtp",
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_sender=SENDER,
        sms_base_url=provider.base_url,
        sms_account_sid=provider.account,
        sms_auth_token=provider.token,
        sms_sender="+15559990000",
    )
    _, admin = await repository.create_staff_user(pg_pool, "Ada Admin", "admin")
    channel = build_channel(settings)
    assert isinstance(channel, RoutingChannel) and isinstance(channel.email, SmtpChannel)
    channel.email.staff_to = STAFF
    dispatcher = OutboxDispatcher(
        pg_pool, channel, patient_link=functools.partial(patient_link, settings)
    )
    base_url = settings.journey_public_url
    async with (
        new_worker(dev_env.client, build_activities(pg_pool), task_queue=task_queue),
        serve_asgi(provider.app(), provider.port),
        serve_asgi(create_app(settings), port),
        httpx.AsyncClient(base_url=base_url, timeout=30) as http,
    ):
        yield Replies(pg_pool, http, smtp, provider, dispatcher, admin, base_url)


async def booked_patient(r: Replies, **patient: Any) -> str:
    """A patient whose first session is booked and whose confirmation went out by SMS."""
    body = {
        "patient": {
            "full_name": "Ada Lovelace",
            "email": "ada@example.com",
            "phone": PHONE,
            "preferred_channel": "sms",
            **patient,
        },
        "pore_grade": "moderate",
        "numbing_cream": False,
    }
    response = await r.http.post("/api/journeys", json=body, headers=r.auth())
    assert response.status_code == 201, response.text
    patient_id = str(response.json()["patient_id"])

    async def booked() -> bool:
        status = await r.status(patient_id)
        return bool(status["sessions"]) and status["sessions"][0]["state"] == "booked"

    await eventually(booked, timeout=20)

    async def confirmation_sent() -> bool:
        await r.send_all()
        return any("is booked" in m.body for m in r.provider.sent)

    await eventually(confirmation_sent, timeout=20)
    return patient_id


async def events(pool: asyncpg.Pool, patient_id: str, kind: str) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            "SELECT * FROM journey_events WHERE workflow_id = $1 AND kind = $2 ORDER BY id",
            f"journey-{patient_id}",
            kind,
        )
    )


async def test_replies_confirm_reschedule_and_other_by_sms_and_email(replies: Replies) -> None:
    r = replies
    patient_id = await booked_patient(r)

    # "Yes" confirms the session the confirmation was about; a provider retry is a duplicate.
    first = await r.sms("Yes!", sid="SMyes1")
    assert first.headers["X-Reply-Result"] == "applied"
    assert first.headers["X-Reply-Kind"] == "confirm"
    session = (await r.status(patient_id))["sessions"][0]
    assert session["confirmed_at"] is not None
    again = await r.sms("Yes!", sid="SMyes1")
    assert again.headers["X-Reply-Result"] == "duplicate"
    [confirmed] = await events(r.pool, patient_id, "reply_confirmed")
    assert confirmed["actor"] == "patient" and "reply #" in confirmed["summary"]
    assert "Yes" not in json.dumps(dict(confirmed["data"]))  # the text stays in patient_replies

    # "R" asks for another date: up to three allowed times and the patient's link, by SMS.
    resched = await r.sms("r")
    assert resched.headers["X-Reply-Result"] == "applied"
    await r.send_all()
    [offer] = [m for m in r.provider.sent if "Choose one on your page" in m.body]
    assert f"{r.base_url}/p/" in offer.body
    assert offer.body.count("\n- ") == 3
    assert offer.to == PHONE
    [asked] = await events(r.pool, patient_id, "reply_reschedule_asked")
    assert len(asked["data"]["offers"]) == 3

    # Anything else is a staff task (the dashboard shows the text) and a staff alert.
    other = await r.sms("Can I bring my sister along?")
    assert other.headers["X-Reply-Result"] == "staff_task"
    reply_id = await r.pool.fetchval(
        "SELECT id FROM patient_replies WHERE body = 'Can I bring my sister along?'"
    )
    status = await r.status(patient_id)
    assert (
        f"Answer the patient's reply #{reply_id} about session 1"
        in status["status"]["clinician_tasks"]
    )
    await r.send_all()
    alerts = [m for m in r.smtp.received if m["To"] == STAFF]
    assert [a["Subject"].split(":")[0] for a in alerts] == ["[journey] Patient replied"]
    assert "sister" not in str(alerts[0].get_body(("plain",)))

    # E-mail replies come from the mail relay, signed; the quoted message is not read.
    answer = await r.email(
        "Oui\n\n> Your session is booked. Reply STOP",
        "<reply-1@mail.example>",
        sender='"Ada L." <ADA@example.com>',
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == "applied" and answer.json()["kind"] == "confirm"
    repeat = await r.email("Oui", "<reply-1@mail.example>")
    assert repeat.json()["result"] == "duplicate"
    forged = await r.email("STOP", "<reply-2@mail.example>", secret="not-the-relay's")
    assert forged.status_code == 401
    unsigned = await r.http.post("/api/messaging/sms-reply", data={"MessageSid": "SM1"})
    assert unsigned.status_code == 401
    assert await r.pool.fetchval("SELECT count(*) FROM contact_optouts") == 0

    outcomes = await r.pool.fetch("SELECT kind, outcome FROM patient_replies ORDER BY id")
    assert [(o["kind"], o["outcome"]) for o in outcomes] == [
        ("confirm", "applied"),
        ("reschedule", "applied"),
        ("other", "staff_task"),
        ("confirm", "applied"),
    ]


async def test_stop_by_sms_reaches_the_journey_and_the_dashboard(replies: Replies) -> None:
    r = replies
    patient_id = await booked_patient(r)
    stop = await r.sms("STOP")
    assert stop.headers["X-Reply-Result"] == "applied"
    assert stop.headers["X-Reply-Kind"] == "stop"
    await r.send_all()
    assert "no more text messages" in r.provider.sent[-1].body
    [event] = await events(r.pool, patient_id, "contact_opted_out")
    assert "opted out of SMS" in event["summary"]
    unknown = await r.sms("YES", sender="+15550009999")
    assert unknown.headers["X-Reply-Result"] == "unmatched"

    # Staff see the journey's messages with their delivery status and the replies ...
    await r.provider.report(r.provider.sent[0].sid, "delivered")
    await r.login()
    page = await r.http.get(f"/journeys/{patient_id}")
    assert page.status_code == 200, page.text
    html = page.text
    assert "Messages" in html and "booking_confirmation" in html and "delivered" in html
    assert "Replies" in html and "STOP" in html and "contact_opt_out" in html
    assert "confirmed by the patient" not in html

    # ... and, per clinic, the failed deliveries and the opt-outs, linked from the overview.
    overview = await r.http.get("/")
    assert "/clinics/default/messaging" in overview.text
    await r.pool.execute(
        """
        UPDATE notification_outbox SET status = 'failed', last_error = 'SMTP 550: no such user'
        WHERE kind = 'contact_opt_out'
        """
    )
    clinic = await r.http.get("/clinics/default/messaging")
    assert clinic.status_code == 200, clinic.text
    assert patient_id in clinic.text and "SMTP 550" in clinic.text
    assert "sms reply STOP" in clinic.text


async def test_a_reschedule_reply_offers_the_clinics_free_times(replies: Replies) -> None:
    """With resources on file (built-in scheduling), the answer offers real free slots (the
    free-times search the patient's page uses), not just allowed days."""
    r = replies
    await repository.ensure_default_clinic(r.pool)
    await sync_clinic(r.pool, "default", scheduling("09:00-12:00"))
    patient_id = await booked_patient(r)
    free = await r.http.get(
        f"/api/journeys/{patient_id}/sessions/1/free-times", params={"limit": 3}, headers=r.auth()
    )
    assert free.status_code == 200, free.text
    expected = [t["starts_at"] for t in free.json()["free_times"]][:3]
    assert len(expected) == 3

    answer = await r.sms("Reschedule")
    assert answer.headers["X-Reply-Result"] == "applied"
    [asked] = await events(r.pool, patient_id, "reply_reschedule_asked")
    offered = [datetime.fromisoformat(t) for t in asked["data"]["offers"]]
    assert offered == [datetime.fromisoformat(t) for t in expected]
    await r.send_all()
    [offer] = [m for m in r.provider.sent if "Choose one on your page" in m.body]
    assert offer.body.count("\n- ") == 3


async def test_a_reply_kept_while_the_journey_was_unreachable_is_reported_on_retry(
    replies: Replies,
) -> None:
    """The first delivery kept the reply but could not reach the journey (Temporal down: 503):
    the provider's retry of the same message reports it, once."""
    r = replies
    patient_id = await booked_patient(r)
    kept = await store_reply(
        r.pool, provider_message_id="SMlost", channel="sms", sender=PHONE, body="Ja"
    )
    assert kept.new and kept.outcome is None
    retry = await r.sms("Ja", sid="SMlost")
    assert retry.headers["X-Reply-Result"] == "applied"
    assert (await r.status(patient_id))["sessions"][0]["confirmed_at"] is not None
    assert (await r.sms("Ja", sid="SMlost")).headers["X-Reply-Result"] == "duplicate"
    await r.login()
    page = await r.http.get(f"/journeys/{patient_id}")
    assert "confirmed by the patient" in page.text
    assert await r.pool.fetchval("SELECT count(*) FROM patient_replies") == 1
