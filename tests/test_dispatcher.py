"""The outbox dispatcher on a real PostgreSQL: sent once, backoff, crash between send and mark,
and the words of the messages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from temporalio.testing import ActivityEnvironment

from activities import repository
from activities.channels import FileChannel, OutgoingMessage, PermanentDeliveryError
from activities.dispatcher import OutboxDispatcher
from activities.messages_text import render
from activities.store import JourneyStore
from tests.status_helpers import full_status
from workflows.records import NotificationRecord, StepRecord

STARTS_AT = "2026-03-03T09:00:00+00:00"  # a Tuesday
SESSION = {"session": "1", "starts_at": STARTS_AT, "timezone": "UTC"}
NUMBING = {**SESSION, "arrive_by": "2026-03-03T08:40:00+00:00", "arrive_early_minutes": "20"}
# Words that would reveal clinical detail the patient does not need in a message.
CLINICAL_WORDS = (
    "pore",
    "grade",
    "laser",
    "fitzpatrick",
    "isotretinoin",
    "contraindicat",
    "herpes",
    "infection",
    "adverse",
    "protocol",
    "photosensiti",
    "screening",
    "conservative",
    "excluded",
    "deferred",
)


async def assert_eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check`` until it holds (a lease expiring, a loop delivering), at most 5 s."""
    async with asyncio.timeout(5):
        while not await check():  # noqa: ASYNC110 - polls the database; no event to await
            await asyncio.sleep(0.02)


async def enqueue(
    pool: asyncpg.Pool, notifications: list[NotificationRecord], *, step: int = 1
) -> str:
    """A patient, and a journey step that puts ``notifications`` in the outbox."""
    await repository.ensure_default_clinic(pool)
    patient = await repository.create_patient(
        pool, repository.PatientCreate(full_name="Ada Lovelace", email="ada@example.com")
    )
    workflow_id = f"journey-{patient.patient_id}"
    await ActivityEnvironment().run(
        JourneyStore(pool).record_step,
        StepRecord(
            workflow_id=workflow_id,
            step=step,
            patient_id=patient.patient_id,
            clinic_id="default",
            status_patch=full_status(patient.patient_id),
            notifications=notifications,
        ),
    )
    return workflow_id


def lines(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def statuses(pool: asyncpg.Pool) -> list[tuple[str, str, int]]:
    rows = await pool.fetch(
        "SELECT notification_key, status, attempts FROM notification_outbox ORDER BY id"
    )
    return [(r["notification_key"], r["status"], r["attempts"]) for r in rows]


class FlakyChannel:
    """Fails the first ``failures`` sends, then delivers to a file."""

    def __init__(self, inner: FileChannel, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    async def send(self, message: OutgoingMessage, provider_key: str) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("provider unavailable")
        await self.inner.send(message, provider_key)


async def test_due_rows_are_sent_once(pg_pool: asyncpg.Pool, tmp_path: Path) -> None:
    wf = await enqueue(
        pg_pool,
        [
            NotificationRecord(key="c1:booked", kind="booking_confirmation", params=NUMBING),
            NotificationRecord(key="c1:reminder", kind="session_reminder", params=SESSION),
            NotificationRecord(
                key="c1:alert",
                kind="staff_alert",
                audience="staff",
                params={"alert": "no_show", "session": "1"},
            ),
        ],
    )
    outcomes: list[tuple[str, str, str]] = []
    channel = FileChannel(tmp_path / "outbox.log")
    dispatcher = OutboxDispatcher(
        pg_pool, channel, metrics=lambda outcome, kind, ch: outcomes.append((outcome, kind, ch))
    )
    assert await dispatcher.run_once() == 3
    assert await dispatcher.run_once() == 0
    sent = lines(channel.path)
    assert [s["provider_key"] for s in sent] == [
        f"{wf}:c1:booked",
        f"{wf}:c1:reminder",
        f"{wf}:c1:alert",
    ]
    assert [s["to"] for s in sent] == ["ada@example.com", "ada@example.com", "staff"]
    assert "Dear Ada Lovelace," in sent[0]["body"]
    assert "Tuesday 3 March at 09:00" in sent[0]["body"]
    assert "Ada" not in sent[2]["body"] and wf.removeprefix("journey-") in sent[2]["body"]
    assert [s for _, s, _ in await statuses(pg_pool)] == ["sent", "sent", "sent"]
    assert dispatcher.counts["sent"] == 3
    assert outcomes[2] == ("sent", "staff_alert", "staff")


async def test_rows_not_yet_due_wait(pg_pool: asyncpg.Pool, tmp_path: Path) -> None:
    await enqueue(pg_pool, [NotificationRecord(key="later", kind="aftercare")])
    await pg_pool.execute(
        "UPDATE notification_outbox SET next_attempt_at = now() + interval '1 hour'"
    )
    assert await OutboxDispatcher(pg_pool, FileChannel(tmp_path / "o.log")).run_once() == 0


async def test_scheduled_rows_wait_and_cancelled_rows_are_never_sent(
    pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    # A reminder is written with its booking and a send time; a later step may cancel it.
    soon = datetime.now(UTC) + timedelta(hours=1)
    wf = await enqueue(
        pg_pool,
        [
            NotificationRecord(key="c1:s1-reminder", kind="session_reminder", params=SESSION),
            NotificationRecord(
                key="c1:s2-reminder", kind="session_reminder", params=SESSION, send_at=soon
            ),
            NotificationRecord(
                key="c1:s3-reminder", kind="session_reminder", params=SESSION, send_at=soon
            ),
        ],
    )
    channel = FileChannel(tmp_path / "outbox.log")
    dispatcher = OutboxDispatcher(pg_pool, channel)
    assert await dispatcher.run_once() == 1
    await ActivityEnvironment().run(
        JourneyStore(pg_pool).record_step,
        StepRecord(
            workflow_id=wf,
            step=2,
            patient_id=wf.removeprefix("journey-"),
            clinic_id="default",
            cancel_notifications=["c1:s3-reminder"],
        ),
    )
    # The send time comes (moved here rather than waited for).
    await pg_pool.execute("UPDATE notification_outbox SET next_attempt_at = now()")
    assert await dispatcher.run_once() == 1
    assert await dispatcher.run_once() == 0
    assert [s["provider_key"] for s in lines(channel.path)] == [
        f"{wf}:c1:s1-reminder",
        f"{wf}:c1:s2-reminder",
    ]
    assert await statuses(pg_pool) == [
        ("c1:s1-reminder", "sent", 1),
        ("c1:s2-reminder", "sent", 1),
        ("c1:s3-reminder", "cancelled", 0),
    ]


async def test_failure_backs_off_then_retries(pg_pool: asyncpg.Pool, tmp_path: Path) -> None:
    await enqueue(
        pg_pool, [NotificationRecord(key="c1:booked", kind="booking_confirmation", params=SESSION)]
    )
    channel = FlakyChannel(FileChannel(tmp_path / "outbox.log"), failures=2)
    dispatcher = OutboxDispatcher(pg_pool, channel, base_backoff_seconds=5)

    async def backoff_seconds() -> float:
        return float(
            await pg_pool.fetchval(
                "SELECT extract(epoch FROM next_attempt_at - now()) FROM notification_outbox"
            )
        )

    assert await dispatcher.run_once() == 1
    assert await statuses(pg_pool) == [("c1:booked", "pending", 1)]
    assert 4 < await backoff_seconds() <= 5
    assert "provider unavailable" in await pg_pool.fetchval(
        "SELECT last_error FROM notification_outbox"
    )
    assert await dispatcher.run_once() == 0  # not due yet
    # Let the backoff elapse without sleeping: the row becomes due now.
    await pg_pool.execute("UPDATE notification_outbox SET next_attempt_at = now()")
    assert await dispatcher.run_once() == 1
    assert 9 < await backoff_seconds() <= 10  # doubled
    await pg_pool.execute("UPDATE notification_outbox SET next_attempt_at = now()")
    assert await dispatcher.run_once() == 1
    assert await statuses(pg_pool) == [("c1:booked", "sent", 3)]
    assert len(lines(channel.inner.path)) == 1
    assert dispatcher.counts == {"retry": 2, "sent": 1}


async def test_gives_up_after_max_attempts(pg_pool: asyncpg.Pool, tmp_path: Path) -> None:
    await enqueue(pg_pool, [NotificationRecord(key="k", kind="aftercare")])
    channel = FlakyChannel(FileChannel(tmp_path / "o.log"), failures=99)
    dispatcher = OutboxDispatcher(pg_pool, channel, max_attempts=2)
    for _ in range(2):
        await pg_pool.execute("UPDATE notification_outbox SET next_attempt_at = now()")
        assert await dispatcher.run_once() == 1
    # The patient has no phone: the failed message becomes a staff alert (activities/delivery.py).
    assert await statuses(pg_pool) == [("k", "failed", 2), ("k~undeliverable", "pending", 0)]
    await pg_pool.execute("UPDATE notification_outbox SET next_attempt_at = now()")
    assert await dispatcher.run_once() == 1  # the staff alert, which fails in turn
    assert await statuses(pg_pool) == [("k", "failed", 2), ("k~undeliverable", "pending", 1)]
    assert dispatcher.counts == {"retry": 2, "failed": 1}


async def test_permanent_failure_is_not_retried(pg_pool: asyncpg.Pool) -> None:
    class NoSms:
        async def send(self, message: OutgoingMessage, provider_key: str) -> None:
            raise PermanentDeliveryError("no SMS provider is configured")

    await enqueue(pg_pool, [NotificationRecord(key="k", kind="aftercare")])
    dispatcher = OutboxDispatcher(pg_pool, NoSms())
    assert await dispatcher.run_once() == 1
    assert await statuses(pg_pool) == [("k", "failed", 1), ("k~undeliverable", "pending", 0)]
    assert await pg_pool.fetchval("SELECT last_error FROM notification_outbox") == (
        "no SMS provider is configured"
    )


async def test_killed_between_send_and_mark_sends_once(
    pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    wf = await enqueue(
        pg_pool, [NotificationRecord(key="c1:booked", kind="booking_confirmation", params=NUMBING)]
    )
    file_channel = FileChannel(tmp_path / "outbox.log")
    sent = asyncio.Event()

    class SendsThenHangs:
        """Delivers, then never returns: the dispatcher is killed before it can mark."""

        async def send(self, message: OutgoingMessage, provider_key: str) -> None:
            await file_channel.send(message, provider_key)
            sent.set()
            await asyncio.Event().wait()

    doomed = OutboxDispatcher(pg_pool, SendsThenHangs(), lease_seconds=0.3)
    task = asyncio.create_task(doomed.run_once())
    await sent.wait()
    task.cancel()  # the kill: nothing after the send runs
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await statuses(pg_pool) == [("c1:booked", "sending", 1)]

    successor = OutboxDispatcher(pg_pool, file_channel, lease_seconds=0.3)
    assert await successor.run_once() == 0  # the lease still holds

    async def reclaimed() -> bool:
        return await successor.run_once() == 1

    await assert_eventually(reclaimed)
    assert await statuses(pg_pool) == [("c1:booked", "sent", 2)]
    assert [line["provider_key"] for line in lines(file_channel.path)] == [f"{wf}:c1:booked"]


async def test_run_loop_stops_on_event(pg_pool: asyncpg.Pool, tmp_path: Path) -> None:
    await enqueue(pg_pool, [NotificationRecord(key="k", kind="aftercare")])
    channel = FileChannel(tmp_path / "o.log")
    stop = asyncio.Event()
    loop_task = asyncio.create_task(
        OutboxDispatcher(pg_pool, channel).run(stop, poll_interval=0.05)
    )

    async def delivered() -> bool:
        return len(channel.sent_keys()) == 1

    await assert_eventually(delivered)
    stop.set()
    await asyncio.wait_for(loop_task, timeout=2)


async def test_file_channel_is_idempotent_by_provider_key(tmp_path: Path) -> None:
    channel = FileChannel(tmp_path / "o.log")
    message = OutgoingMessage(channel="email", to="a@example.com", subject="s", body="b")
    await asyncio.gather(*(channel.send(message, "journey-p_1:k") for _ in range(3)))
    await channel.send(message, "journey-p_1:other")
    assert channel.sent_keys() == ["journey-p_1:k", "journey-p_1:other"]


@pytest.mark.parametrize(
    "kind",
    [
        "booking_confirmation",
        "session_reminder",
        "session_rebooked",
        "aftercare",
        "recovery_checkin",
        "spf_reminder",
        "review_invite",
        "season_waiting",
        "journey_paused",
        "journey_withdrawn",
    ],
)
def test_patient_messages_carry_no_clinical_detail(kind: str) -> None:
    params = {
        **NUMBING,
        "recovery_days_min": "5",
        "recovery_days_max": "7",
        "spf_until": "2026-05-01",
        "review_on": "2026-06-01",
        "starts_on": "2026-03-03",
    }
    text = render(kind, params, patient_name="Ada Lovelace", patient_id="p_x", clinic_name="Clinic")
    words = (text.subject + " " + text.body).lower()
    assert [w for w in CLINICAL_WORDS if w in words] == []
    assert text.body.startswith("Dear Ada Lovelace,")


def test_arrive_early_line_only_with_numbing_cream() -> None:
    line = "Please arrive 20 minutes early for the numbing cream."
    with_cream = render("session_reminder", NUMBING, patient_name="Ada", patient_id="p_x")
    without = render("session_reminder", SESSION, patient_name="Ada", patient_id="p_x")
    assert "Your session is on Tuesday 3 March at 09:00. " + line in with_cream.body
    assert "numbing" not in without.body and "arrive" not in without.body
    assert "Tuesday 3 March at 09:00." in without.body


def test_dates_in_the_clinic_time_zone() -> None:
    params = {**SESSION, "starts_at": "2026-03-03T08:00:00+00:00", "timezone": "Europe/Paris"}
    text = render("booking_confirmation", params, patient_name="Ada", patient_id="p_x")
    assert "Tuesday 3 March at 09:00" in text.body


def test_staff_alert_names_only_the_patient_id() -> None:
    text = render(
        "staff_alert",
        {"alert": "adverse_event", "severity": "severe"},
        patient_name="Ada Lovelace",
        patient_id="p_abc",
        audience="staff",
    )
    assert "p_abc" in text.subject and "p_abc" in text.body
    assert "Ada" not in text.subject + text.body
    assert "severe" not in text.body
    assert "clinician must review" in text.body


def test_sun_protection_wording_comes_from_the_protocol() -> None:
    """No "SPF 50" literal: the journey passes the clinic's factor with the message."""
    for kind in ("aftercare", "spf_reminder"):
        text = render(
            kind, {"spf_factor": "30", "session": "1"}, patient_name="Ada", patient_id="p_x"
        ).body
        assert "SPF 30 sunscreen" in text and "SPF 50" not in text
