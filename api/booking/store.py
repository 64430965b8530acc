"""PostgreSQL for booking systems (migration ``0027_booking_partner.sql``): who is registered,
the booking system's ids mapped to ours, and the append-only log of its appointment events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from activities import webhooks

__all__ = [
    "AppointmentMapping",
    "IdConflict",
    "Registration",
    "applied_event",
    "disable",
    "get_appointment",
    "get_registration",
    "journey_of",
    "list_appointments",
    "list_events",
    "list_patients",
    "log_event",
    "map_patient",
    "patient_for_external",
    "record_appointment",
    "register",
]

Conn = asyncpg.Pool | asyncpg.Connection


class IdConflict(ValueError):
    """An id is already mapped to something else (answered 409 by the staff routes, 422 to
    the booking system)."""


@dataclass(frozen=True)
class Registration:
    clinic_id: str
    adapter: str
    base_url: str
    webhook_url: str
    inbound_secret: str | None
    integration: str | None
    subscriber_id: int | None
    description: str
    event_types: list[str]
    created_at: datetime
    updated_at: datetime
    disabled_at: datetime | None

    @property
    def active(self) -> bool:
        return self.disabled_at is None


@dataclass(frozen=True)
class AppointmentMapping:
    clinic_id: str
    external_appointment_id: str
    patient_id: str
    workflow_id: str
    course_number: int
    session_number: int
    status: str
    starts_at: datetime | None
    outcome: str
    created_at: datetime
    updated_at: datetime


_REGISTRATION = """
SELECT b.*, coalesce(s.event_types, '{}') AS event_types
FROM booking_systems b LEFT JOIN webhook_subscribers s ON s.id = b.subscriber_id
WHERE b.clinic_id = $1
"""


async def get_registration(pool: Conn, clinic_id: str) -> Registration | None:
    """The clinic's booking system (enabled or not), or ``None``."""
    row = await pool.fetchrow(_REGISTRATION, clinic_id)
    return None if row is None else Registration(**dict(row))


async def register(
    pool: asyncpg.Pool,
    *,
    clinic_id: str,
    adapter: str,
    base_url: str,
    webhook_url: str,
    inbound_secret: str | None,
    integration: str | None,
    description: str,
    event_types: Sequence[str],
    outbound_secret: str | None,
) -> tuple[Registration, str]:
    """Register (or replace) the clinic's booking system, and subscribe its ``webhook_url`` to
    ``event_types``; a replaced registration's subscription is disabled and its signing secret
    kept for the new one unless ``outbound_secret`` is given. Returns the registration and the
    outbound subscription's signing secret.

    Raises:
        asyncpg.ForeignKeyViolationError: no such clinic.
    """
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('booking_systems:' || $1))", clinic_id
        )
        kept = await conn.fetchval(
            """
            SELECT s.secret FROM booking_systems b
            JOIN webhook_subscribers s ON s.id = b.subscriber_id
            WHERE b.clinic_id = $1
            """,
            clinic_id,
        )
        secret = outbound_secret or kept or webhooks.new_secret()
        await conn.execute(
            """
            UPDATE webhook_subscribers SET disabled_at = coalesce(disabled_at, now())
            WHERE id = (SELECT subscriber_id FROM booking_systems WHERE clinic_id = $1)
            """,
            clinic_id,
        )
        subscriber_id = await conn.fetchval(
            """
            INSERT INTO webhook_subscribers (clinic_id, url, event_types, description, secret)
            VALUES ($1, $2, $3, $4, $5) RETURNING id
            """,
            clinic_id,
            webhook_url,
            sorted(set(event_types)),
            f"booking system ({adapter})",
            secret,
        )
        await conn.execute(
            """
            INSERT INTO booking_systems (clinic_id, adapter, base_url, webhook_url,
                                         inbound_secret, integration, subscriber_id, description)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (clinic_id) DO UPDATE SET
                adapter = EXCLUDED.adapter, base_url = EXCLUDED.base_url,
                webhook_url = EXCLUDED.webhook_url, inbound_secret = EXCLUDED.inbound_secret,
                integration = EXCLUDED.integration, subscriber_id = EXCLUDED.subscriber_id,
                description = EXCLUDED.description, updated_at = now(), disabled_at = NULL
            """,
            clinic_id,
            adapter,
            base_url,
            webhook_url,
            inbound_secret,
            integration,
            subscriber_id,
            description,
        )
        # Windows published before the booking system was registered (or while it was off)
        # would never reach it: fan the latest open window of each journey out again. The
        # fan-out skips subscribers that already have a delivery of that event.
        await conn.execute(_REFAN_OPEN_WINDOWS, clinic_id)
        row = await conn.fetchrow(_REGISTRATION, clinic_id)
    assert row is not None  # written above in the same transaction
    return Registration(**dict(row)), secret


# The latest ``session_window`` of each open journey of the clinic, unless a booking of that
# session came after it (the same event ids: receivers de-duplicate by ``webhook-id``).
_REFAN_OPEN_WINDOWS = """
INSERT INTO webhook_fanout (event_id)
SELECT w.id
FROM journeys j
JOIN LATERAL (
    SELECT e.id, e.data FROM journey_events e
    WHERE e.workflow_id = j.workflow_id AND e.kind = 'session_window'
    ORDER BY e.id DESC LIMIT 1
) w ON true
WHERE j.clinic_id = $1
  AND j.stage NOT IN ('excluded', 'completed', 'withdrawn')
  AND NOT EXISTS (
      SELECT 1 FROM journey_events b
      WHERE b.workflow_id = j.workflow_id AND b.id > w.id
        AND b.kind IN ('session_booked', 'rescheduled')
  )
ON CONFLICT DO NOTHING
"""


async def disable(pool: asyncpg.Pool, clinic_id: str) -> Registration | None:
    """Stop taking the clinic's booking system's events and sending it windows."""
    async with pool.acquire() as conn, conn.transaction():
        subscriber_id = await conn.fetchval(
            """
            UPDATE booking_systems SET disabled_at = coalesce(disabled_at, now()),
                                       updated_at = now()
            WHERE clinic_id = $1 RETURNING subscriber_id
            """,
            clinic_id,
        )
        if subscriber_id is not None:
            await conn.execute(
                """
                UPDATE webhook_subscribers SET disabled_at = coalesce(disabled_at, now())
                WHERE id = $1
                """,
                subscriber_id,
            )
        row = await conn.fetchrow(_REGISTRATION, clinic_id)
    return None if row is None else Registration(**dict(row))


# ---------------------------------------------------------------- patients


async def patient_for_external(pool: Conn, clinic_id: str, external_patient_id: str) -> str | None:
    """Our patient id for the booking system's patient id, or ``None``."""
    found = await pool.fetchval(
        """
        SELECT patient_id FROM booking_patients
        WHERE clinic_id = $1 AND external_patient_id = $2
        """,
        clinic_id,
        external_patient_id,
    )
    return None if found is None else str(found)


async def map_patient(
    pool: Conn, clinic_id: str, external_patient_id: str, patient_id: str, mapped_by: str
) -> bool:
    """Map the booking system's patient id to ours; ``True`` when a new mapping was written,
    ``False`` when exactly this mapping existed.

    Raises:
        IdConflict: either id is already mapped to another one.
        asyncpg.ForeignKeyViolationError: no such patient or clinic.
    """
    try:
        written = await pool.fetchval(
            """
            INSERT INTO booking_patients (clinic_id, external_patient_id, patient_id, mapped_by)
            VALUES ($1, $2, $3, $4)
            ON CONFLICT (clinic_id, external_patient_id) DO NOTHING
            RETURNING true
            """,
            clinic_id,
            external_patient_id,
            patient_id,
            mapped_by,
        )
    except asyncpg.UniqueViolationError:
        raise IdConflict(
            f"Patient {patient_id} is already mapped to another external patient id."
        ) from None
    if written:
        return True
    existing = await patient_for_external(pool, clinic_id, external_patient_id)
    if existing != patient_id:
        raise IdConflict(
            f"External patient id {external_patient_id!r} is already mapped to another patient."
        )
    return False


async def list_patients(
    pool: Conn, clinic_id: str, limit: int, offset: int, patient_id: str | None = None
) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        """
        SELECT clinic_id, external_patient_id, patient_id, mapped_by, created_at
        FROM booking_patients WHERE clinic_id = $1 AND ($4::text IS NULL OR patient_id = $4)
        ORDER BY created_at DESC, external_patient_id LIMIT $2 OFFSET $3
        """,
        clinic_id,
        limit,
        offset,
        patient_id,
    )
    return [dict(r) for r in rows]


async def journey_of(pool: Conn, patient_id: str) -> tuple[str, str | None, int | None] | None:
    """The patient's clinic, and the journey's current course and stage from the read model
    (``None`` for both before the journey wrote its first row); ``None``: no such patient."""
    row = await pool.fetchrow(
        """
        SELECT p.clinic_id, j.stage, j.course_number
        FROM patients p LEFT JOIN journeys j ON j.patient_id = p.patient_id
        WHERE p.patient_id = $1
        """,
        patient_id,
    )
    if row is None:
        return None
    return str(row["clinic_id"]), row["stage"], row["course_number"]


# ---------------------------------------------------------------- appointments


async def get_appointment(
    pool: Conn, clinic_id: str, external_appointment_id: str
) -> AppointmentMapping | None:
    row = await pool.fetchrow(
        """
        SELECT * FROM booking_appointments
        WHERE clinic_id = $1 AND external_appointment_id = $2
        """,
        clinic_id,
        external_appointment_id,
    )
    return None if row is None else AppointmentMapping(**dict(row))


async def record_appointment(
    pool: Conn,
    *,
    clinic_id: str,
    external_appointment_id: str,
    patient_id: str,
    workflow_id: str,
    course_number: int,
    session_number: int,
    status: str,
    starts_at: datetime | None,
    outcome: str,
) -> None:
    """Record the appointment's mapping on its first event; later events update its status,
    start and last outcome (never the session it maps to)."""
    await pool.execute(
        """
        INSERT INTO booking_appointments (clinic_id, external_appointment_id, patient_id,
            workflow_id, course_number, session_number, status, starts_at, outcome)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (clinic_id, external_appointment_id) DO UPDATE SET
            status = EXCLUDED.status,
            starts_at = coalesce(EXCLUDED.starts_at, booking_appointments.starts_at),
            outcome = EXCLUDED.outcome, updated_at = now()
        """,
        clinic_id,
        external_appointment_id,
        patient_id,
        workflow_id,
        course_number,
        session_number,
        status,
        starts_at,
        outcome,
    )


async def list_appointments(
    pool: Conn, clinic_id: str, patient_id: str | None, limit: int, offset: int
) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        """
        SELECT * FROM booking_appointments
        WHERE clinic_id = $1 AND ($2::text IS NULL OR patient_id = $2)
        ORDER BY updated_at DESC, external_appointment_id LIMIT $3 OFFSET $4
        """,
        clinic_id,
        patient_id,
        limit,
        offset,
    )
    return [dict(r) for r in rows]


# ---------------------------------------------------------------- the event log


async def applied_event(pool: Conn, clinic_id: str, webhook_id: str) -> dict[str, Any] | None:
    """The logged event this ``webhook-id`` was applied as, or ``None``."""
    row = await pool.fetchrow(
        """
        SELECT request_hash, answer FROM booking_events
        WHERE clinic_id = $1 AND webhook_id = $2 AND status = 'applied'
        """,
        clinic_id,
        webhook_id,
    )
    if row is None:
        return None
    return {"request_hash": row["request_hash"], "answer": row["answer"]}


async def log_event(
    pool: Conn,
    *,
    clinic_id: str,
    webhook_id: str,
    event_type: str,
    status: str,
    http_status: int,
    request_hash: str,
    reasons: list[dict[str, Any]] | None = None,
    answer: dict[str, Any] | None = None,
    external_patient_id: str | None = None,
    external_appointment_id: str | None = None,
    patient_id: str | None = None,
    course_number: int | None = None,
    session_number: int | None = None,
    starts_at: datetime | None = None,
) -> str:
    """Append one event to the log; returns the status written (``duplicate`` when a racing
    copy of the same ``webhook-id`` was logged ``applied`` first)."""
    for attempt in (status, "duplicate"):
        try:
            await pool.execute(
                """
                INSERT INTO booking_events (clinic_id, webhook_id, event_type,
                    external_patient_id, external_appointment_id, patient_id, course_number,
                    session_number, starts_at, status, http_status, reasons, answer,
                    request_hash)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                """,
                clinic_id,
                webhook_id,
                event_type,
                external_patient_id,
                external_appointment_id,
                patient_id,
                course_number,
                session_number,
                starts_at,
                attempt,
                http_status,
                reasons or [],
                answer or {},
                request_hash,
            )
            return attempt
        except asyncpg.UniqueViolationError:
            continue
    return "duplicate"


async def list_events(
    pool: Conn, clinic_id: str, status: str | None, limit: int, offset: int
) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        """
        SELECT id, clinic_id, webhook_id, event_type, external_patient_id,
               external_appointment_id, patient_id, course_number, session_number, starts_at,
               status, http_status, reasons, received_at
        FROM booking_events
        WHERE clinic_id = $1 AND ($2::text IS NULL OR status = $2)
        ORDER BY id DESC LIMIT $3 OFFSET $4
        """,
        clinic_id,
        status,
        limit,
        offset,
    )
    return [dict(r) for r in rows]
