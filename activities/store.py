"""The journey's database activities: ``record_step``, ``load_clinic``, and built-in
scheduling's ``reserve_slot`` and ``release_slot`` (``scheduling/store.py``), on an asyncpg pool.

Every write is idempotent under Temporal's retries and replays (habit A3): a step is keyed by
``(workflow_id, step)`` in ``journey_steps`` and applied at most once, in one transaction with
everything it writes.

Errors: a lost connection or a stopped server propagates as it is, so Temporal retries the
activity (the journey waits, nothing is lost). Data PostgreSQL refuses for good (a check or
foreign-key violation, a value it cannot store) raises a non-retryable ``ApplicationError``
of type ``InvalidRecord``; an unknown clinic raises ``UnknownClinic``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import asyncpg
import pydantic
from temporalio import activity
from temporalio.exceptions import ApplicationError

from scheduling import store as slots
from workflows.booking import SlotRelease, SlotRequest, SlotResult
from workflows.guards import CLOSED_STAGES
from workflows.protocol import ClinicProtocol
from workflows.records import ClinicRef, StepRecord

STAFF_CHANNEL = "staff"
# Used when the patient record is missing: the dispatcher then fails the row with a reason.
FALLBACK_CHANNEL = "email"

_INSERT_STEP = """
INSERT INTO journey_steps (workflow_id, step) VALUES ($1, $2)
ON CONFLICT DO NOTHING
RETURNING true
"""

_INSERT_EVENT = """
INSERT INTO journey_events
    (workflow_id, event_key, step, kind, actor, occurred_at, summary, data)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (workflow_id, event_key) DO NOTHING
"""

_UPSERT_APPOINTMENT = """
INSERT INTO appointments AS a
    (workflow_id, course_number, session_number, starts_at, arrive_by, duration_minutes,
     status, version)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (workflow_id, course_number, session_number) DO UPDATE SET
    starts_at = EXCLUDED.starts_at,
    arrive_by = EXCLUDED.arrive_by,
    duration_minutes = EXCLUDED.duration_minutes,
    status = EXCLUDED.status,
    version = EXCLUDED.version,
    updated_at = now()
WHERE a.version < EXCLUDED.version
"""

_CURRENT_STATUS = """
SELECT status FROM journeys WHERE workflow_id = $1 FOR UPDATE
"""

_UPSERT_JOURNEY = """
INSERT INTO journeys AS j
    (workflow_id, patient_id, clinic_id, version, stage, course_number, sessions_planned,
     sessions_done, next_action, next_action_at, spf_until, review_on, flags, protocol_version,
     status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT (workflow_id) DO UPDATE SET
    patient_id = EXCLUDED.patient_id,
    clinic_id = EXCLUDED.clinic_id,
    version = EXCLUDED.version,
    stage = EXCLUDED.stage,
    course_number = EXCLUDED.course_number,
    sessions_planned = EXCLUDED.sessions_planned,
    sessions_done = EXCLUDED.sessions_done,
    next_action = EXCLUDED.next_action,
    next_action_at = EXCLUDED.next_action_at,
    spf_until = EXCLUDED.spf_until,
    review_on = EXCLUDED.review_on,
    flags = EXCLUDED.flags,
    protocol_version = EXCLUDED.protocol_version,
    status = EXCLUDED.status,
    updated_at = now()
WHERE j.version < EXCLUDED.version
"""

_CANCEL_NOTIFICATIONS = """
UPDATE notification_outbox SET status = 'cancelled', cancelled_at = now()
WHERE workflow_id = $1 AND status = 'pending' AND ($2 OR notification_key = ANY($3::text[]))
"""

_INSERT_NOTIFICATION = """
INSERT INTO notification_outbox
    (workflow_id, notification_key, patient_id, kind, audience, channel, params, provider_key,
     next_attempt_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, coalesce($9, now()))
ON CONFLICT (workflow_id, notification_key) DO NOTHING
"""


def _datetime(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _date(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def provider_key(workflow_id: str, notification_key: str) -> str:
    """The idempotency key a channel receives for one outbox row (stable across resends)."""
    return f"{workflow_id}:{notification_key}"


class JourneyStore:
    """The database activities of a journey, bound to one worker's connection pool (habit A1).

    Register the bound methods (:func:`build_activities`); workflows call them by name
    (``record_step``, ``load_clinic``).
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        """Args:
        pool: The worker's pool (see :func:`worker.database.create_pool`).
        """
        self._pool = pool

    @activity.defn
    async def record_step(self, record: StepRecord) -> None:
        """Write one journey step: timeline events, read model, appointments and outbox rows.

        Idempotency key: ``(workflow_id, step)``. All writes happen in one transaction that
        first inserts the key into ``journey_steps``; if the key is already there the step was
        written before (a retry or a replay) and nothing else is written. Within a step:

        * events are unique per ``(workflow_id, event key)``;
        * an appointment is replaced only by a higher step (``version = step``);
        * the journey row is replaced only by a higher step (its status merged with the
          step's patch), so a late write never overwrites a newer one;
        * notifications are unique per ``(workflow_id, notification key)``; the channel is the
          patient's preferred one, or ``staff`` for the staff audience.

        Raises:
            ApplicationError: type ``InvalidRecord`` (non-retryable) if PostgreSQL refuses the
                data for good. Connection and server errors propagate and are retried.
        """
        info = activity.info()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                first = await conn.fetchval(_INSERT_STEP, record.workflow_id, record.step)
                if not first:
                    activity.logger.info(
                        "step already recorded",
                        extra={"workflow_id": record.workflow_id, "step": record.step},
                    )
                    return
                await self._write_step(conn, record)
        except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as error:
            raise ApplicationError(
                f"PostgreSQL refused step {record.step} of {record.workflow_id}: "
                f"{type(error).__name__} ({error.sqlstate})",
                type="InvalidRecord",
                non_retryable=True,
            ) from error
        activity.logger.info(
            "step recorded",
            extra={
                "workflow_id": record.workflow_id,
                "step": record.step,
                "attempt": info.attempt,
                "events": len(record.events),
                "notifications": len(record.notifications),
            },
        )

    async def _write_step(
        self, conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, record: StepRecord
    ) -> None:
        wf = record.workflow_id
        if record.events:
            await conn.executemany(
                _INSERT_EVENT,
                [
                    (
                        wf,
                        e.key,
                        record.step,
                        e.kind,
                        e.actor,
                        e.occurred_at,
                        e.summary,
                        e.model_dump(mode="json")["data"],
                    )
                    for e in record.events
                ],
            )
        if record.appointments:
            await conn.executemany(
                _UPSERT_APPOINTMENT,
                [
                    (
                        wf,
                        a.course_number,
                        a.session_number,
                        a.starts_at,
                        a.arrive_by,
                        a.duration_minutes,
                        a.status,
                        record.step,
                    )
                    for a in record.appointments
                ],
            )
        await self._merge_status(conn, record)
        # Built-in scheduling (docs/scheduling.md): a session whose appointment stops being
        # live (cancelled, deferred, no-show, planned again) gives its slot back, and a step
        # that closes the journey gives back every slot of a session not done; same transaction.
        closing = record.status_patch.get("stage") in CLOSED_STAGES
        if record.appointments or closing:
            await slots.release_for_step(
                conn,
                wf,
                [(a.course_number, a.session_number) for a in record.appointments],
                closing=closing,
            )
        if record.cancel_pending_notifications or record.cancel_notifications:
            await conn.execute(
                _CANCEL_NOTIFICATIONS,
                wf,
                record.cancel_pending_notifications,
                list(record.cancel_notifications),
            )
        if record.notifications:
            preferred = await conn.fetchval(
                "SELECT preferred_channel FROM patients WHERE patient_id = $1", record.patient_id
            )
            if preferred is None and any(n.audience == "patient" for n in record.notifications):
                activity.logger.warning(
                    "no patient record for a patient notification",
                    extra={"workflow_id": wf, "step": record.step},
                )
            await conn.executemany(
                _INSERT_NOTIFICATION,
                [
                    (
                        wf,
                        n.key,
                        record.patient_id,
                        n.kind,
                        n.audience,
                        STAFF_CHANNEL if n.audience == "staff" else (preferred or FALLBACK_CHANNEL),
                        dict(n.params),
                        provider_key(wf, n.key),
                        n.send_at,
                    )
                    for n in record.notifications
                ],
            )

    async def _merge_status(
        self, conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, record: StepRecord
    ) -> None:
        """Merge the step's status patch into the read model; the list columns come from the
        merged status, so a write carries only what changed."""
        stored = await conn.fetchval(_CURRENT_STATUS, record.workflow_id)
        status: dict[str, Any] = {**(stored or {}), **record.status_patch}
        sessions = status.get("sessions") or []
        await conn.execute(
            _UPSERT_JOURNEY,
            record.workflow_id,
            record.patient_id,
            record.clinic_id,
            record.step,
            status.get("stage", "screening"),
            status.get("course_number", 1),
            len(sessions),
            sum(1 for s in sessions if s.get("state") == "done"),
            status.get("next_action"),
            _datetime(status.get("next_action_at")),
            _date(status.get("spf_until")),
            _date(status.get("review_on")),
            list(status.get("flags") or []),
            status.get("protocol_version", ""),
            status,
        )

    @activity.defn
    async def load_clinic(self, ref: ClinicRef) -> ClinicProtocol:
        """The clinic's settings and protocol, as stored in ``clinics.protocol``.

        Read-only, so naturally idempotent.

        Raises:
            ApplicationError: type ``UnknownClinic`` (non-retryable) if no clinic has this id;
                type ``InvalidClinicProtocol`` (non-retryable) if the stored protocol no longer
                validates. Connection and server errors propagate and are retried.
        """
        stored: Any = await self._pool.fetchval(
            "SELECT protocol FROM clinics WHERE clinic_id = $1", ref.clinic_id
        )
        if stored is None:
            raise ApplicationError(
                f"Clinic {ref.clinic_id!r} is not configured: add it (clinics table, "
                "repository.upsert_clinic) or start the journey with an existing clinic id.",
                type="UnknownClinic",
                non_retryable=True,
            )
        try:
            return ClinicProtocol.model_validate(stored)
        except pydantic.ValidationError as error:
            raise ApplicationError(
                f"The stored protocol of clinic {ref.clinic_id!r} is not valid: "
                f"{error.error_count()} problem(s); fix it with repository.upsert_clinic.",
                type="InvalidClinicProtocol",
                non_retryable=True,
            ) from None

    @activity.defn
    async def reserve_slot(self, request: SlotRequest) -> SlotResult:
        """A slot for one session (workflows/booking.py, scheduling/store.py ``reserve``).

        Idempotent per (workflow id, course, session): a live reservation on one of the allowed
        days (at the exact time, when one is asked) is returned unchanged; otherwise it is
        moved in one transaction. Double booking is refused by PostgreSQL's exclusion
        constraint. A clinic without resources gets its default time (``capacity_known``
        False). No free slot: ``slot`` None and a ``next_option`` with the reason (a live
        reservation elsewhere is then kept).

        Raises:
            ApplicationError: type ``InvalidRecord`` (non-retryable) if PostgreSQL refuses the
                data for good. Connection errors and contention propagate and are retried.
        """
        try:
            return await slots.reserve(self._pool, request)
        except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as error:
            raise ApplicationError(
                f"PostgreSQL refused the reservation of session {request.session_number} of "
                f"{request.workflow_id}: {type(error).__name__} ({error.sqlstate})",
                type="InvalidRecord",
                non_retryable=True,
            ) from error

    @activity.defn
    async def release_slot(self, request: SlotRelease) -> None:
        """Give back one session's active reservations (idempotent; none is not an error)."""
        await slots.release(self._pool, request)

    def activities(self) -> list[Callable[..., Any]]:
        return [self.record_step, self.load_clinic, self.reserve_slot, self.release_slot]


def build_activities(pool: asyncpg.Pool) -> list[Callable[..., Any]]:
    """The activities a journey worker registers, bound to ``pool`` (habit K5)."""
    return JourneyStore(pool).activities()
