"""Reads and writes for the API, the CLI and the dashboard (not activities): plain async functions
over an asyncpg pool, returning typed pydantic rows.

The workflow never calls these; journeys write only through ``activities.store``. Patient
records (:class:`PatientRow`) are the only personal data in the product: return them to
authorised staff and the patient, never log them.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, model_validator

from activities.i18n import DEFAULT_LANGUAGE, Language, normalise
from workflows.protocol import ClinicProtocol

DEFAULT_CLINIC_ID = "default"
PATIENT_ID_PREFIX = "p_"

StaffRole = Literal["staff", "reception", "clinician", "manager", "admin"]
JourneyOrder = Literal["next_action_at", "updated_at", "stage", "patient_name"]

# Whitelisted ORDER BY clauses (never built from user input); workflow_id makes paging stable.
_ORDER_BY: dict[str, str] = {
    "next_action_at": "j.next_action_at ASC NULLS LAST, j.workflow_id",
    "updated_at": "j.updated_at DESC, j.workflow_id",
    "stage": "j.stage, j.next_action_at ASC NULLS LAST, j.workflow_id",
    "patient_name": "p.full_name ASC NULLS LAST, j.workflow_id",
}


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True)


class UnknownClinicError(LookupError):
    """The clinic id names no clinic in the ``clinics`` table."""


# ---------------------------------------------------------------- rows


class PatientCreate(BaseModel):
    """A new patient record (personal data): a contact for the preferred channel is required."""

    model_config = ConfigDict(extra="forbid")

    full_name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    phone: str | None = Field(default=None, max_length=32, pattern=r"^\+?[0-9 ()-]{5,32}$")
    preferred_channel: Literal["email", "sms"] = "email"
    clinic_id: str = Field(default=DEFAULT_CLINIC_ID, min_length=1, max_length=64)
    # The patient's language (docs/languages.md); None: the clinic's default language.
    language: Language | None = None

    @model_validator(mode="after")
    def _contact_for_channel(self) -> PatientCreate:
        if self.preferred_channel == "email" and not self.email:
            raise ValueError("email is required when the preferred channel is email")
        if self.preferred_channel == "sms" and not self.phone:
            raise ValueError("phone is required when the preferred channel is sms")
        return self


class PatientRow(_Row):
    """A stored patient record (personal data)."""

    patient_id: str
    full_name: str
    email: str | None
    phone: str | None
    preferred_channel: Literal["email", "sms"]
    clinic_id: str
    created_at: datetime
    language: Language = DEFAULT_LANGUAGE


class JourneyRow(_Row):
    """One journey of the read model, with the patient's name for the dashboard."""

    workflow_id: str
    patient_id: str
    clinic_id: str
    version: int
    stage: str
    course_number: int
    sessions_planned: int
    sessions_done: int
    next_action: str | None
    next_action_at: datetime | None
    spf_until: date | None
    review_on: date | None
    flags: list[str]
    protocol_version: str
    status: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    patient_name: str | None = None


class EventRow(_Row):
    """One line of a journey's timeline."""

    id: int
    workflow_id: str
    event_key: str
    step: int
    kind: str
    actor: str
    occurred_at: datetime
    summary: str
    data: dict[str, Any]
    recorded_at: datetime


class AppointmentRow(_Row):
    """The latest state of one appointment."""

    workflow_id: str
    course_number: int
    session_number: int
    starts_at: datetime
    arrive_by: datetime | None
    duration_minutes: int
    status: str
    version: int
    updated_at: datetime


class NotificationRow(_Row):
    """One outbox row (what was or will be sent, never the rendered text)."""

    id: int
    workflow_id: str
    notification_key: str
    patient_id: str
    kind: str
    audience: str
    channel: str
    params: dict[str, Any]
    status: Literal["pending", "sending", "sent", "failed"]
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


class StaffRow(_Row):
    """A back-office user (the token itself is never stored)."""

    id: int
    name: str
    role: StaffRole
    created_at: datetime
    disabled_at: datetime | None
    # The clinics the member sees (None: every clinic; issue 16, api/access).
    clinics: list[str] | None = None


class IdempotentResponse(_Row):
    """The recorded response of an accepted API request."""

    scope: str
    key: str
    request_hash: str
    status_code: int
    response: Any
    created_at: datetime


# ---------------------------------------------------------------- clinics


async def upsert_clinic(pool: asyncpg.Pool, cp: ClinicProtocol) -> None:
    """Create or replace a clinic and its protocol (journeys already running keep theirs)."""
    c = cp.clinic
    await pool.execute(
        """
        INSERT INTO clinics AS c (clinic_id, name, timezone, hemisphere, summer_months,
                                  open_weekdays, protocol_version, protocol)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (clinic_id) DO UPDATE SET
            name = EXCLUDED.name, timezone = EXCLUDED.timezone,
            hemisphere = EXCLUDED.hemisphere, summer_months = EXCLUDED.summer_months,
            open_weekdays = EXCLUDED.open_weekdays,
            protocol_version = EXCLUDED.protocol_version, protocol = EXCLUDED.protocol,
            updated_at = now()
        """,
        c.clinic_id,
        c.name,
        c.timezone,
        c.hemisphere,
        list(c.effective_summer_months()),
        list(c.open_weekdays),
        cp.protocol.version,
        cp.model_dump(mode="json"),
    )


async def get_clinic(pool: asyncpg.Pool, clinic_id: str) -> ClinicProtocol | None:
    """The clinic's settings and protocol, or ``None`` if unknown."""
    stored = await pool.fetchval("SELECT protocol FROM clinics WHERE clinic_id = $1", clinic_id)
    return None if stored is None else ClinicProtocol.model_validate(stored)


async def ensure_default_clinic(pool: asyncpg.Pool) -> ClinicProtocol:
    """Make sure the clinic ``default`` exists (with the default protocol if it is new);
    returns it as stored. A clinic tuned earlier is left as it is."""
    default = ClinicProtocol()
    c = default.clinic
    await pool.execute(
        """
        INSERT INTO clinics (clinic_id, name, timezone, hemisphere, summer_months,
                             open_weekdays, protocol_version, protocol)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (clinic_id) DO NOTHING
        """,
        c.clinic_id,
        c.name,
        c.timezone,
        c.hemisphere,
        list(c.effective_summer_months()),
        list(c.open_weekdays),
        default.protocol.version,
        default.model_dump(mode="json"),
    )
    stored = await get_clinic(pool, DEFAULT_CLINIC_ID)
    assert stored is not None
    return stored


# ---------------------------------------------------------------- patients


def new_patient_id() -> str:
    """An opaque patient id: ``p_`` and 12 random URL-safe characters (72 bits)."""
    return PATIENT_ID_PREFIX + secrets.token_urlsafe(9)


async def create_patient(pool: asyncpg.Pool, patient: PatientCreate) -> PatientRow:
    """Store a new patient under a freshly generated opaque id.

    Write this before starting the journey, then start it with the id only (PHI stays out of
    Temporal history).

    Raises:
        UnknownClinicError: ``patient.clinic_id`` names no clinic.
    """
    for _ in range(3):  # a collision of 72 random bits is not expected; retry rather than fail
        try:
            row = await pool.fetchrow(
                """
                INSERT INTO patients (patient_id, full_name, email, phone, preferred_channel,
                                      clinic_id, language)
                VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, (
                    SELECT default_language FROM clinics WHERE clinic_id = $6), 'en'))
                RETURNING *
                """,
                new_patient_id(),
                patient.full_name,
                patient.email,
                patient.phone,
                patient.preferred_channel,
                patient.clinic_id,
                patient.language,
            )
        except asyncpg.ForeignKeyViolationError:
            raise UnknownClinicError(f"unknown clinic {patient.clinic_id!r}") from None
        except asyncpg.UniqueViolationError:
            continue
        assert row is not None
        return PatientRow.model_validate(dict(row))
    raise RuntimeError("could not generate a unique patient id")


async def get_patient(pool: asyncpg.Pool, patient_id: str) -> PatientRow | None:
    """The patient's record, or ``None``."""
    row = await pool.fetchrow("SELECT * FROM patients WHERE patient_id = $1", patient_id)
    return None if row is None else PatientRow.model_validate(dict(row))


async def set_patient_language(
    pool: asyncpg.Pool, patient_id: str, language: Language
) -> PatientRow | None:
    """Change the patient's language (messages not yet sent, the page and the calendar follow
    at once); ``None`` if there is no such patient."""
    row = await pool.fetchrow(
        "UPDATE patients SET language = $2 WHERE patient_id = $1 RETURNING *", patient_id, language
    )
    return None if row is None else PatientRow.model_validate(dict(row))


async def patient_language(pool: asyncpg.Pool | asyncpg.Connection, patient_id: str) -> Language:
    """The patient's language (English for an unknown patient)."""
    found = await pool.fetchval("SELECT language FROM patients WHERE patient_id = $1", patient_id)
    return normalise(found)


async def clinic_default_language(pool: asyncpg.Pool, clinic_id: str) -> Language | None:
    """The language new patients of the clinic get; ``None`` if there is no such clinic."""
    found = await pool.fetchval(
        "SELECT default_language FROM clinics WHERE clinic_id = $1", clinic_id
    )
    return None if found is None else normalise(found)


async def set_clinic_default_language(
    pool: asyncpg.Pool, clinic_id: str, language: Language
) -> bool:
    """Set the language new patients of the clinic get (patients enrolled already keep theirs);
    False if there is no such clinic."""
    status = await pool.execute(
        "UPDATE clinics SET default_language = $2, updated_at = now() WHERE clinic_id = $1",
        clinic_id,
        language,
    )
    return status.endswith(" 1")


# ---------------------------------------------------------------- journeys (read model)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def list_journeys(
    pool: asyncpg.Pool,
    *,
    stage: str | None = None,
    clinic_id: str | None = None,
    flag: str | None = None,
    next_action_before: datetime | None = None,
    name_query: str | None = None,
    order: JourneyOrder = "next_action_at",
    limit: int = 50,
    offset: int = 0,
    with_total: bool = True,
    clinics: Sequence[str] | None = None,
) -> tuple[list[JourneyRow], int]:
    """One page of journeys matching every given filter, and the total number matching.

    Args:
        stage: Only journeys in this stage.
        clinic_id: Only this clinic's journeys.
        flag: Only journeys carrying this flag.
        next_action_before: Only journeys whose next action is due before this time.
        name_query: Case-insensitive substring of the patient's name.
        order: ``next_action_at`` (soonest first), ``updated_at`` (latest first), ``stage``
            or ``patient_name``.
        limit: Page size (1–500).
        offset: Rows to skip.
        with_total: False skips the count (the total returned is then -1).
        clinics: Only these clinics' journeys (the caller's scope; None: every clinic).

    Raises:
        ValueError: an unknown ``order``, or ``limit``/``offset`` out of range.
    """
    if order not in _ORDER_BY:
        raise ValueError(f"order must be one of {', '.join(_ORDER_BY)}")
    if not 1 <= limit <= 500 or offset < 0:
        raise ValueError("limit must be 1–500 and offset at least 0")
    conditions: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if stage is not None:
        conditions.append(f"j.stage = {arg(stage)}")
    if clinic_id is not None:
        conditions.append(f"j.clinic_id = {arg(clinic_id)}")
    if clinics is not None:
        conditions.append(f"j.clinic_id = ANY({arg(list(clinics))}::text[])")
    if flag is not None:
        conditions.append(f"j.flags @> ARRAY[{arg(flag)}::text]")
    if next_action_before is not None:
        conditions.append(f"j.next_action_at < {arg(next_action_before)}")
    if name_query:
        conditions.append(f"p.full_name ILIKE {arg('%' + _escape_like(name_query) + '%')}")
    where = ("WHERE " + " AND ".join(conditions)) if conditions else ""
    base = f"FROM journeys j LEFT JOIN patients p ON p.patient_id = j.patient_id {where}"
    async with pool.acquire() as conn:
        total = await conn.fetchval(f"SELECT count(*) {base}", *args) if with_total else -1
        rows = await conn.fetch(
            f"SELECT j.*, p.full_name AS patient_name {base} "
            f"ORDER BY {_ORDER_BY[order]} LIMIT {arg(limit)} OFFSET {arg(offset)}",
            *args,
        )
    return [JourneyRow.model_validate(dict(r)) for r in rows], int(total)


async def get_journey(pool: asyncpg.Pool, patient_id: str) -> JourneyRow | None:
    """The read-model row of the patient's journey, or ``None``."""
    row = await pool.fetchrow(
        """
        SELECT j.*, p.full_name AS patient_name
        FROM journeys j LEFT JOIN patients p ON p.patient_id = j.patient_id
        WHERE j.patient_id = $1
        """,
        patient_id,
    )
    return None if row is None else JourneyRow.model_validate(dict(row))


async def get_timeline(pool: asyncpg.Pool, workflow_id: str, limit: int = 500) -> list[EventRow]:
    """The journey's events in the order they happened (then in the order recorded)."""
    rows = await pool.fetch(
        """
        SELECT * FROM journey_events WHERE workflow_id = $1
        ORDER BY occurred_at, step, id LIMIT $2
        """,
        workflow_id,
        limit,
    )
    return [EventRow.model_validate(dict(r)) for r in rows]


async def list_appointments(pool: asyncpg.Pool, workflow_id: str) -> list[AppointmentRow]:
    """The journey's appointments, by course and session."""
    rows = await pool.fetch(
        """
        SELECT * FROM appointments WHERE workflow_id = $1
        ORDER BY course_number, session_number
        """,
        workflow_id,
    )
    return [AppointmentRow.model_validate(dict(r)) for r in rows]


async def list_notifications(pool: asyncpg.Pool, workflow_id: str) -> list[NotificationRow]:
    """The journey's outbox rows, oldest first."""
    rows = await pool.fetch(
        "SELECT * FROM notification_outbox WHERE workflow_id = $1 ORDER BY id", workflow_id
    )
    return [NotificationRow.model_validate(dict(r)) for r in rows]


async def count_by_stage(pool: asyncpg.Pool, clinic_id: str | None = None) -> dict[str, int]:
    """Number of journeys per stage (stages with none are absent)."""
    rows = await pool.fetch(
        """
        SELECT stage, count(*) AS n FROM journeys
        WHERE $1::text IS NULL OR clinic_id = $1
        GROUP BY stage ORDER BY stage
        """,
        clinic_id,
    )
    return {r["stage"]: int(r["n"]) for r in rows}


# ---------------------------------------------------------------- staff users


def hash_token(token: str) -> str:
    """The stored form of a staff token (sha256, hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


async def create_staff_user(pool: asyncpg.Pool, name: str, role: StaffRole) -> tuple[StaffRow, str]:
    """Create a staff user; returns the row and its bearer token.

    The token is shown once: only its sha256 is stored, so it cannot be recovered later.
    """
    token = secrets.token_urlsafe(32)
    row = await pool.fetchrow(
        """
        INSERT INTO staff_users (name, role, token_hash) VALUES ($1, $2, $3)
        RETURNING id, name, role, created_at, disabled_at
        """,
        name,
        role,
        hash_token(token),
    )
    assert row is not None
    return StaffRow.model_validate(dict(row)), token


async def get_staff_by_token(pool: asyncpg.Pool, token: str) -> StaffRow | None:
    """The enabled staff user holding ``token``, or ``None``."""
    row = await pool.fetchrow(
        """
        SELECT id, name, role, created_at, disabled_at FROM staff_users
        WHERE token_hash = $1 AND disabled_at IS NULL
        """,
        hash_token(token),
    )
    return None if row is None else StaffRow.model_validate(dict(row))


async def disable_staff_user(pool: asyncpg.Pool, staff_id: int) -> bool:
    """Disable a staff user (their token stops working); False if no such enabled user."""
    status = await pool.execute(
        "UPDATE staff_users SET disabled_at = now() WHERE id = $1 AND disabled_at IS NULL",
        staff_id,
    )
    return bool(status.endswith(" 1"))


# ---------------------------------------------------------------- API idempotency keys


async def get_idempotent_response(
    pool: asyncpg.Pool, scope: str, key: str
) -> IdempotentResponse | None:
    """The response recorded for ``(scope, key)``, or ``None`` if the key is new."""
    row = await pool.fetchrow(
        "SELECT * FROM idempotency_keys WHERE scope = $1 AND key = $2", scope, key
    )
    return None if row is None else IdempotentResponse.model_validate(dict(row))


async def save_idempotent_response(
    pool: asyncpg.Pool,
    scope: str,
    key: str,
    request_hash: str,
    status_code: int,
    response: Any,
) -> IdempotentResponse:
    """Record the response of ``(scope, key)``; the first writer wins.

    Returns the stored response: the caller's, or an earlier one if the key was already used
    (compare ``request_hash`` to tell a repeat from a key reused for a different request).
    """
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            """
            INSERT INTO idempotency_keys (scope, key, request_hash, status_code, response)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (scope, key) DO NOTHING
            RETURNING *
            """,
            scope,
            key,
            request_hash,
            status_code,
            response,
        )
        if row is None:
            row = await conn.fetchrow(
                "SELECT * FROM idempotency_keys WHERE scope = $1 AND key = $2", scope, key
            )
    assert row is not None
    return IdempotentResponse.model_validate(dict(row))


@dataclass(frozen=True)
class OverviewCounts:
    """The overview's counts, from one scan of the read model."""

    stages: dict[str, int]
    flags: dict[str, int]
    journeys: int
    versions: int  # sum of every journey's version: changes whenever a journey writes
    last_update: datetime | None


async def overview_counts(
    pool: asyncpg.Pool, clinics: Sequence[str] | None = None
) -> OverviewCounts:
    """Journeys per stage and per flag, and what the live version is made of, in one
    statement (one scan: the combinations of stage and flags are few, sums are made here);
    ``clinics``: only these clinics' journeys (None: every clinic)."""
    rows = await pool.fetch(
        "SELECT stage, flags, count(*) AS n, sum(version) AS v, max(updated_at) AS u"
        " FROM journeys WHERE ($1::text[] IS NULL OR clinic_id = ANY($1))"
        " GROUP BY stage, flags",
        None if clinics is None else list(clinics),
    )
    stages: dict[str, int] = {}
    flags: dict[str, int] = {}
    for r in rows:
        n = int(r["n"])
        stages[r["stage"]] = stages.get(r["stage"], 0) + n
        for flag in set(r["flags"] or ()):
            flags[flag] = flags.get(flag, 0) + n
    updates = [r["u"] for r in rows if r["u"] is not None]
    return OverviewCounts(
        stages=stages,
        flags=flags,
        journeys=sum(stages.values()),
        versions=sum(int(r["v"] or 0) for r in rows),
        last_update=max(updates) if updates else None,
    )


async def journeys_by_flag(
    pool: asyncpg.Pool, counts: dict[str, int], limit: int, clinics: Sequence[str] | None = None
) -> dict[str, list[JourneyRow]]:
    """The first ``limit`` journeys (soonest next action first) carrying each flag of
    ``counts`` (flag → how many journeys carry it), in one statement.

    A common flag walks the next-action index until it has ``limit`` rows; a rare one is
    looked up in the flags index and sorted (walking the next-action index for a flag few
    journeys carry would read most of the table). A flag nobody carries costs nothing.
    """
    total = max(sum(counts.values()), 1)
    common = [f for f, n in counts.items() if n * 100 >= total]
    rare = [f for f, n in counts.items() if 0 < n * 100 < total]
    order = _ORDER_BY["next_action_at"]
    rows = await pool.fetch(
        f"""
        SELECT f.flag AS by_flag, j.*, p.full_name AS patient_name
        FROM unnest($1::text[]) AS f(flag)
        CROSS JOIN LATERAL (
            SELECT j.* FROM journeys j WHERE j.flags @> ARRAY[f.flag]
              AND ($4::text[] IS NULL OR j.clinic_id = ANY($4))
            ORDER BY {order} LIMIT $3
        ) AS j
        LEFT JOIN patients p ON p.patient_id = j.patient_id
        UNION ALL
        SELECT f.flag, j.*, p.full_name
        FROM unnest($2::text[]) AS f(flag)
        CROSS JOIN LATERAL (
            -- OFFSET 0 keeps the flags index: no ordered walk of the next-action index.
            SELECT * FROM (
                SELECT j.* FROM journeys j WHERE j.flags @> ARRAY[f.flag]
                  AND ($4::text[] IS NULL OR j.clinic_id = ANY($4)) OFFSET 0
            ) j
            ORDER BY {order} LIMIT $3
        ) AS j
        LEFT JOIN patients p ON p.patient_id = j.patient_id
        ORDER BY by_flag, next_action_at ASC NULLS LAST, workflow_id
        """,
        common,
        rare,
        limit,
        None if clinics is None else list(clinics),
    )
    out: dict[str, list[JourneyRow]] = {flag: [] for flag in counts}
    for r in rows:
        record = dict(r)
        out[record.pop("by_flag")].append(JourneyRow.model_validate(record))
    return out


async def journeys_due_soon(
    pool: asyncpg.Pool, before: datetime, limit: int, clinics: Sequence[str] | None = None
) -> list[JourneyRow]:
    """Journeys in ``session_due``, and ``scheduled`` ones whose next action comes before
    ``before`` (soonest first, at most ``limit``): the candidates for today's sessions."""
    rows = await pool.fetch(
        f"""
        SELECT j.*, p.full_name AS patient_name
        FROM journeys j LEFT JOIN patients p ON p.patient_id = j.patient_id
        WHERE (j.stage = 'session_due' OR (j.stage = 'scheduled' AND j.next_action_at < $1))
          AND ($3::text[] IS NULL OR j.clinic_id = ANY($3))
        ORDER BY {_ORDER_BY["next_action_at"]} LIMIT $2
        """,
        before,
        limit,
        None if clinics is None else list(clinics),
    )
    return [JourneyRow.model_validate(dict(r)) for r in rows]
