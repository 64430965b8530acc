"""Outbound webhooks: journey events to each clinic's subscribers, signed (Standard Webhooks).

Where the events come from: a trigger on ``journey_events`` (migration ``0002``) queues every
appended event's id in ``webhook_fanout`` in the same transaction, so the workflow and
``record_step`` are untouched and no event can be missed (a poller keyed on the event id alone
could skip an id whose transaction commits after a higher one was read). :meth:`WebhookDispatcher
.fan_out` turns each queued event into one ``webhook_deliveries`` row per matching subscriber of
the journey's clinic and deletes it from the queue, in one transaction under an advisory lock
(one fan-out at a time keeps a journey's deliveries in event order).

Delivery guarantee (at least once, ordered per journey and subscriber):

1. **Claim with a lease**, like the notification outbox: due rows move to ``sending`` with a
   lease token and ``attempts + 1``, ``FOR UPDATE SKIP LOCKED``. A row is claimable only when
   no earlier event of the same journey is still open (``pending``/``sending``) for the same
   subscriber, so a receiver sees a journey's events in order even across retries.
2. **Send** ``POST <url>`` with ``webhook-id`` (``evt_<event id>``: the same on every retry and
   replay, the receiver's de-duplication key), ``webhook-timestamp`` and ``webhook-signature``
   (``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, the ``standardwebhooks`` package).
3. **Mark only with the lease**: a 2xx answer makes the row ``delivered``; anything else (a
   status, a timeout, a refused connection) goes back to ``pending`` with exponential backoff
   (``base_backoff_seconds * 2 ** (attempts - 1)``, capped at an hour) and the error; after
   ``max_attempts`` the row is ``dead`` (the dead-letter list). A dead row no longer holds the
   journey's later events back; an admin replays it (``replay``), and its payload carries
   ``sequence`` (the event id) so a receiver can tell it arrived late.

A dispatcher that dies between the POST and the mark leaves a lease that expires; the next claim
sends again with the same ``webhook-id``: that is the only source of duplicates.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
import httpx
from standardwebhooks.webhooks import Webhook

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 3600.0
FANOUT_LOCK = 0x77656268  # pg_advisory_xact_lock key of the fan-out ("webh")
USER_AGENT = "pore-journey-webhooks/1"

DeliveryOutcome = Literal["delivered", "retry", "dead", "lease_lost"]

_FAN_OUT = """
WITH batch AS (
    DELETE FROM webhook_fanout
    WHERE event_id IN (
        SELECT event_id FROM webhook_fanout ORDER BY event_id
        FOR UPDATE SKIP LOCKED LIMIT $1
    )
    RETURNING event_id
),
inserted AS (
    INSERT INTO webhook_deliveries
        (subscriber_id, event_id, workflow_id, message_id, event_type, payload)
    SELECT s.id, e.id, e.workflow_id, 'evt_' || e.id, 'journey.' || e.kind,
           jsonb_build_object(
               'type', 'journey.' || e.kind,
               'timestamp', e.recorded_at,
               'data', jsonb_build_object(
                   'event_id', 'evt_' || e.id,
                   'sequence', e.id,
                   'journey_id', e.workflow_id,
                   'patient_id', coalesce(j.patient_id, p.patient_id),
                   'clinic_id', s.clinic_id,
                   'kind', e.kind,
                   'step', e.step,
                   'actor', e.actor,
                   'occurred_at', e.occurred_at,
                   'summary', e.summary,
                   'details', e.data
               )
           )
    FROM batch b
    JOIN journey_events e ON e.id = b.event_id
    LEFT JOIN journeys j ON j.workflow_id = e.workflow_id
    LEFT JOIN patients p ON p.patient_id = substr(e.workflow_id, length('journey-') + 1)
    JOIN webhook_subscribers s
      ON s.clinic_id = coalesce(j.clinic_id, p.clinic_id)
     AND s.disabled_at IS NULL
     AND (cardinality(s.event_types) = 0
          OR 'journey.' || e.kind = ANY (s.event_types)
          OR '*' = ANY (s.event_types))
    ORDER BY e.id, s.id
    ON CONFLICT (subscriber_id, event_id) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM batch) AS events, (SELECT count(*) FROM inserted) AS deliveries
"""

_CLAIM = """
UPDATE webhook_deliveries AS d
SET status = 'sending',
    leased_until = now() + make_interval(secs => $2),
    lease_token = $3,
    attempts = d.attempts + 1
FROM webhook_subscribers s
WHERE s.id = d.subscriber_id
  AND d.id IN (
    SELECT c.id FROM webhook_deliveries c
    WHERE ((c.status = 'pending' AND c.next_attempt_at <= now())
        OR (c.status = 'sending' AND c.leased_until < now()))
      AND EXISTS (
        SELECT 1 FROM webhook_subscribers live
        WHERE live.id = c.subscriber_id AND live.disabled_at IS NULL
      )
      AND NOT EXISTS (
        SELECT 1 FROM webhook_deliveries earlier
        WHERE earlier.subscriber_id = c.subscriber_id
          AND earlier.workflow_id = c.workflow_id
          AND earlier.event_id < c.event_id
          AND earlier.status IN ('pending', 'sending')
      )
    ORDER BY c.next_attempt_at, c.event_id
    FOR UPDATE OF c SKIP LOCKED
    LIMIT $1
  )
RETURNING d.id, d.subscriber_id, d.workflow_id, d.message_id, d.event_type, d.payload,
          d.attempts, s.url, s.secret
"""

_MARK_DELIVERED = """
UPDATE webhook_deliveries
SET status = 'delivered', delivered_at = now(), leased_until = NULL, last_error = NULL,
    last_status = $3
WHERE id = $1 AND lease_token = $2 AND status = 'sending'
"""

_MARK_FAILED = """
UPDATE webhook_deliveries
SET status = CASE WHEN attempts >= $4 THEN 'dead' ELSE 'pending' END,
    dead_at = CASE WHEN attempts >= $4 THEN now() END,
    next_attempt_at = now() + make_interval(secs => $3),
    leased_until = NULL,
    last_error = $5,
    last_status = $6
WHERE id = $1 AND lease_token = $2 AND status = 'sending'
RETURNING status
"""


def new_secret() -> str:
    """A new Standard Webhooks secret: ``whsec_`` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def sign_headers(
    secret: str, message_id: str, body: str, at: datetime | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body`` (what receivers verify)."""
    when = at or datetime.now(UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, when, body),
    }


@dataclass(frozen=True)
class _Claimed:
    id: int
    subscriber_id: int
    workflow_id: str
    message_id: str
    event_type: str
    payload: dict[str, Any]
    attempts: int
    url: str
    secret: str


class WebhookDispatcher:
    """Fans journey events out to subscribers and delivers them (see the module docstring).

    ``counts`` tallies ``delivered``, ``retry``, ``dead`` and ``lease_lost``.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        http: httpx.AsyncClient | None = None,
        batch: int = 50,
        lease_seconds: float = 60,
        timeout_seconds: float = 15,
        max_attempts: int = 8,
        base_backoff_seconds: float = 5,
    ) -> None:
        """Args:
        pool: The database pool.
        http: The client to POST with (one is created and owned otherwise).
        batch: Events fanned out and deliveries claimed per round.
        lease_seconds: How long a claim holds; longer than ``timeout_seconds``.
        timeout_seconds: The receiver's time to answer.
        max_attempts: Attempts before a delivery is ``dead``.
        base_backoff_seconds: Wait after the first failure (doubled for each further one).
        """
        self._pool = pool
        self._http = http
        self._owns_http = http is None
        self.batch = batch
        self.lease_seconds = lease_seconds
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self.base_backoff_seconds = base_backoff_seconds
        self.counts: Counter[str] = Counter()

    async def fan_out(self) -> int:
        """Turn up to ``batch`` queued events into deliveries; returns the events taken."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", FANOUT_LOCK)
            row = await conn.fetchrow(_FAN_OUT, self.batch)
        assert row is not None
        return int(row["events"])

    async def deliver_once(self) -> int:
        """Claim the due deliveries (one per journey and subscriber) and POST each; returns how
        many were claimed. Database errors propagate."""
        token = uuid.uuid4()
        rows = await self._pool.fetch(_CLAIM, self.batch, float(self.lease_seconds), token)
        if not rows:
            return 0
        claimed = [_Claimed(**dict(r)) for r in rows]
        http = self._client()
        await asyncio.gather(*(self._deliver(http, row, token) for row in claimed))
        return len(claimed)

    async def run_once(self) -> int:
        """One round: fan out, then deliver; returns the work done (0: nothing due)."""
        return await self.fan_out() + await self.deliver_once()

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout_seconds, follow_redirects=False)
        return self._http

    async def aclose(self) -> None:
        """Close the HTTP client if this dispatcher created it."""
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _deliver(self, http: httpx.AsyncClient, row: _Claimed, token: uuid.UUID) -> None:
        ids = {"workflow_id": row.workflow_id, "delivery_id": row.id}
        body = json.dumps(row.payload, separators=(",", ":"), ensure_ascii=False)
        headers = {
            **sign_headers(row.secret, row.message_id, body),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
        status_code: int | None = None
        try:
            response = await http.post(
                row.url, content=body.encode(), headers=headers, timeout=self.timeout_seconds
            )
            status_code = response.status_code
            if 200 <= status_code < 300:
                done = await self._pool.execute(_MARK_DELIVERED, row.id, token, status_code)
                self._count("delivered" if done.endswith(" 1") else "lease_lost")
                return
            error = f"HTTP {status_code}"
        except httpx.HTTPError as err:
            error = f"{type(err).__name__}: {err}"[:500]
        logger.warning("webhook delivery failed", extra={**ids, "attempt": row.attempts})
        backoff = min(
            self.base_backoff_seconds * 2 ** max(row.attempts - 1, 0), MAX_BACKOFF_SECONDS
        )
        status = await self._pool.fetchval(
            _MARK_FAILED, row.id, token, float(backoff), self.max_attempts, error, status_code
        )
        if status is None:
            self._count("lease_lost")
        elif status == "dead":
            logger.error("webhook delivery dead-lettered", extra={**ids, "attempts": row.attempts})
            self._count("dead")
        else:
            self._count("retry")

    def _count(self, outcome: DeliveryOutcome) -> None:
        self.counts[outcome] += 1

    async def run(self, stop: asyncio.Event, poll_interval: float = 1.0) -> None:
        """Fan out and deliver until ``stop`` is set. A round that did work is followed at once
        by the next; an idle one waits ``poll_interval``. Database errors are logged (type
        only) and retried with a growing pause, so an outage delays events but never ends the
        loop."""
        pause = poll_interval
        try:
            while not stop.is_set():
                try:
                    done = await self.run_once()
                    pause = poll_interval
                except Exception as error:  # an outage or a bug must not end the loop
                    logger.warning("webhook dispatch failed", extra={"error": type(error).__name__})
                    done = 0
                    pause = min(pause * 2, 60.0)
                if done:
                    continue
                try:
                    await asyncio.wait_for(stop.wait(), timeout=pause)
                except TimeoutError:
                    pass
        finally:
            await self.aclose()


# ---------------------------------------------------------------- admin reads and writes


async def replay(pool: asyncpg.Pool, delivery_id: int) -> bool:
    """Put a dead delivery back in line (attempts reset, due now, same ``webhook-id``).

    Returns False if there is no dead delivery with this id.
    """
    status = await pool.execute(
        """
        UPDATE webhook_deliveries
        SET status = 'pending', attempts = 0, next_attempt_at = now(), dead_at = NULL,
            replays = replays + 1
        WHERE id = $1 AND status = 'dead'
        """,
        delivery_id,
    )
    return bool(status.endswith(" 1"))
