"""The outbox dispatcher: sends due ``notification_outbox`` rows through a channel.

Guarantee (nothing sent twice, nothing lost):

1. **Claim with a lease.** One statement moves due rows (``pending`` and due, or ``sending``
   whose lease expired) to ``sending`` with ``leased_until = now() + lease`` and a fresh
   ``lease_token``, using ``FOR UPDATE SKIP LOCKED``: concurrent dispatchers never claim the
   same row at the same time. ``attempts`` is counted at the claim, so even a message that
   crashes its dispatcher every time ends ``failed`` after ``max_attempts``.
2. **Send with a stable provider key**, ``f"{workflow_id}:{notification_key}"``. If a
   dispatcher dies after sending and before marking, the lease expires, another dispatcher
   claims the row and sends again with the same key, and the channel drops the repeat
   (:class:`~activities.channels.FileChannel` by its file, a real provider by its
   idempotency key). So delivery is at-least-once to the channel and exactly-once to the
   patient where the channel honours the key (SMTP only via ``Message-ID``; see channels).
3. **Mark only while holding the lease**: ``sent`` (or the retry) is written only if the row
   still carries this dispatcher's lease token, so a dispatcher whose lease expired cannot
   overwrite the outcome of the one that took over.

A message that fails for good (permanently, or after ``max_attempts``) is handed on in the same
statement: to the patient's other channel, or as a staff alert when there is none left
(:mod:`activities.delivery`; docs/messaging.md).

Before a patient message is sent, the patient's consent to be contacted and the clinic's quiet
hours are checked (:mod:`activities.contact`): a message to a channel the patient opted out of is
``cancelled`` (an essential one is written again for the remaining channel, or as a staff alert),
and one due inside quiet hours goes back to ``pending`` until the window's end.

A failed send goes back to ``pending`` with exponential backoff
(``base_backoff_seconds * 2 ** (attempts - 1)``, capped at an hour) and ``last_error``; after
``max_attempts`` it is ``failed``. A :class:`~activities.channels.PermanentDeliveryError` (or a
missing patient record) fails the row at once. Time is the database's ``now()`` throughout, so
dispatchers on several hosts agree on leases.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg

from activities import ics
from activities.channels import Attachment, Channel, OutgoingMessage, PermanentDeliveryError
from activities.contact import (
    ANSWER_KINDS,
    CONFIRMATION_KINDS,
    essential_kinds,
    quiet_until,
    route_opted_out,
)
from activities.delivery import fallback_for
from activities.messages_text import render

logger = logging.getLogger(__name__)

Outcome = Literal["sent", "retry", "failed", "lease_lost", "held", "opted_out"]
MetricsHook = Callable[[Outcome, str, str], None]
"""Called once per handled row with ``(outcome, kind, channel)``: no ids, no PHI."""

MAX_BACKOFF_SECONDS = 3600.0
LINK_KINDS = frozenset({"reply_reschedule_offer"})
"""Kinds whose text carries the patient's page link (made at send time, never stored)."""

_CLAIM = """
UPDATE notification_outbox AS o
SET status = 'sending',
    leased_until = now() + make_interval(secs => $2),
    lease_token = $3,
    attempts = o.attempts + 1
WHERE o.id IN (
    SELECT id FROM notification_outbox
    WHERE (status = 'pending' AND next_attempt_at <= now())
       OR (status = 'sending' AND leased_until < now())
    ORDER BY next_attempt_at
    FOR UPDATE SKIP LOCKED
    LIMIT $1
)
RETURNING o.id, o.workflow_id, o.notification_key, o.patient_id, o.kind, o.audience,
          o.channel, o.params, o.attempts, o.provider_key
"""

_RECIPIENTS = """
SELECT p.patient_id, p.full_name, p.email, p.phone, p.language, c.name AS clinic_name,
       c.timezone,
       c.quiet_hours_start, c.quiet_hours_end, c.essential_kinds,
       coalesce((c.protocol -> 'clinic' ->> 'sandbox')::boolean, false) AS sandbox,
       ARRAY(SELECT o.channel FROM contact_optouts o
             WHERE o.patient_id = p.patient_id AND o.opted_out_at IS NOT NULL) AS opted_out
FROM patients p LEFT JOIN clinics c ON c.clinic_id = p.clinic_id
WHERE p.patient_id = ANY($1::text[])
"""

_MARK_SENT = """
UPDATE notification_outbox
SET status = 'sent', sent_at = now(), leased_until = NULL, last_error = NULL,
    provider_message_id = coalesce($3, provider_message_id),
    delivery_status = coalesce(delivery_status, $4), delivery_updated_at = now()
WHERE id = $1 AND lease_token = $2 AND status = 'sending'
"""

# Quiet hours: back to pending until the window's end; the claim's attempt is not counted.
_HOLD = """
UPDATE notification_outbox
SET status = 'pending', next_attempt_at = $3, leased_until = NULL,
    attempts = greatest(attempts - 1, 0)
WHERE id = $1 AND lease_token = $2 AND status = 'sending'
"""

# Opted out: the row is cancelled with the reason; an essential message is written again for
# the remaining channel or as a staff alert ($4..) in the same statement.
_MARK_OPTED_OUT = """
WITH marked AS (
    UPDATE notification_outbox
    SET status = 'cancelled', cancelled_at = now(), leased_until = NULL, last_error = $3
    WHERE id = $1 AND lease_token = $2 AND status = 'sending'
    RETURNING workflow_id, patient_id
), rerouted AS (
    INSERT INTO notification_outbox
        (workflow_id, notification_key, patient_id, kind, audience, channel, params,
         provider_key)
    SELECT m.workflow_id, $4::text, m.patient_id, $5, $6, $7, $8::jsonb,
           m.workflow_id || ':' || $4::text
    FROM marked m WHERE $4::text IS NOT NULL
    ON CONFLICT (workflow_id, notification_key) DO NOTHING
)
SELECT count(*) FROM marked
"""

# A row that fails for good writes its fallback ($7.., activities/delivery.py) in the same
# statement, so a crash cannot leave a failed message without one.
_MARK_FAILED_ATTEMPT = """
WITH marked AS (
    UPDATE notification_outbox
    SET status = CASE WHEN $4 OR attempts >= $5 THEN 'failed' ELSE 'pending' END,
        next_attempt_at = now() + make_interval(secs => $3),
        leased_until = NULL,
        last_error = $6
    WHERE id = $1 AND lease_token = $2 AND status = 'sending'
    RETURNING status, workflow_id, patient_id
), fallback AS (
    INSERT INTO notification_outbox
        (workflow_id, notification_key, patient_id, kind, audience, channel, params,
         provider_key)
    SELECT m.workflow_id, $7::text, m.patient_id, $8, $9, $10, $11::jsonb,
           m.workflow_id || ':' || $7::text
    FROM marked m WHERE m.status = 'failed' AND $7::text IS NOT NULL
    ON CONFLICT (workflow_id, notification_key) DO NOTHING
)
SELECT status FROM marked
"""


@dataclass(frozen=True)
class _Claimed:
    id: int
    workflow_id: str
    notification_key: str
    patient_id: str
    kind: str
    audience: str
    channel: str
    params: dict[str, str]
    attempts: int
    provider_key: str


class OutboxDispatcher:
    """Sends due outbox rows through ``channel`` (see the module docstring for the guarantee).

    ``counts`` tallies outcomes (``sent``, ``retry``, ``failed``, ``lease_lost``); ``metrics``
    is called for each as well, e.g. to feed OpenTelemetry counters.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        channel: Channel,
        *,
        batch: int = 20,
        lease_seconds: float = 60,
        max_attempts: int = 8,
        base_backoff_seconds: float = 5,
        metrics: MetricsHook | None = None,
        clock: Callable[[], datetime] | None = None,
        patient_link: Callable[[str], str] | None = None,
    ) -> None:
        """Args:
        pool: The database pool.
        channel: Where messages go.
        batch: Rows claimed per round.
        lease_seconds: How long a claim holds; longer than the slowest send.
        max_attempts: Attempts before a row is ``failed``.
        base_backoff_seconds: Wait after the first failure (doubled for each further one).
        metrics: Optional hook ``(outcome, kind, channel)``.
        clock: The time quiet hours are judged by (tests pass a fixed one); the wall clock
            by default. Leases and due times stay on the database's ``now()``.
        patient_link: The patient's page link for a patient id (``api.tokens.patient_link``),
            put into messages that offer it (``link``); never stored in the outbox.
        """
        self._pool = pool
        self._channel = channel
        self.batch = batch
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.base_backoff_seconds = base_backoff_seconds
        self._metrics = metrics
        self._clock = clock or (lambda: datetime.now(UTC))
        self._patient_link = patient_link
        self.counts: Counter[str] = Counter()

    async def run_once(self) -> int:
        """Claim up to ``batch`` due rows and handle each; returns how many were claimed.

        Database errors propagate (``run`` logs them and tries again later).
        """
        token = uuid.uuid4()
        rows = await self._pool.fetch(_CLAIM, self.batch, float(self.lease_seconds), token)
        if not rows:
            return 0
        claimed = [_Claimed(**dict(r)) for r in rows]
        recipients = {
            r["patient_id"]: r
            for r in await self._pool.fetch(_RECIPIENTS, [c.patient_id for c in claimed])
        }
        for row in claimed:
            await self._handle(row, token, recipients.get(row.patient_id))
        return len(claimed)

    async def _handle(self, row: _Claimed, token: uuid.UUID, recipient: Any) -> None:
        ids = {"workflow_id": row.workflow_id, "notification_key": row.notification_key}
        if row.attempts > self.max_attempts:
            # Only reachable when earlier claims crashed before recording their outcome.
            await self._record_failure(
                row, token, "claimed too often without an outcome", True, recipient
            )
            return
        if await self._held_or_opted_out(row, token, recipient):
            return
        try:
            message = self._compose(row, recipient)
            if row.audience == "patient" and row.channel == "email":
                message = await self._with_invitation(row, message)
            receipt = await self._channel.send(message, row.provider_key)
        except PermanentDeliveryError as error:
            await self._record_failure(row, token, str(error), True, recipient)
            return
        except Exception as error:  # any channel failure is retried; details go to last_error
            logger.warning("send failed", extra={**ids, "attempt": row.attempts})
            error_text = f"{type(error).__name__}: {error}"
            await self._record_failure(row, token, error_text, False, recipient)
            return
        status = await self._pool.execute(
            _MARK_SENT,
            row.id,
            token,
            receipt.provider_message_id if receipt else None,
            receipt.status if receipt else None,
        )
        if status.endswith(" 1"):
            self._count("sent", row)
        else:
            # Another dispatcher took the row over after our lease expired; its resend
            # carries the same provider key, so the channel delivers once.
            logger.warning("lease lost before marking sent", extra=ids)
            self._count("lease_lost", row)

    async def _held_or_opted_out(self, row: _Claimed, token: uuid.UUID, recipient: Any) -> bool:
        """Consent and quiet hours (activities/contact.py); True when the row was handled."""
        if row.audience != "patient" or recipient is None:
            return False
        opted_out = list(recipient["opted_out"] or [])
        if row.channel in opted_out and row.kind not in CONFIRMATION_KINDS:
            instead = route_opted_out(
                notification_key=row.notification_key,
                kind=row.kind,
                channel=row.channel,
                params=row.params,
                opted_out=opted_out,
                # An answer the patient just asked for goes where they can read it.
                essential=essential_kinds(recipient["essential_kinds"]) | ANSWER_KINDS,
                email=recipient["email"],
                phone=recipient["phone"],
            )
            done = await self._pool.fetchval(
                _MARK_OPTED_OUT,
                row.id,
                token,
                f"opted out of {row.channel}"
                + ("" if instead is None else f"; essential: sent as {instead.notification_key}"),
                instead.notification_key if instead else None,
                instead.kind if instead else None,
                instead.audience if instead else None,
                instead.channel if instead else None,
                instead.params if instead else None,
            )
            self._count("opted_out" if done else "lease_lost", row)
            return True
        if row.kind in ANSWER_KINDS or recipient["sandbox"]:
            # A sandbox clinic's journeys run on a simulation clock: wall-clock quiet hours
            # would only stall the demo and the training sandbox.
            return False
        until = quiet_until(
            self._clock(),
            recipient["timezone"],
            recipient["quiet_hours_start"],
            recipient["quiet_hours_end"],
        )
        if until is None:
            return False
        status = await self._pool.execute(_HOLD, row.id, token, until)
        self._count("held" if status.endswith(" 1") else "lease_lost", row)
        return True

    async def _with_invitation(self, row: _Claimed, message: OutgoingMessage) -> OutgoingMessage:
        """A booking, a move or a withdrawal carries its ``.ics`` (activities/ics.py)."""
        found = await ics.invitation(
            self._pool,
            row.workflow_id,
            row.kind,
            row.params,
            row.notification_key,
            language=message.language,
        )
        if found is None:
            return message
        name, method, content = found
        attachment = Attachment(
            filename=name,
            content_type=f"text/calendar; method={method}; charset=utf-8",
            content=content.decode(),
        )
        return message.model_copy(update={"attachments": (attachment,)})

    def _compose(self, row: _Claimed, recipient: Any) -> OutgoingMessage:
        if row.channel == "staff":
            to = "staff"
        elif recipient is None:
            raise PermanentDeliveryError("no patient record for this notification")
        else:
            address = recipient["phone"] if row.channel == "sms" else recipient["email"]
            if not address:
                raise PermanentDeliveryError(f"the patient has no contact for {row.channel}")
            to = address
        params = row.params
        if row.kind in LINK_KINDS and self._patient_link is not None:
            params = {**params, "link": self._patient_link(row.patient_id)}
        text = render(
            row.kind,
            params,
            patient_name=recipient["full_name"] if recipient is not None else None,
            patient_id=row.patient_id,
            clinic_name=recipient["clinic_name"] if recipient is not None else None,
            clinic_timezone=recipient["timezone"] if recipient is not None else None,
            audience=row.audience,
            # The patient's language at send time (patients.language; docs/languages.md).
            language=recipient["language"] if recipient is not None else None,
        )
        return OutgoingMessage(
            channel=row.channel,
            to=to,
            subject=text.subject,
            body=text.body,
            sender_name=recipient["clinic_name"] if recipient is not None else None,
            language=text.language,
        )

    async def _record_failure(
        self, row: _Claimed, token: uuid.UUID, error: str, permanent: bool, recipient: Any
    ) -> None:
        backoff = min(
            self.base_backoff_seconds * 2 ** max(row.attempts - 1, 0), MAX_BACKOFF_SECONDS
        )
        fallback = fallback_for(
            notification_key=row.notification_key,
            kind=row.kind,
            audience=row.audience,
            channel=row.channel,
            params=row.params,
            email=recipient["email"] if recipient is not None else None,
            phone=recipient["phone"] if recipient is not None else None,
        )
        status = await self._pool.fetchval(
            _MARK_FAILED_ATTEMPT,
            row.id,
            token,
            float(backoff),
            permanent,
            self.max_attempts,
            error[:1000],
            fallback.notification_key if fallback else None,
            fallback.kind if fallback else None,
            fallback.audience if fallback else None,
            fallback.channel if fallback else None,
            fallback.params if fallback else None,
        )
        if status is None:
            self._count("lease_lost", row)
        else:
            self._count("failed" if status == "failed" else "retry", row)
            if status == "failed":
                logger.error(
                    "notification failed for good",
                    extra={
                        "workflow_id": row.workflow_id,
                        "notification_key": row.notification_key,
                        "attempts": row.attempts,
                    },
                )

    def _count(self, outcome: Outcome, row: _Claimed) -> None:
        self.counts[outcome] += 1
        if self._metrics is not None:
            self._metrics(outcome, row.kind, row.channel)

    async def run(self, stop: asyncio.Event, poll_interval: float = 1.0) -> None:
        """Dispatch until ``stop`` is set: a full batch is followed at once by the next, an
        empty one waits ``poll_interval``. Database errors are logged and retried with a
        growing pause (up to a minute), so an outage delays messages but never ends the loop.
        Cancelling the task stops it at once; a row it was sending is resent by whoever claims
        it after the lease (same provider key).
        """
        pause = poll_interval
        while not stop.is_set():
            try:
                claimed = await self.run_once()
                pause = poll_interval
            except Exception as error:  # an outage or a bug must not end the loop
                # The type only: PostgreSQL error details can quote row values (PHI).
                logger.warning("outbox dispatch failed", extra={"error": type(error).__name__})
                claimed = 0
                pause = min(pause * 2, 60.0)
            if claimed >= self.batch:
                continue
            try:
                await asyncio.wait_for(stop.wait(), timeout=pause)
            except TimeoutError:
                pass
