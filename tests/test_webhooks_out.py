"""Outbound webhooks end to end on a real PostgreSQL and real local HTTP receivers: every event
the journey appends reaches each subscriber of its clinic, signed (Standard Webhooks), at least
once, in order per journey; a receiver down for a while gets it after retries; one down for good
dead-letters it, and a replay delivers it once the receiver is back."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from activities import repository, webhooks
from activities.webhooks import WebhookDispatcher
from tests.integration_rows import JourneyRows, Session, new_patient
from tests.webhook_receiver import Receiver
from workflows.protocol import ClinicProtocol, ClinicSettings

T0 = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)


async def subscribe(
    pool: asyncpg.Pool, clinic_id: str, url: str, secret: str, types: list[str] | None = None
) -> int:
    return int(
        await pool.fetchval(
            """
            INSERT INTO webhook_subscribers (clinic_id, url, event_types, secret)
            VALUES ($1, $2, $3, $4) RETURNING id
            """,
            clinic_id,
            url,
            types or [],
            secret,
        )
    )


async def drain(pool: asyncpg.Pool, dispatcher: WebhookDispatcher) -> None:
    """Run rounds until no event waits for fan-out and no delivery is open."""
    deadline = time.monotonic() + 60  # a safety net against a hang, not a measured threshold
    while True:
        await dispatcher.run_once()
        open_rows = await pool.fetchval(
            """
            SELECT (SELECT count(*) FROM webhook_fanout)
                 + (SELECT count(*) FROM webhook_deliveries WHERE status IN ('pending', 'sending'))
            """
        )
        if open_rows == 0:
            return
        assert time.monotonic() < deadline, "deliveries still open"
        await asyncio.sleep(0.01)


async def test_delivery_retries_dead_letters_replays_and_keeps_order(pg_pool: asyncpg.Pool) -> None:
    pool = pg_pool
    await repository.ensure_default_clinic(pool)
    await repository.upsert_clinic(
        pool, ClinicProtocol(clinic=ClinicSettings(clinic_id="other", name="Other clinic"))
    )
    flaky = Receiver(webhooks.new_secret(), fail_first=3)  # down for its first 3 requests
    down = Receiver(webhooks.new_secret())  # not listening until the replay
    completions = Receiver(webhooks.new_secret())
    elsewhere = Receiver(webhooks.new_secret())
    for r in (flaky, completions, elsewhere):
        r.start()
    await subscribe(pool, "default", flaky.url, flaky.secret)
    down_id = await subscribe(pool, "default", down.url, down.secret, ["*"])
    await subscribe(
        pool, "default", completions.url, completions.secret, ["journey.session_completed"]
    )
    await subscribe(pool, "other", elsewhere.url, elsewhere.secret)

    a = JourneyRows(pool, await new_patient(pool, "Ann Example"), "default")
    b = JourneyRows(pool, await new_patient(pool, "Bob Example"), "default")
    c = JourneyRows(pool, await new_patient(pool, "Cyd Example", "other"), "other")
    for j in (a, b, c):
        await j.step(("journey_started", "Course 1 started.", {"course": 1}), at=T0)
    for j in (a, b):
        j.sessions[1] = Session(1, T0 + timedelta(days=7))
        await j.step(("session_booked", "Session 1 booked.", {"session": 1}), sessions=[1], at=T0)
    a.sessions[1].starts_at += timedelta(days=2)
    await a.step(("rescheduled", "Session 1 moved.", {"session": 1}), sessions=[1], at=T0)
    b.sessions[1].state, b.flags = "no_show", ["no_show"]
    await b.step(("no_show", "Session 1 missed.", {"session": 1}), sessions=[1], at=T0)
    a.sessions[1].state = "done"
    await a.step(("session_completed", "Session 1 done.", {"session": 1}), sessions=[1], at=T0)

    dispatcher = WebhookDispatcher(pool, max_attempts=3, base_backoff_seconds=0.01, batch=5)
    await drain(pool, dispatcher)

    events = await pool.fetch("SELECT id, workflow_id, kind FROM journey_events ORDER BY id")
    default_events = [e for e in events if e["workflow_id"] != c.workflow_id]
    expected_ids = {f"evt_{e['id']}" for e in default_events}
    # The flaky receiver: every event of its clinic once, after 3 refused attempts, in order.
    assert flaky.unique_ids() == expected_ids
    assert flaky.duplicates() == 0
    assert flaky.failed_on_purpose == 3
    assert flaky.bad_signatures == 0
    for journey, sequence in flaky.sequences_by_journey().items():
        assert sequence == sorted(sequence), journey
    assert flaky.sequences_by_journey()[a.workflow_id] == [
        e["id"] for e in default_events if e["workflow_id"] == a.workflow_id
    ]
    # Filtered by event type, and by clinic.
    assert completions.types() == ["journey.session_completed"]
    assert [r.payload["data"]["journey_id"] for r in elsewhere.received] == [c.workflow_id]
    assert elsewhere.received[0].payload["data"]["clinic_id"] == "other"
    # The receiver that never answered: every delivery dead-lettered after 3 attempts.
    dead = await pool.fetch(
        "SELECT id, attempts, last_error FROM webhook_deliveries WHERE subscriber_id = $1",
        down_id,
    )
    assert len(dead) == len(expected_ids)
    assert {r["attempts"] for r in dead} == {3}
    assert await pool.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE subscriber_id = $1 AND status = 'dead'",
        down_id,
    ) == len(expected_ids)
    first_round = dict(dispatcher.counts)

    # It comes back; an admin replays its dead letters: delivered once each, in order.
    down.start()
    for row in sorted(dead, key=lambda r: r["id"]):
        assert await webhooks.replay(pool, row["id"])
    assert not await webhooks.replay(pool, dead[0]["id"])  # no longer dead
    await drain(pool, dispatcher)
    assert down.unique_ids() == expected_ids
    assert down.duplicates() == 0
    for sequence in down.sequences_by_journey().values():
        assert sequence == sorted(sequence)
    assert flaky.duplicates() == 0  # nothing was sent twice to the others

    counts = dispatcher.counts
    print(
        f"\nwebhook delivery figures: events={len(events)} subscribers=4 "
        f"first round {first_round}; after replay {dict(counts)}; "
        f"flaky receiver requests={flaky.requests} received={len(flaky.received)} "
        f"duplicates={flaky.duplicates()}; replayed receiver received={len(down.received)} "
        f"duplicates={down.duplicates()}"
    )
    assert counts["dead"] == len(expected_ids)
    assert counts["retry"] == 3 + len(expected_ids) * 2  # flaky's 3, and 2 per dead letter
    assert counts["delivered"] == len(expected_ids) * 2 + 1 + 1
    for r in (flaky, down, completions, elsewhere):
        r.stop()


async def test_a_journey_waits_behind_its_undelivered_event(pg_pool: asyncpg.Pool) -> None:
    """Order per journey: while an event is being retried, the journey's later events wait;
    another journey's events do not."""
    pool = pg_pool
    await repository.ensure_default_clinic(pool)
    receiver = Receiver(webhooks.new_secret(), fail_first=1)
    receiver.start()
    await subscribe(pool, "default", receiver.url, receiver.secret)
    a = JourneyRows(pool, await new_patient(pool, "Ann Example"), "default")
    await a.step(("journey_started", "Started.", {}), at=T0)
    await a.step(("paused", "Paused.", {}), at=T0)
    # A long backoff: the first event stays pending after its refused attempt.
    dispatcher = WebhookDispatcher(pool, base_backoff_seconds=3600)
    await dispatcher.run_once()
    await dispatcher.run_once()
    assert receiver.requests == 1 and receiver.received == []
    statuses = await pool.fetch("SELECT status, attempts FROM webhook_deliveries ORDER BY event_id")
    assert [(r["status"], r["attempts"]) for r in statuses] == [("pending", 1), ("pending", 0)]
    receiver.stop()


async def test_a_dispatcher_dying_after_the_post_gives_a_duplicate_with_the_same_id(
    pg_pool: asyncpg.Pool,
) -> None:
    """The one source of duplicates: the POST went out, the mark did not. The next claim after
    the lease sends again with the same webhook-id, so the receiver can drop it."""
    pool = pg_pool
    await repository.ensure_default_clinic(pool)
    receiver = Receiver(webhooks.new_secret())
    receiver.start()
    await subscribe(pool, "default", receiver.url, receiver.secret)
    a = JourneyRows(pool, await new_patient(pool, "Ann Example"), "default")
    await a.step(("journey_started", "Started.", {}), at=T0)
    await WebhookDispatcher(pool).fan_out()
    # A dispatcher claims and sends, then dies before marking (its steps, without the mark).
    [row] = await pool.fetch(webhooks._CLAIM, 10, 60.0, uuid.uuid4())
    body = json.dumps(row["payload"])
    async with httpx.AsyncClient() as http:
        sent = await http.post(
            row["url"],
            content=body,
            headers=webhooks.sign_headers(row["secret"], row["message_id"], body),
        )
    assert sent.status_code == 204
    assert await pool.fetchval("SELECT status FROM webhook_deliveries") == "sending"
    await pool.execute("UPDATE webhook_deliveries SET leased_until = now() - interval '1 s'")
    await drain(pool, WebhookDispatcher(pool))
    assert len(receiver.received) == 2 and receiver.duplicates() == 1
    assert len(receiver.unique_ids()) == 1
    assert await pool.fetchval("SELECT attempts FROM webhook_deliveries") == 2
    receiver.stop()
