"""Calendar files from the read model (activities/ics.py), parsed back with ``icalendar``: a
stable UID per session, a SEQUENCE that grows across a reschedule and a cancellation, the
clinic's zone with its VTIMEZONE, the arrive-early time; and the booking confirmation that the
notification dispatcher sends carries the invitation."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
from icalendar import Calendar

from activities import ics, repository
from activities.channels import FileChannel
from activities.dispatcher import OutboxDispatcher
from tests.integration_rows import JourneyRows, Session, new_patient
from worker.logging_setup import AccessLogRedactor
from workflows.protocol import ClinicProtocol, ClinicSettings

BERLIN = ZoneInfo("Europe/Berlin")
# 09:00 in Berlin on a winter day (UTC+1), and its move across the DST change (UTC+2).
STARTS = datetime(2027, 3, 2, 9, 0, tzinfo=BERLIN)
MOVED = datetime(2027, 4, 6, 10, 30, tzinfo=BERLIN)
T0 = datetime(2027, 2, 1, 9, 0, tzinfo=UTC)


async def berlin_journey(pool: asyncpg.Pool) -> JourneyRows:
    await repository.upsert_clinic(
        pool,
        ClinicProtocol(
            clinic=ClinicSettings(clinic_id="berlin", name="Klinik Mitte", timezone="Europe/Berlin")
        ),
    )
    j = JourneyRows(pool, await new_patient(pool, "Ann Example", "berlin"), "berlin")
    await j.step(("journey_started", "Started.", {}), at=T0)
    return j


def parse(content: bytes) -> tuple[Calendar, list[object]]:
    cal = Calendar.from_ical(content)
    return cal, list(cal.walk("VEVENT"))


async def test_uid_and_sequence_across_reschedule_and_cancel(pg_pool: asyncpg.Pool) -> None:
    j = await berlin_journey(pg_pool)
    j.sessions[1] = Session(1, STARTS, arrive_by=STARTS - timedelta(minutes=20))
    booked_step = await j.step(("session_booked", "Booked.", {}), sessions=[1], at=T0)

    found = await ics.invitation(
        pg_pool, j.workflow_id, "booking_confirmation", {"session": "1"}, "c1:s1-booked-x"
    )
    assert found is not None
    name, method, content = found
    cal, events = parse(content)
    assert (name, method, str(cal["METHOD"])) == ("session-1.ics", "REQUEST", "REQUEST")
    [booked] = events
    uid = str(booked["UID"])  # type: ignore[index]
    assert uid == f"{j.workflow_id}.c1.s1@pore-journey"
    assert int(booked["SEQUENCE"]) == booked_step  # type: ignore[index]
    start = booked["DTSTART"]  # type: ignore[index]
    assert start.params["TZID"] == "Europe/Berlin"
    assert start.dt == STARTS and start.dt.utcoffset() == timedelta(hours=1)
    assert booked["DTEND"].dt - start.dt == timedelta(minutes=45)  # type: ignore[index]
    assert "arrive at 08:40 (20 minutes early)" in str(booked["DESCRIPTION"])  # type: ignore[index]
    assert [str(tz["TZID"]) for tz in cal.walk("VTIMEZONE")] == ["Europe/Berlin"]
    assert str(booked["STATUS"]) == "CONFIRMED"  # type: ignore[index]

    # Moved across the DST change: same UID, higher SEQUENCE, the new local time.
    j.sessions[1].starts_at = MOVED
    j.sessions[1].arrive_by = MOVED - timedelta(minutes=20)
    moved_step = await j.step(("rescheduled", "Moved.", {}), sessions=[1], at=T0)
    found = await ics.invitation(
        pg_pool, j.workflow_id, "session_rebooked", {"session": "1"}, "c1:s1-moved"
    )
    assert found is not None
    _, events = parse(found[2])
    [moved] = events
    assert str(moved["UID"]) == uid  # type: ignore[index]
    assert int(moved["SEQUENCE"]) == moved_step > booked_step  # type: ignore[index]
    assert moved["DTSTART"].dt == MOVED and moved["DTSTART"].dt.utcoffset() == timedelta(hours=2)  # type: ignore[index]
    assert "arrive at 10:10" in str(moved["DESCRIPTION"])  # type: ignore[index]

    # Withdrawn: the session is cancelled, METHOD:CANCEL with a still higher SEQUENCE.
    j.sessions[1].state = "cancelled"
    j.stage = "withdrawn"
    cancel_step = await j.step(("withdrawn", "Withdrawn.", {}), sessions=[1], at=T0)
    found = await ics.invitation(pg_pool, j.workflow_id, "journey_withdrawn", {}, "c1:withdrawn")
    assert found is not None
    cal, events = parse(found[2])
    [cancelled] = events
    assert (found[1], str(cal["METHOD"])) == ("CANCEL", "CANCEL")
    assert str(cancelled["UID"]) == uid  # type: ignore[index]
    assert str(cancelled["STATUS"]) == "CANCELLED"  # type: ignore[index]
    assert int(cancelled["SEQUENCE"]) == cancel_step > moved_step  # type: ignore[index]

    # Nothing for a kind that carries no invitation, or a session with no appointment.
    assert (
        await ics.invitation(pg_pool, j.workflow_id, "aftercare", {"session": "1"}, "c1:a") is None
    )
    assert (
        await ics.invitation(
            pg_pool, j.workflow_id, "booking_confirmation", {"session": "2"}, "c1:s2"
        )
        is None
    )


async def test_booking_confirmation_email_carries_the_invitation(
    pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    j = await berlin_journey(pg_pool)
    j.sessions[1] = Session(1, STARTS)
    step = await j.step(("session_booked", "Booked.", {}), sessions=[1], at=T0)
    params = {"session": "1", "starts_at": STARTS.isoformat(), "timezone": "Europe/Berlin"}
    for key, kind in (("c1:s1-booked", "booking_confirmation"), ("c1:aftercare-1", "aftercare")):
        await pg_pool.execute(
            """
            INSERT INTO notification_outbox (workflow_id, notification_key, patient_id, kind,
                                             audience, channel, params, provider_key)
            VALUES ($1, $2, $3, $4, 'patient', 'email', $5, $1 || ':' || $2)
            """,
            j.workflow_id,
            key,
            j.patient_id,
            kind,
            params,
        )
    channel = FileChannel(tmp_path / "outbox.log")
    assert await OutboxDispatcher(pg_pool, channel).run_once() == 2
    lines = {
        json.loads(line)["provider_key"]: json.loads(line)
        for line in channel.path.read_text().splitlines()
    }
    sent = lines[f"{j.workflow_id}:c1:s1-booked"]
    [attachment] = sent["attachments"]
    assert attachment["filename"] == "session-1.ics"
    assert attachment["content_type"].startswith("text/calendar; method=REQUEST")
    cal, events = parse(attachment["content"].encode())
    [event] = events
    assert str(cal["METHOD"]) == "REQUEST"
    assert int(event["SEQUENCE"]) == step  # type: ignore[index]
    assert event["DTSTART"].dt == STARTS  # type: ignore[index]
    assert "attachments" not in lines[f"{j.workflow_id}:c1:aftercare-1"]


def test_access_log_drops_feed_tokens() -> None:
    """A feed link is a credential: uvicorn's access log shows its route, not the token."""
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/calendar/feeds/cal_SECRET.ics?x=1", "1.1", 200),
        None,
    )
    assert AccessLogRedactor().filter(record)
    assert record.getMessage() == '127.0.0.1:5 - "GET /calendar/feeds/{token} HTTP/1.1" 200'
