"""Where a message goes when its channel fails for good, and what the provider says became of a
sent message (issue 18, docs/messaging.md).

* :func:`fallback_for`: a patient message that failed permanently on its channel is written
  again for the patient's other channel (key ``<key>~via-sms`` or ``<key>~via-email``) when
  the patient has a contact for it; a message that failed on both, or that has no other
  contact, becomes a staff alert (``<key>~undeliverable``, alert ``undeliverable``). Never a
  silent loss. The new row is an ordinary outbox row (exactly-once by its own provider key), and
  the dispatcher writes it in the statement that marks the failure (activities/dispatcher.py).
* :func:`record_delivery_status`: a provider's status callback moves ``delivery_status``
  forward only (queued → sent → delivered, or failed with the reason); a ``failed`` writes the
  same fallback in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from activities.channels import DeliveryStatus

FALLBACK_MARK = "~via-"
UNDELIVERABLE_MARK = "~undeliverable"
_RANK: dict[str | None, int] = {None: 0, "queued": 1, "sent": 2, "delivered": 3, "failed": 3}


@dataclass(frozen=True)
class Fallback:
    """An outbox row to write for a message that could not be delivered."""

    notification_key: str
    kind: str
    audience: str
    channel: str
    params: dict[str, str]


def fallback_for(
    *,
    notification_key: str,
    kind: str,
    audience: str,
    channel: str,
    params: dict[str, str],
    email: str | None,
    phone: str | None,
) -> Fallback | None:
    """The row that takes over a permanently failed message, or None for a staff alert (staff
    alerts have nowhere else to go: their failure is logged as an error by the dispatcher)."""
    if audience != "patient":
        return None
    other = "sms" if channel == "email" else "email"
    contact = phone if other == "sms" else email
    if FALLBACK_MARK not in notification_key and contact:
        return Fallback(f"{notification_key}{FALLBACK_MARK}{other}", kind, audience, other, params)
    original = notification_key.split(FALLBACK_MARK, 1)[0]
    return Fallback(
        f"{original}{UNDELIVERABLE_MARK}",
        "staff_alert",
        "staff",
        "staff",
        {"alert": "undeliverable", "message_kind": kind, "session": params.get("session", "?")},
    )


_INSERT_FALLBACK = """
INSERT INTO notification_outbox
    (workflow_id, notification_key, patient_id, kind, audience, channel, params, provider_key)
VALUES ($1, $2, $3, $4, $5, $6, $7, $1 || ':' || $2)
ON CONFLICT (workflow_id, notification_key) DO NOTHING
"""


async def record_delivery_status(
    pool: asyncpg.Pool, provider_message_id: str, status: DeliveryStatus, error: str | None
) -> bool | None:
    """Apply a provider's status callback to the outbox row it names.

    Returns None for an unknown message id, False for a status that is not newer than the one
    recorded (a late or repeated callback), True when applied.
    """
    async with pool.acquire() as conn, conn.transaction():
        row: Any = await conn.fetchrow(
            """
            SELECT o.id, o.workflow_id, o.notification_key, o.patient_id, o.kind, o.audience,
                   o.channel, o.params, o.delivery_status, p.email, p.phone
            FROM notification_outbox o LEFT JOIN patients p ON p.patient_id = o.patient_id
            WHERE o.provider_message_id = $1
            FOR UPDATE OF o
            """,
            provider_message_id,
        )
        if row is None:
            return None
        if _RANK[status] <= _RANK[row["delivery_status"]]:
            return False
        await conn.execute(
            """
            UPDATE notification_outbox
            SET delivery_status = $2, delivery_error = $3, delivery_updated_at = now()
            WHERE id = $1
            """,
            row["id"],
            status,
            (error or "")[:1000] or None if status == "failed" else None,
        )
        if status == "failed":
            fallback = fallback_for(
                notification_key=row["notification_key"],
                kind=row["kind"],
                audience=row["audience"],
                channel=row["channel"],
                params=dict(row["params"]),
                email=row["email"],
                phone=row["phone"],
            )
            if fallback is not None:
                await conn.execute(
                    _INSERT_FALLBACK,
                    row["workflow_id"],
                    fallback.notification_key,
                    row["patient_id"],
                    fallback.kind,
                    fallback.audience,
                    fallback.channel,
                    fallback.params,
                )
        return True
