"""Server-side staff sessions for the dashboard (table ``staff_sessions``, migration 0003).

The session cookie holds a random id (256 bits); the table stores only its sha256, the staff
user and the session's CSRF token. The bearer token never leaves the login form: a stolen
cookie is one revocable session, not the staff member's credential. A session is valid while
it is not ended (logout), not expired, and its staff user is enabled, so disabling a user ends
every session at once.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

import asyncpg
from pydantic import BaseModel

from activities.repository import StaffRow

__all__ = [
    "StaffSession",
    "create_session",
    "end_session",
    "end_staff_sessions",
    "get_session",
    "session_via",
]


class StaffSession(BaseModel):
    """A live session: who, and the CSRF token its forms must carry."""

    staff: StaffRow
    csrf_token: str
    via: str = "token"  # how the member signed in: token or oidc (migration 0016)


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


async def create_session(
    pool: asyncpg.Pool, staff_id: int, max_age: timedelta, via: str = "token"
) -> tuple[str, StaffSession | None]:
    """Start a session for an enabled staff user.

    Returns:
        The session id (for the cookie; shown once, stored hashed) and the session, or
        ``("", None)`` if the user is disabled or unknown.
    """
    session_id = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    inserted = await pool.fetchval(
        """
        INSERT INTO staff_sessions (id_hash, staff_id, csrf_token, expires_at, via)
        SELECT $1, id, $3, now() + $4::interval, $5 FROM staff_users
        WHERE id = $2 AND disabled_at IS NULL
        RETURNING staff_id
        """,
        _hash(session_id),
        staff_id,
        csrf,
        max_age,
        via,
    )
    if inserted is None:
        return "", None
    session = await get_session(pool, session_id)
    return session_id, session


async def get_session(pool: asyncpg.Pool, session_id: str) -> StaffSession | None:
    """The live session of ``session_id``: not ended, not expired, its user enabled."""
    if not session_id or len(session_id) > 100:
        return None
    row = await pool.fetchrow(
        """
        SELECT u.id, u.name, u.role, u.created_at, u.disabled_at, u.clinics, s.csrf_token, s.via
        FROM staff_sessions s JOIN staff_users u ON u.id = s.staff_id
        WHERE s.id_hash = $1 AND s.ended_at IS NULL AND s.expires_at > now()
          AND u.disabled_at IS NULL
        """,
        _hash(session_id),
    )
    if row is None:
        return None
    values = dict(row)
    csrf = values.pop("csrf_token")
    via = values.pop("via")
    return StaffSession(staff=StaffRow.model_validate(values), csrf_token=csrf, via=via)


async def end_session(pool: asyncpg.Pool, session_id: str) -> None:
    """End one session (logout); ending it twice is a no-op."""
    await pool.execute(
        "UPDATE staff_sessions SET ended_at = now() WHERE id_hash = $1 AND ended_at IS NULL",
        _hash(session_id),
    )


async def end_staff_sessions(pool: asyncpg.Pool, staff_id: int) -> int:
    """End every session of a staff user (token revoked, user disabled); returns how many."""
    status = await pool.execute(
        "UPDATE staff_sessions SET ended_at = now() WHERE staff_id = $1 AND ended_at IS NULL",
        staff_id,
    )
    return int(status.split()[-1])


async def session_via(pool: asyncpg.Pool, session_id: str) -> str | None:
    """How a live session signed in (``token`` or ``oidc``), or None."""
    if not session_id or len(session_id) > 100:
        return None
    value = await pool.fetchval(
        "SELECT via FROM staff_sessions WHERE id_hash = $1 AND ended_at IS NULL",
        _hash(session_id),
    )
    return None if value is None else str(value)
