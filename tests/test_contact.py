"""Consent to be contacted and quiet hours (issue 18 item 3, docs/messaging.md), through the real
dispatcher, the local SMTP server and the Twilio-compatible fake provider over HTTP, on a real
PostgreSQL. STOP/START arrive as stored replies (activities/replies.py); the journey side of
replies is in tests/test_replies.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any

import asyncpg
import pytest

from activities.channels import RoutingChannel, SmsChannel, SmtpChannel
from activities.contact import quiet_until
from activities.dispatcher import OutboxDispatcher
from activities.replies import classify, store_reply
from tests.messaging_fakes import FakeSmsProvider, LocalSmtpServer, serve_asgi
from tests.test_messaging import PHONE, SENDER, STAFF, enqueue, rows, smtp  # noqa: F401

BERLIN = "Europe/Berlin"


@dataclass
class Contact:
    pool: asyncpg.Pool
    smtp: LocalSmtpServer
    provider: FakeSmsProvider
    clock: list[datetime]

    def dispatcher(self, **options: Any) -> OutboxDispatcher:
        email = SmtpChannel("127.0.0.1", self.smtp.port, None, None, SENDER, staff_to=STAFF)
        sms = SmsChannel(
            self.provider.base_url, self.provider.account, self.provider.token, "+15559990000"
        )
        return OutboxDispatcher(
            self.pool, RoutingChannel(email, sms), clock=lambda: self.clock[0], **options
        )


@pytest.fixture
async def contact(pg_pool: asyncpg.Pool, smtp: LocalSmtpServer) -> AsyncIterator[Contact]:  # noqa: F811
    provider = FakeSmsProvider()
    async with serve_asgi(provider.app(), provider.port):
        yield Contact(pg_pool, smtp, provider, [datetime(2026, 3, 3, 12, 0, tzinfo=UTC)])


async def patient_of(pool: asyncpg.Pool, workflow_id: str) -> str:
    return workflow_id.removeprefix("journey-")


async def add(pool: asyncpg.Pool, workflow_id: str, key: str, kind: str, channel: str) -> None:
    """Another outbox row for the same patient (as a journey step writes it)."""
    await pool.execute(
        """
        INSERT INTO notification_outbox
            (workflow_id, notification_key, patient_id, kind, audience, channel, params,
             provider_key)
        VALUES ($1, $2, $3, $4, CASE WHEN $5 = 'staff' THEN 'staff' ELSE 'patient' END, $5,
                '{"session": "1"}'::jsonb, $1 || ':' || $2)
        """,
        workflow_id,
        key,
        workflow_id.removeprefix("journey-"),
        kind,
        channel,
    )


def test_reply_words_in_four_languages() -> None:
    for word in (
        "YES",
        "y",
        " c ",
        "Confirm.",
        "Ja",
        "BESTÄTIGEN",
        "oui!",
        "Sí",
        "si",
        "CONFIRMAR",
    ):
        assert classify(word, "sms") == "confirm", word
    for word in ("R", "reschedule", "Change", "verschieben", "ändern", "changer", "cambiar"):
        assert classify(word, "sms") == "reschedule", word
    for word in ("STOP", "Unsubscribe", "ARRÊT", "arret", "STOPP", "Baja", "stop all"):
        assert classify(word, "sms") == "stop", word
    for word in ("START", "unstop"):
        assert classify(word, "sms") == "start", word
    for text in ("Yes please, but can I come at 10?", "my skin is red", "", "STOP IT NOW"):
        assert classify(text, "sms") == "other", text
    quoted = "Oui\n\nLe mar. 3 mars 2026, Clinique a écrit :\n> Votre séance est réservée"
    assert classify(quoted, "email") == "confirm"
    assert classify("yes\r\n\r\nOn Tue, 3 Mar 2026, Clinic wrote:\r\n> STOP", "email") == "confirm"


def test_quiet_hours_in_the_clinics_zone() -> None:
    winter_night = datetime(2026, 3, 3, 2, 30, tzinfo=UTC)  # 03:30 in Berlin
    assert quiet_until(winter_night, BERLIN, None, None) == datetime(2026, 3, 3, 7, 0, tzinfo=UTC)
    evening = datetime(2026, 7, 1, 18, 30, tzinfo=UTC)  # 20:30 in Berlin (summer time)
    assert quiet_until(evening, BERLIN, None, None) == datetime(2026, 7, 2, 6, 0, tzinfo=UTC)
    assert quiet_until(datetime(2026, 3, 3, 7, 0, tzinfo=UTC), BERLIN, None, None) is None
    # The night the clocks go forward (29 March 2026): 08:00 local is 06:00 UTC.
    spring = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    assert quiet_until(spring, BERLIN, None, None) == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)
    assert quiet_until(winter_night, BERLIN, time(0, 0), time(0, 0)) is None  # none configured
    lunch = datetime(2026, 3, 3, 11, 30, tzinfo=UTC)
    assert quiet_until(lunch, BERLIN, time(12, 0), time(14, 0)) == datetime(
        2026, 3, 3, 13, 0, tzinfo=UTC
    )


async def test_a_message_due_in_quiet_hours_waits_until_8_in_the_clinics_zone(
    contact: Contact,
) -> None:
    c = contact
    wf = await enqueue(c.pool, email="ada@example.com")
    await add(c.pool, wf, "c1:alert", "staff_alert", "staff")
    await c.pool.execute(
        "UPDATE clinics SET timezone = $1, quiet_hours_start = '20:00', quiet_hours_end = '08:00'",
        BERLIN,
    )
    c.clock[0] = datetime(2026, 3, 3, 2, 30, tzinfo=UTC)  # 03:30 in Berlin
    dispatcher = c.dispatcher()
    assert await dispatcher.run_once() == 2
    assert dispatcher.counts == {"held": 1, "sent": 1}
    [alert] = c.smtp.received  # staff alerts are not held
    assert alert["To"] == STAFF
    held = await c.pool.fetchrow(
        "SELECT status, attempts, next_attempt_at FROM notification_outbox"
        " WHERE notification_key = 'c1:booked'"
    )
    assert held["status"] == "pending" and held["attempts"] == 0
    assert held["next_attempt_at"] == datetime(2026, 3, 3, 7, 0, tzinfo=UTC)  # 08:00 Berlin

    # The database's clock is past that already; the fixed clock is not: still held.
    assert await dispatcher.run_once() == 1
    assert dispatcher.counts["held"] == 2 and len(c.smtp.received) == 1
    c.clock[0] = datetime(2026, 3, 3, 7, 0, tzinfo=UTC)
    assert await dispatcher.run_once() == 1
    assert [m["To"] for m in c.smtp.received] == [STAFF, "ada@example.com"]
    assert ("c1:booked", "email", "sent", "sent") in await rows(c.pool)

    # A sandbox clinic (simulation clock: the demo, training) is never held.
    await c.pool.execute(
        "UPDATE clinics SET protocol = jsonb_set(protocol, '{clinic,sandbox}', 'true')"
    )
    await add(c.pool, wf, "c1:reminder", "session_reminder", "email")
    c.clock[0] = datetime(2026, 3, 3, 22, 0, tzinfo=UTC)
    assert await dispatcher.run_once() == 1
    assert dispatcher.counts == {"held": 2, "sent": 3}


async def test_stop_opts_out_at_once_with_a_confirmation_and_start_opts_back_in(
    contact: Contact,
) -> None:
    c = contact
    wf = await enqueue(c.pool, phone=PHONE, preferred_channel="sms")
    dispatcher = c.dispatcher()
    assert await dispatcher.run_once() == 1  # the booking confirmation by SMS
    stop = await store_reply(
        c.pool, provider_message_id="SMstop1", channel="sms", sender="+1 555 000 1111", body="Stop"
    )
    assert stop.kind == "stop" and stop.patient_id == await patient_of(c.pool, wf)
    assert stop.session_number == 1  # it answers the booking confirmation
    optout = await c.pool.fetchrow("SELECT * FROM contact_optouts")
    assert optout["channel"] == "sms" and optout["opted_out_at"] is not None
    assert optout["how"] == "sms reply STOP" and optout["reply_id"] == stop.id
    # The same message id again changes nothing.
    again = await store_reply(
        c.pool, provider_message_id="SMstop1", channel="sms", sender=PHONE, body="Stop"
    )
    assert not again.new and again.id == stop.id

    await add(c.pool, wf, "c1:reminder", "session_reminder", "sms")
    assert await dispatcher.run_once() == 2
    confirmation = c.provider.sent[1]
    assert "no more text messages" in confirmation.body and confirmation.to == PHONE
    assert len(c.provider.sent) == 2  # the reminder was not sent
    reminder_row = await c.pool.fetchrow(
        "SELECT status, last_error FROM notification_outbox WHERE notification_key = 'c1:reminder'"
    )
    assert reminder_row["status"] == "cancelled"
    assert reminder_row["last_error"] == "opted out of sms"

    start = await store_reply(
        c.pool, provider_message_id="SMstart1", channel="sms", sender=PHONE, body="START"
    )
    assert start.kind == "start"
    assert await c.pool.fetchval("SELECT opted_out_at FROM contact_optouts") is None
    await add(c.pool, wf, "c1:reminder-2", "session_reminder", "sms")
    assert await dispatcher.run_once() == 2
    bodies = [m.body for m in c.provider.sent[2:]]
    assert any("again" in b and "Reply STOP" in b for b in bodies)
    assert any("Reminder" in b or "Your session is on" in b for b in bodies)
    assert dispatcher.counts == {"sent": 4, "opted_out": 1}


async def test_an_essential_message_goes_to_the_remaining_channel(contact: Contact) -> None:
    c = contact
    wf = await enqueue(c.pool, phone=PHONE, email="ada@example.com", preferred_channel="sms")
    await store_reply(c.pool, provider_message_id="SM1", channel="sms", sender=PHONE, body="STOP")
    await add(c.pool, wf, "c1:paused", "journey_paused", "sms")  # essential by default
    dispatcher = c.dispatcher()
    for _ in range(2):
        await dispatcher.run_once()
    found = {r[0]: r[1:] for r in await rows(c.pool)}
    assert found["c1:booked"] == ("sms", "cancelled", None)  # not essential: not sent
    assert found["c1:paused"] == ("sms", "cancelled", None)
    assert found["c1:paused~via-email"] == ("email", "sent", "sent")
    assert [m.body for m in c.provider.sent if "no more" not in m.body] == []
    [mail] = c.smtp.received
    assert mail["To"] == "ada@example.com" and mail["Subject"] == "Your treatment is on hold"
    assert "essential: sent as c1:paused~via-email" in await c.pool.fetchval(
        "SELECT last_error FROM notification_outbox WHERE notification_key = 'c1:paused'"
    )


async def test_an_essential_message_with_no_channel_left_is_a_staff_alert(
    contact: Contact,
) -> None:
    c = contact
    wf = await enqueue(c.pool, phone=PHONE, email="ada@example.com", preferred_channel="sms")
    await store_reply(c.pool, provider_message_id="SM1", channel="sms", sender=PHONE, body="STOP")
    await store_reply(
        c.pool, provider_message_id="<m1@x>", channel="email", sender="Ada@Example.com",
        body="Unsubscribe\n\n> Your session is booked",
    )  # fmt: skip
    assert await c.pool.fetchval("SELECT count(*) FROM contact_optouts") == 2
    # A clinic may list its own essential kinds: here the booking confirmation is one.
    await c.pool.execute("UPDATE clinics SET essential_kinds = '{booking_confirmation}'")
    await add(c.pool, wf, "c1:paused", "journey_paused", "sms")  # not essential here any more
    dispatcher = c.dispatcher()
    for _ in range(3):
        await dispatcher.run_once()
    found = {r[0]: r[1:] for r in await rows(c.pool)}
    assert found["c1:booked"] == ("sms", "cancelled", None)
    assert found["c1:booked~undeliverable"] == ("staff", "sent", "sent")
    assert found["c1:paused"] == ("sms", "cancelled", None)
    assert "c1:paused~undeliverable" not in found
    staff = [m for m in c.smtp.received if m["To"] == STAFF]
    assert [m["Subject"].split(":")[0] for m in staff] == ["[journey] Essential message not sent"]
    # The two confirmations went out, each on its own channel.
    assert any("no more e-mails" in str(m.get_body(("plain",))) for m in c.smtp.received)
    assert any("no more text messages" in m.body for m in c.provider.sent)


async def test_an_unknown_sender_is_kept_and_matches_nobody(contact: Contact) -> None:
    stored = await store_reply(
        contact.pool, provider_message_id="SMx", channel="sms", sender="+15550009999", body="STOP"
    )
    assert stored.patient_id is None and stored.outcome == "unmatched"
    assert await contact.pool.fetchval("SELECT count(*) FROM contact_optouts") == 0


async def test_a_reschedule_answer_reaches_an_opted_out_patient_by_the_other_channel(
    contact: Contact,
) -> None:
    """The patient opted out of SMS, then asked by e-mail for another date: the answer (written
    for the preferred channel, SMS) goes by e-mail, at once even in quiet hours."""
    c = contact
    wf = await enqueue(c.pool, phone=PHONE, email="ada@example.com", preferred_channel="sms")
    await store_reply(c.pool, provider_message_id="SM1", channel="sms", sender=PHONE, body="STOP")
    await add(c.pool, wf, "c1:reply-2", "reply_reschedule_offer", "sms")
    await c.pool.execute(
        "UPDATE clinics SET quiet_hours_start = '20:00', quiet_hours_end = '08:00'"
    )
    c.clock[0] = datetime(2026, 3, 3, 23, 0, tzinfo=UTC)
    dispatcher = c.dispatcher()
    for _ in range(2):
        await dispatcher.run_once()
    found = {r[0]: r[1:] for r in await rows(c.pool)}
    assert found["c1:reply-2"] == ("sms", "cancelled", None)
    assert found["c1:reply-2~via-email"] == ("email", "sent", "sent")
    assert found["c1:booked"] == ("sms", "cancelled", None)
    [mail] = c.smtp.received
    assert mail["Subject"] == "Choose another date"
