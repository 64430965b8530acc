"""Channels that send (issue 18, docs/messaging.md), through real local servers: e-mail to an
aiosmtpd server, SMS to a Twilio-compatible provider over HTTP, its signed status callbacks to the
real API under uvicorn, and the outbox on a real PostgreSQL. Delivery, failure, fallback to the
other channel, a staff alert when nothing delivers, and exactly-once under a retried send."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from temporalio.testing import ActivityEnvironment

from activities import repository
from activities.channels import (
    Attachment,
    OutgoingMessage,
    PermanentDeliveryError,
    RoutingChannel,
    SmsChannel,
    SmtpChannel,
)
from activities.dispatcher import OutboxDispatcher
from activities.store import JourneyStore
from api.main import create_app
from tests.messaging_fakes import FakeSmsProvider, LocalSmtpServer, free_port, serve_asgi
from tests.status_helpers import full_status
from tests.test_api import make_settings
from worker.notifications import build_channel, build_sms_channel
from workflows.records import NotificationRecord, StepRecord

SESSION = {"session": "1", "starts_at": "2026-03-03T09:00:00+00:00", "timezone": "UTC"}
PHONE = "+15550001111"
SENDER = "clinic@example.org"
STAFF = "front-desk@example.org"


@pytest.fixture
def smtp() -> Iterator[LocalSmtpServer]:
    server = LocalSmtpServer()
    server.start()
    yield server
    server.stop()


@dataclass
class Messaging:
    pool: asyncpg.Pool
    smtp: LocalSmtpServer
    provider: FakeSmsProvider
    dispatcher: OutboxDispatcher


@pytest.fixture
async def messaging(
    pg_pool: asyncpg.Pool, pg_dsn: str, smtp: LocalSmtpServer
) -> AsyncIterator[Messaging]:
    """The SMS provider and the API (its status callback) served over HTTP, and a dispatcher
    with the channels the worker builds from these settings."""
    provider = FakeSmsProvider()
    api_port = free_port()
    settings = make_settings(
        database_url=pg_dsn,
        temporal_address="127.0.0.1:1",  # the callback needs no Temporal
        journey_public_url=f"http://127.0.0.1:{api_port}",
        notification_channel="smtp",
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_sender=SENDER,
        sms_base_url=provider.base_url,
        sms_account_sid=provider.account,
        sms_auth_token=provider.token,
        sms_sender="+15559990000",
    )
    channel = build_channel(settings)
    assert isinstance(channel, RoutingChannel) and isinstance(channel.email, SmtpChannel)
    channel.email.staff_to = STAFF
    async with (
        serve_asgi(provider.app(), provider.port),
        serve_asgi(create_app(settings), api_port),
    ):
        yield Messaging(pg_pool, smtp, provider, OutboxDispatcher(pg_pool, channel))


async def enqueue(pool: asyncpg.Pool, key: str = "c1:booked", **patient: Any) -> str:
    """A patient (``patient``: the record's fields) and a booking confirmation in the outbox."""
    await repository.ensure_default_clinic(pool)
    record = await repository.create_patient(
        pool, repository.PatientCreate(full_name="Ada Lovelace", **patient)
    )
    workflow_id = f"journey-{record.patient_id}"
    await ActivityEnvironment().run(
        JourneyStore(pool).record_step,
        StepRecord(
            workflow_id=workflow_id,
            step=1,
            patient_id=record.patient_id,
            clinic_id="default",
            status_patch=full_status(record.patient_id),
            notifications=[
                NotificationRecord(key=key, kind="booking_confirmation", params=SESSION)
            ],
        ),
    )
    return workflow_id


async def rows(pool: asyncpg.Pool) -> list[tuple[str, str, str, str | None]]:
    found = await pool.fetch(
        "SELECT notification_key, channel, status, delivery_status FROM notification_outbox"
        " ORDER BY id"
    )
    return [(r["notification_key"], r["channel"], r["status"], r["delivery_status"]) for r in found]


async def test_email_is_text_and_html_with_the_invite_from_the_clinic(
    smtp: LocalSmtpServer,
) -> None:
    channel = SmtpChannel("127.0.0.1", smtp.port, None, None, SENDER)
    message = OutgoingMessage(
        channel="email",
        to="ada@example.com",
        subject="Your session",
        body="Dear Ada,\n\nSee you <soon> & well.\n",
        sender_name="Pore Clinic Berlin",
        attachments=(
            Attachment(
                filename="session.ics",
                content_type="text/calendar; method=REQUEST; charset=utf-8",
                content="BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n",
            ),
        ),
    )
    receipt = await channel.send(message, "journey-p1:c1:booked")
    [mail] = smtp.received
    assert mail["From"].addresses[0].display_name == "Pore Clinic Berlin"
    assert mail["From"].addresses[0].addr_spec == SENDER
    assert mail["Message-ID"] == receipt.provider_message_id and receipt.status == "sent"
    text = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert text is not None and "See you <soon> & well." in text.get_content()
    assert html is not None and "<p>See you &lt;soon&gt; &amp; well.</p>" in html.get_content()
    [invite] = list(mail.iter_attachments())
    assert invite.get_content_type() == "text/calendar"
    assert invite.get_param("method") == "REQUEST"
    assert invite.get_filename() == "session.ics"


async def test_a_refused_recipient_is_permanent(smtp: LocalSmtpServer) -> None:
    smtp.refused.add("gone@example.com")
    channel = SmtpChannel("127.0.0.1", smtp.port, None, None, SENDER)
    message = OutgoingMessage(channel="email", to="gone@example.com", subject="s", body="b")
    with pytest.raises(PermanentDeliveryError, match="550"):
        await channel.send(message, "k")
    assert smtp.received == []


async def test_sms_is_sent_and_the_signed_callbacks_move_its_status(messaging: Messaging) -> None:
    m = messaging
    await enqueue(m.pool, phone=PHONE, preferred_channel="sms")
    assert await m.dispatcher.run_once() == 1
    [sms] = m.provider.sent
    assert sms.to == PHONE and "Dear Ada Lovelace," in sms.body
    assert await rows(m.pool) == [("c1:booked", "sms", "sent", "queued")]
    assert await m.pool.fetchval("SELECT provider_message_id FROM notification_outbox") == sms.sid

    forged = await m.provider.report(sms.sid, "failed", "30003", sign_with="AAAA")
    assert forged.status_code == 401
    assert (await m.provider.report(sms.sid, "sent")).json() == {"result": "applied"}
    assert (await m.provider.report(sms.sid, "delivered")).json() == {"result": "applied"}
    late = await m.provider.report(sms.sid, "sent")  # out of order: never moves backwards
    assert late.json() == {"result": "stale"}
    assert await rows(m.pool) == [("c1:booked", "sms", "sent", "delivered")]
    assert m.smtp.received == []  # nothing fell back


async def test_a_retried_sms_is_sent_once(messaging: Messaging) -> None:
    m = messaging
    """The provider takes the message but its answer is lost: the dispatcher retries with the
    same provider key, and the provider answers the first message instead of sending again."""
    await enqueue(m.pool, phone=PHONE, preferred_channel="sms")
    m.provider.lose_responses = 1
    assert await m.dispatcher.run_once() == 1
    assert await rows(m.pool) == [("c1:booked", "sms", "pending", None)]
    await m.pool.execute("UPDATE notification_outbox SET next_attempt_at = now()")
    assert await m.dispatcher.run_once() == 1
    [sms] = m.provider.sent
    assert m.provider.requests == 2
    assert await rows(m.pool) == [("c1:booked", "sms", "sent", "queued")]
    assert await m.pool.fetchval("SELECT provider_message_id FROM notification_outbox") == sms.sid
    assert m.dispatcher.counts == {"retry": 1, "sent": 1}


async def test_an_invalid_number_falls_back_to_email(messaging: Messaging) -> None:
    m = messaging
    await enqueue(m.pool, phone=PHONE, email="ada@example.com", preferred_channel="sms")
    m.provider.invalid_numbers.add(PHONE)
    assert await m.dispatcher.run_once() == 1
    assert await rows(m.pool) == [
        ("c1:booked", "sms", "failed", None),
        ("c1:booked~via-email", "email", "pending", None),
    ]
    assert "21211" in await m.pool.fetchval(
        "SELECT last_error FROM notification_outbox WHERE channel = 'sms'"
    )
    assert await m.dispatcher.run_once() == 1
    [mail] = m.smtp.received
    assert mail["To"] == "ada@example.com" and m.provider.sent == []
    assert (await rows(m.pool))[1] == ("c1:booked~via-email", "email", "sent", "sent")


async def test_a_message_no_channel_delivers_becomes_a_staff_alert(messaging: Messaging) -> None:
    m = messaging
    wf = await enqueue(m.pool, phone=PHONE, email="ada@example.com", preferred_channel="sms")
    m.provider.invalid_numbers.add(PHONE)
    m.smtp.refused.add("ada@example.com")
    for _ in range(3):  # the SMS, its e-mail fallback, the staff alert
        assert await m.dispatcher.run_once() == 1
    assert await rows(m.pool) == [
        ("c1:booked", "sms", "failed", None),
        ("c1:booked~via-email", "email", "failed", None),
        ("c1:booked~undeliverable", "staff", "sent", "sent"),
    ]
    [alert] = m.smtp.received
    assert alert["To"] == STAFF
    assert "Message not delivered" in alert["Subject"]
    assert wf.removeprefix("journey-") in alert["Subject"]
    body = alert.get_body(("plain",))
    assert body is not None and "Ada" not in body.get_content()  # staff alerts name the id only


async def test_an_undelivered_status_falls_back_to_email(messaging: Messaging) -> None:
    m = messaging
    await enqueue(m.pool, phone=PHONE, email="ada@example.com", preferred_channel="sms")
    assert await m.dispatcher.run_once() == 1
    [sms] = m.provider.sent
    answer = await m.provider.report(sms.sid, "undelivered", "30003")
    assert answer.status_code == 200 and answer.json() == {"result": "applied"}
    assert (await m.provider.report(sms.sid, "undelivered", "30003")).json() == {"result": "stale"}
    assert await rows(m.pool) == [
        ("c1:booked", "sms", "sent", "failed"),
        ("c1:booked~via-email", "email", "pending", None),
    ]
    assert "30003" in await m.pool.fetchval(
        "SELECT delivery_error FROM notification_outbox WHERE channel = 'sms'"
    )
    assert await m.dispatcher.run_once() == 1
    assert [mail["To"] for mail in m.smtp.received] == ["ada@example.com"]


async def test_without_a_provider_sms_is_refused_for_good(smtp: LocalSmtpServer) -> None:
    channel = RoutingChannel(SmtpChannel("127.0.0.1", smtp.port, None, None, SENDER), None)
    message = OutgoingMessage(channel="sms", to=PHONE, subject="s", body="b")
    with pytest.raises(PermanentDeliveryError, match="no SMS provider"):
        await channel.send(message, "k")


async def test_a_refused_provider_login_is_permanent(messaging: Messaging) -> None:
    m = messaging
    channel = SmsChannel(m.provider.base_url, m.provider.account, "wrong-token", "+15559990000")
    message = OutgoingMessage(channel="sms", to=PHONE, subject="s", body="b")
    with pytest.raises(PermanentDeliveryError, match="401"):
        await channel.send(message, "k")


def test_sms_settings_are_checked() -> None:
    assert build_sms_channel(make_settings()) is None
    with pytest.raises(ValueError, match="SMS_AUTH_TOKEN and SMS_SENDER"):
        build_sms_channel(make_settings(sms_account_sid="AC1", sms_auth_token="t"))
    channel = build_sms_channel(
        make_settings(
            sms_account_sid="AC1",
            sms_auth_token="t",
            sms_sender="+15559990000",
            journey_public_url="https://journey.clinic.example/",
        )
    )
    assert channel is not None
    assert channel.url == "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json"
    assert channel.status_callback == "https://journey.clinic.example/api/messaging/sms-status"
