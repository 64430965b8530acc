"""Patients' replies, on the PostgreSQL side (issue 18 items 2 and 3, docs/messaging.md).

:func:`store_reply` keeps a reply once per provider message id (``patient_replies``), matches it
to the patient by phone number or e-mail address and to the message it answers (the latest
patient message with a session that was sent to them), and reads its kind from the words
(:func:`classify`). STOP and START are applied here, at once and whatever the journey's state,
in the same transaction: the patient's consent for that channel (``contact_optouts``) and the
confirmation message in the outbox. The journey then receives the reply as a fact (the
``report_reply`` update: id, kind and session only) and :func:`record_outcome` notes what it
made of it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any, Literal

import asyncpg

from workflows.replies import ReplyKind

Channel = Literal["email", "sms"]

# Whole-message keywords (case, accents in ÄÉÍ and surrounding punctuation ignored).
KEYWORDS: dict[ReplyKind, frozenset[str]] = {
    "confirm": frozenset(
        {
            # en
            "YES", "Y", "C", "CONFIRM", "CONFIRMED",
            # de
            "JA", "BESTATIGEN", "BESTAETIGEN", "BESTATIGT",
            # fr
            "OUI", "CONFIRMER", "CONFIRME",
            # es
            "SI", "CONFIRMAR", "CONFIRMO",
        }
    ),
    "reschedule": frozenset(
        {
            # en
            "R", "RESCHEDULE", "CHANGE", "MOVE",
            # de
            "VERSCHIEBEN", "ANDERN", "AENDERN",
            # fr
            "CHANGER", "REPORTER", "DEPLACER",
            # es
            "CAMBIAR", "REPROGRAMAR",
        }
    ),
    # The carriers' standard opt-out words (Twilio: STOP, STOPALL, UNSUBSCRIBE, CANCEL, END,
    # QUIT, OPTOUT, REVOKE) and localised ones.
    "stop": frozenset(
        {
            "STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE",
            "STOPP", "ABMELDEN",  # de
            "ARRET", "DESABONNER", "DESINSCRIRE",  # fr
            "BAJA", "PARAR", "DETENER",  # es
        }
    ),
    "start": frozenset({"START", "UNSTOP", "ANMELDEN", "DEMARRER", "ALTA"}),
}  # fmt: skip

_QUOTE_HEADER = re.compile(r"^(On .+ wrote:|Am .+ schrieb .+:|Le .+ a écrit ?:|El .+ escribió:)$")


def normalise(text: str) -> str:
    """Upper case, accents stripped (SÍ → SI, ARRÊT → ARRET, BESTÄTIGEN → BESTATIGEN),
    punctuation around and between words dropped, spaces collapsed."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    words = re.findall(r"[a-z0-9]+", plain.replace("ß", "ss"))
    return " ".join(words).upper()


def reply_text(body: str, channel: Channel) -> str:
    """The patient's own words: an e-mail's first lines above the quoted message."""
    if channel == "sms":
        return body.strip()
    kept: list[str] = []
    for line in body.replace("\r\n", "\n").split("\n"):
        stripped = line.strip()
        if stripped.startswith(">") or _QUOTE_HEADER.match(stripped) or stripped == "--":
            break
        kept.append(line)
    return "\n".join(kept).strip()


def classify(body: str, channel: Channel) -> ReplyKind:
    """What a reply asks for: the whole message is one keyword (``"Yes!"``, ``"  stop "``,
    ``"Sí"``), or it is ``other`` (a person reads it)."""
    words = normalise(reply_text(body, channel))
    for kind, keywords in KEYWORDS.items():
        if words in keywords or words.replace(" ", "") in keywords:
            return kind
    return "other"


def normalise_phone(phone: str) -> str:
    """``+49 30 1234-567`` → ``+49301234567`` (how the provider sends numbers: E.164)."""
    return re.sub(r"[^\d+]", "", phone)


@dataclass(frozen=True)
class StoredReply:
    """A reply as kept in ``patient_replies``; ``new`` is False for a repeat of a message id."""

    id: int
    new: bool
    kind: ReplyKind
    channel: Channel
    patient_id: str | None
    workflow_id: str | None
    clinic_id: str | None
    session_number: int | None
    outcome: str | None


_FIND_PATIENT = {
    "sms": """
        SELECT p.patient_id, p.clinic_id, j.workflow_id FROM patients p
        LEFT JOIN journeys j ON j.patient_id = p.patient_id
        WHERE regexp_replace(p.phone, '[^0-9+]', '', 'g') = $1
        ORDER BY (j.stage IN ('withdrawn', 'excluded', 'completed')) NULLS LAST,
                 p.created_at DESC
        LIMIT 1
    """,
    "email": """
        SELECT p.patient_id, p.clinic_id, j.workflow_id FROM patients p
        LEFT JOIN journeys j ON j.patient_id = p.patient_id
        WHERE lower(p.email) = lower($1)
        ORDER BY (j.stage IN ('withdrawn', 'excluded', 'completed')) NULLS LAST,
                 p.created_at DESC
        LIMIT 1
    """,
}

_ANSWERED = """
SELECT id, (params->>'session')::int AS session FROM notification_outbox
WHERE patient_id = $1 AND audience = 'patient' AND status = 'sent'
  AND params->>'session' ~ '^[0-9]{1,3}$'
ORDER BY sent_at DESC NULLS LAST, id DESC
LIMIT 1
"""

_OPT = """
INSERT INTO contact_optouts AS o
    (patient_id, channel, clinic_id, opted_out_at, opted_in_at, how, reply_id)
VALUES ($1, $2, $3, CASE WHEN $4 THEN now() END, CASE WHEN $4 THEN NULL ELSE now() END, $5, $6)
ON CONFLICT (patient_id, channel) DO UPDATE SET
    opted_out_at = EXCLUDED.opted_out_at, opted_in_at = EXCLUDED.opted_in_at,
    how = EXCLUDED.how, reply_id = EXCLUDED.reply_id, updated_at = now()
"""

_CONFIRMATION = """
INSERT INTO notification_outbox
    (workflow_id, notification_key, patient_id, kind, audience, channel, params, provider_key)
VALUES ($1, $2, $3, $4, 'patient', $5, $6::jsonb, $1 || ':' || $2)
ON CONFLICT (workflow_id, notification_key) DO NOTHING
"""


async def store_reply(
    pool: asyncpg.Pool,
    *,
    provider_message_id: str,
    channel: Channel,
    sender: str,
    body: str,
) -> StoredReply:
    """Keep a reply (once per ``provider_message_id``), match it, and apply STOP/START at once.

    A repeat of a message id returns the stored reply (``new=False``) and changes nothing.
    """
    kind = classify(body, channel)
    # "Ada Lovelace <ada@example.com>" → the address.
    address = (
        normalise_phone(sender) if channel == "sms" else parseaddr(sender)[1] or sender.strip()
    )
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", provider_message_id)
        row: Any = await conn.fetchrow(
            "SELECT * FROM patient_replies WHERE provider_message_id = $1", provider_message_id
        )
        if row is not None:
            return _stored(row, new=False)
        patient: Any = await conn.fetchrow(_FIND_PATIENT[channel], address)
        answered: Any = None
        if patient is not None:
            answered = await conn.fetchrow(_ANSWERED, patient["patient_id"])
        patient_id = patient["patient_id"] if patient is not None else None
        workflow_id = None
        if patient is not None:
            workflow_id = patient["workflow_id"] or f"journey-{patient_id}"
        row = await conn.fetchrow(
            """
            INSERT INTO patient_replies
                (provider_message_id, channel, patient_id, workflow_id, clinic_id, sender, body,
                 kind, session_number, answers_outbox_id, outcome, handled_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                    CASE WHEN $11::text IS NULL THEN NULL ELSE now() END)
            RETURNING *
            """,
            provider_message_id,
            channel,
            patient_id,
            workflow_id,
            patient["clinic_id"] if patient is not None else None,
            address[:320],
            body[:5000],
            kind,
            answered["session"] if answered is not None else None,
            answered["id"] if answered is not None else None,
            None if patient is not None else "unmatched",
        )
        if patient is not None and kind in ("stop", "start"):
            opting_out = kind == "stop"
            await conn.execute(
                _OPT,
                patient_id,
                channel,
                patient["clinic_id"],
                opting_out,
                f"{channel} reply {normalise(reply_text(body, channel))[:40]}",
                row["id"],
            )
            await conn.execute(
                _CONFIRMATION,
                workflow_id,
                f"reply-{row['id']}:{kind}",
                patient_id,
                "contact_opt_out" if opting_out else "contact_opt_in",
                channel,
                {"channel": channel},
            )
        return _stored(row, new=True)


def _stored(row: Any, *, new: bool) -> StoredReply:
    return StoredReply(
        id=row["id"],
        new=new,
        kind=row["kind"],
        channel=row["channel"],
        patient_id=row["patient_id"],
        workflow_id=row["workflow_id"],
        clinic_id=row["clinic_id"],
        session_number=row["session_number"],
        outcome=row["outcome"],
    )


async def record_outcome(pool: asyncpg.Pool, reply_id: int, outcome: str, detail: str) -> None:
    """What the journey made of the reply (``applied``, ``staff_task``, ``journey_closed``);
    the first recorded outcome stands (a racing retry does not overwrite it)."""
    await pool.execute(
        """
        UPDATE patient_replies SET outcome = $2, outcome_detail = $3, handled_at = now()
        WHERE id = $1 AND outcome IS NULL
        """,
        reply_id,
        outcome,
        detail[:1000],
    )


async def mark_answered(pool: asyncpg.Pool, patient_id: str, reply_id: int, by: str) -> bool:
    """A reply that was a staff task has been answered (the journey closed the task)."""
    status = await pool.execute(
        """
        UPDATE patient_replies SET outcome = 'answered', outcome_detail = $3, handled_at = now()
        WHERE id = $1 AND patient_id = $2 AND outcome = 'staff_task'
        """,
        reply_id,
        patient_id,
        f"answered by {by}"[:1000],
    )
    return bool(status.endswith(" 1"))


# ---------------------------------------------------------------- dashboard reads


@dataclass(frozen=True)
class MessageRow:
    """One outbox row of a journey, as the journey page shows it."""

    id: int
    notification_key: str
    kind: str
    audience: str
    channel: str
    status: str
    delivery_status: str | None
    last_error: str | None
    delivery_error: str | None
    created_at: Any
    sent_at: Any
    next_attempt_at: Any


@dataclass(frozen=True)
class ReplyRow:
    """One reply, as the dashboard shows it (the text included: staff only)."""

    id: int
    channel: str
    patient_id: str | None
    body: str
    kind: str
    session_number: int | None
    received_at: Any
    outcome: str | None
    outcome_detail: str | None


async def journey_messages(
    pool: asyncpg.Pool, workflow_id: str, limit: int = 200
) -> list[MessageRow]:
    """A journey's messages, newest first."""
    rows = await pool.fetch(
        """
        SELECT id, notification_key, kind, audience, channel, status, delivery_status,
               last_error, delivery_error, created_at, sent_at, next_attempt_at
        FROM notification_outbox WHERE workflow_id = $1 ORDER BY id DESC LIMIT $2
        """,
        workflow_id,
        limit,
    )
    return [MessageRow(**dict(r)) for r in rows]


async def journey_replies(pool: asyncpg.Pool, workflow_id: str, limit: int = 200) -> list[ReplyRow]:
    """A journey's replies, newest first."""
    rows = await pool.fetch(
        """
        SELECT id, channel, patient_id, body, kind, session_number, received_at, outcome,
               outcome_detail
        FROM patient_replies WHERE workflow_id = $1 ORDER BY id DESC LIMIT $2
        """,
        workflow_id,
        limit,
    )
    return [ReplyRow(**dict(r)) for r in rows]


@dataclass(frozen=True)
class FailedRow:
    """A message that failed for good (or was held back by an opt-out) in a clinic."""

    patient_id: str
    kind: str
    channel: str
    status: str
    reason: str | None
    at: Any


@dataclass(frozen=True)
class OptOutRow:
    """A patient's consent to be contacted on one channel."""

    patient_id: str
    channel: str
    opted_out_at: Any
    opted_in_at: Any
    how: str


async def clinic_failed_deliveries(
    pool: asyncpg.Pool, clinic_id: str, limit: int = 200
) -> list[FailedRow]:
    """The clinic's messages that failed for good or were not sent for an opt-out."""
    rows = await pool.fetch(
        """
        SELECT o.patient_id, o.kind, o.channel, o.status,
               coalesce(o.delivery_error, o.last_error) AS reason,
               coalesce(o.delivery_updated_at, o.cancelled_at, o.next_attempt_at) AS at
        FROM notification_outbox o JOIN journeys j ON j.workflow_id = o.workflow_id
        WHERE j.clinic_id = $1
          AND (o.status = 'failed' OR o.delivery_status = 'failed'
               OR (o.status = 'cancelled' AND o.last_error LIKE 'opted out%'))
        ORDER BY at DESC LIMIT $2
        """,
        clinic_id,
        limit,
    )
    return [FailedRow(**dict(r)) for r in rows]


async def clinic_optouts(pool: asyncpg.Pool, clinic_id: str, limit: int = 500) -> list[OptOutRow]:
    """The clinic's patients' opt-outs (and opt-ins back), latest change first."""
    rows = await pool.fetch(
        """
        SELECT patient_id, channel, opted_out_at, opted_in_at, how FROM contact_optouts
        WHERE clinic_id = $1 ORDER BY updated_at DESC LIMIT $2
        """,
        clinic_id,
        limit,
    )
    return [OptOutRow(**dict(r)) for r in rows]


async def clinic_open_replies(
    pool: asyncpg.Pool, clinic_id: str, limit: int = 200
) -> list[ReplyRow]:
    """Replies that need a person: ``other`` ones, and any the journey could not take."""
    rows = await pool.fetch(
        """
        SELECT id, channel, patient_id, body, kind, session_number, received_at, outcome,
               outcome_detail
        FROM patient_replies
        WHERE clinic_id = $1
          AND (outcome IS NULL OR outcome NOT IN ('applied', 'duplicate', 'answered'))
        ORDER BY id DESC LIMIT $2
        """,
        clinic_id,
        limit,
    )
    return [ReplyRow(**dict(r)) for r in rows]
