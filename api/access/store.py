"""Staff access in PostgreSQL (migration 0016): who a credential is (:class:`Principal`), API
tokens, staff members, members signed in through OpenID Connect, and the access log.

Every lookup joins ``staff_users`` and requires ``disabled_at IS NULL``, so disabling a member
stops their sessions and tokens on the very next request.
"""

from __future__ import annotations

import csv
import hashlib
import io
import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Literal

import asyncpg
from pydantic import BaseModel, ConfigDict

from activities.repository import StaffRow
from api.access.permissions import ROLES, Permission, Role, permissions_of

__all__ = [
    "AccessEntry",
    "ApiToken",
    "Principal",
    "ScopeError",
    "StaffMember",
    "access_csv",
    "clinic_of_patient",
    "create_api_token",
    "disable_staff",
    "list_access",
    "list_api_tokens",
    "list_staff",
    "log_access",
    "principal_for_bearer",
    "principal_for_staff",
    "revoke_api_token",
    "rotate_staff_token",
    "upsert_oidc_member",
]

Via = Literal["api_token", "staff_token", "session"]
_PRECEDENCE: tuple[Role, ...] = ("admin", "clinician", "manager", "reception")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _role(name: str) -> Role:
    normal = "reception" if name == "staff" else name
    for role in ROLES:
        if role == normal:
            return role
    raise ValueError(f"unknown role {name!r}")


class ScopeError(ValueError):
    """A token asked for more than its owner may do or see."""


class Principal(BaseModel):
    """Who is asking: the member, the roles and clinics in force (None: every clinic)."""

    model_config = ConfigDict(frozen=True)

    staff: StaffRow
    roles: frozenset[Role]
    clinics: frozenset[str] | None
    via: Via
    token_id: int | None = None

    @property
    def permissions(self) -> frozenset[Permission]:
        return permissions_of(self.roles)

    def may(self, permission: Permission) -> bool:
        return permission in self.permissions

    def sees(self, clinic_id: str) -> bool:
        return self.clinics is None or clinic_id in self.clinics

    @property
    def clinic_list(self) -> list[str] | None:
        """For SQL (``clinic_id = ANY($n)``): None is every clinic."""
        return None if self.clinics is None else sorted(self.clinics)


def _clinics(values: Sequence[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(values)


def _intersect(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    if a is None:
        return b
    if b is None:
        return a
    return a & b


def _staff_row(record: asyncpg.Record, role: Role | None = None) -> StaffRow:
    return StaffRow(
        id=record["id"],
        name=record["name"],
        role=role or record["role"],
        created_at=record["created_at"],
        disabled_at=record["disabled_at"],
        clinics=record["clinics"],
    )


def principal_for_staff(staff: StaffRow, via: Via = "session") -> Principal:
    """The principal of a member acting as themself (a session or their own token)."""
    return Principal(
        staff=staff, roles=frozenset({_role(staff.role)}), clinics=_clinics(staff.clinics), via=via
    )


async def principal_for_bearer(
    pool: asyncpg.Pool, token: str, *, staff_tokens: bool
) -> Principal | None:
    """The principal of an API token (live, not expired, owner enabled), or of a member's own
    staff token when ``staff_tokens`` (the pasted-token path) is on; else None."""
    if not token or len(token) > 200:
        return None
    digest = _hash(token)
    row = await pool.fetchrow(
        """
        UPDATE api_tokens t SET last_used_at = now()
        FROM staff_users u
        WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND t.expires_at > now()
          AND u.id = t.staff_id AND u.disabled_at IS NULL
        RETURNING t.id AS token_id, t.roles, t.clinics AS token_clinics,
                  u.id, u.name, u.role, u.created_at, u.disabled_at, u.clinics
        """,
        digest,
    )
    if row is not None:
        owner = _role(row["role"])
        owner_may = permissions_of({owner})
        roles = frozenset(
            r for r in (_role(x) for x in row["roles"]) if permissions_of({r}) <= owner_may
        )
        # The member the routes see acts in the token's strongest role (a reception token of a
        # clinician may not set clinician-only answers).
        acting = owner if owner in roles else next((r for r in _PRECEDENCE if r in roles), None)
        if acting is None:
            return None
        return Principal(
            staff=_staff_row(row, acting),
            roles=roles,
            clinics=_intersect(_clinics(row["token_clinics"]), _clinics(row["clinics"])),
            via="api_token",
            token_id=row["token_id"],
        )
    if not staff_tokens:
        return None
    row = await pool.fetchrow(
        """
        SELECT id, name, role, created_at, disabled_at, clinics FROM staff_users
        WHERE token_hash = $1 AND disabled_at IS NULL
        """,
        digest,
    )
    return None if row is None else principal_for_staff(_staff_row(row), "staff_token")


async def clinic_of_patient(pool: asyncpg.Pool, patient_id: str) -> str | None:
    """The clinic of a patient (their record, else their journey's row), or None if unknown."""
    value = await pool.fetchval(
        """
        SELECT clinic_id FROM patients WHERE patient_id = $1
        UNION ALL SELECT clinic_id FROM journeys WHERE patient_id = $1
        LIMIT 1
        """,
        patient_id,
    )
    return None if value is None else str(value)


# ---------------------------------------------------------------- API tokens


class ApiToken(BaseModel):
    """A machine credential (the secret itself is never stored)."""

    id: int
    name: str
    staff_id: int
    roles: list[str]
    clinics: list[str] | None
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


async def create_api_token(
    pool: asyncpg.Pool,
    *,
    staff_id: int,
    name: str,
    roles: Sequence[str],
    clinics: Sequence[str] | None,
    valid_for: timedelta,
) -> tuple[ApiToken, str]:
    """A new token for an enabled member; returns it and its secret (shown once).

    Raises:
        LookupError: no enabled member ``staff_id``.
        ScopeError: a role or clinic the member does not have themself, or no role.
    """
    owner = await pool.fetchrow(
        "SELECT role, clinics FROM staff_users WHERE id = $1 AND disabled_at IS NULL", staff_id
    )
    if owner is None:
        raise LookupError(f"no enabled staff member {staff_id}")
    wanted = sorted({_role(r) for r in roles})
    if not wanted:
        raise ScopeError("a token needs at least one role")
    owner_may = permissions_of({_role(owner["role"])})
    for role in wanted:
        if not permissions_of({role}) <= owner_may:
            raise ScopeError(f"the member (role {owner['role']}) may not grant the role {role}")
    owner_clinics = _clinics(owner["clinics"])
    if clinics is not None and owner_clinics is not None:
        outside = set(clinics) - owner_clinics
        if outside:
            raise ScopeError(f"the member does not see the clinic(s) {', '.join(sorted(outside))}")
    if clinics is None and owner_clinics is not None:
        clinics = sorted(owner_clinics)
    secret = "pjt_" + secrets.token_urlsafe(32)
    row = await pool.fetchrow(
        """
        INSERT INTO api_tokens (name, staff_id, roles, clinics, token_hash, expires_at)
        VALUES ($1, $2, $3, $4, $5, now() + $6::interval)
        RETURNING id, name, staff_id, roles, clinics, created_at, expires_at, revoked_at,
                  last_used_at
        """,
        name,
        staff_id,
        wanted,
        None if clinics is None else sorted(set(clinics)),
        _hash(secret),
        valid_for,
    )
    assert row is not None
    return ApiToken.model_validate(dict(row)), secret


async def list_api_tokens(pool: asyncpg.Pool, staff_id: int | None = None) -> list[ApiToken]:
    rows = await pool.fetch(
        """
        SELECT id, name, staff_id, roles, clinics, created_at, expires_at, revoked_at,
               last_used_at
        FROM api_tokens WHERE $1::bigint IS NULL OR staff_id = $1 ORDER BY id
        """,
        staff_id,
    )
    return [ApiToken.model_validate(dict(r)) for r in rows]


async def revoke_api_token(pool: asyncpg.Pool, token_id: int) -> bool:
    """Revoke a live token at once; False if there is no such live token."""
    status = await pool.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", token_id
    )
    return status.endswith(" 1")


# ---------------------------------------------------------------- staff members


class StaffMember(BaseModel):
    """A member as ``journey staff list`` shows them."""

    id: int
    name: str
    role: str
    clinics: list[str] | None
    sign_in: Literal["token", "oidc"]
    created_at: datetime
    disabled_at: datetime | None
    live_sessions: int
    live_tokens: int


async def list_staff(pool: asyncpg.Pool) -> list[StaffMember]:
    rows = await pool.fetch(
        """
        SELECT u.id, u.name, u.role, u.clinics, u.created_at, u.disabled_at,
               CASE WHEN u.oidc_subject IS NULL THEN 'token' ELSE 'oidc' END AS sign_in,
               (SELECT count(*) FROM staff_sessions s WHERE s.staff_id = u.id
                  AND s.ended_at IS NULL AND s.expires_at > now()) AS live_sessions,
               (SELECT count(*) FROM api_tokens t WHERE t.staff_id = u.id
                  AND t.revoked_at IS NULL AND t.expires_at > now()) AS live_tokens
        FROM staff_users u ORDER BY u.id
        """
    )
    return [StaffMember.model_validate(dict(r)) for r in rows]


async def disable_staff(pool: asyncpg.Pool, staff_id: int) -> tuple[bool, int, int]:
    """Disable a member: their sessions end and their tokens are revoked, in one transaction.

    Returns:
        (whether an enabled member was disabled, sessions ended, tokens revoked).
    """
    async with pool.acquire() as conn, conn.transaction():
        status = await conn.execute(
            "UPDATE staff_users SET disabled_at = now() WHERE id = $1 AND disabled_at IS NULL",
            staff_id,
        )
        sessions = await conn.execute(
            "UPDATE staff_sessions SET ended_at = now() WHERE staff_id = $1 AND ended_at IS NULL",
            staff_id,
        )
        tokens = await conn.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE staff_id = $1 AND revoked_at IS NULL",
            staff_id,
        )
    return status.endswith(" 1"), int(sessions.split()[-1]), int(tokens.split()[-1])


async def rotate_staff_token(pool: asyncpg.Pool, staff_id: int) -> tuple[str, int] | None:
    """A new own token for an enabled member (the old one stops at once) and how many of their
    dashboard sessions were ended; None if there is no such enabled member."""
    secret = secrets.token_urlsafe(32)
    async with pool.acquire() as conn, conn.transaction():
        status = await conn.execute(
            """
            UPDATE staff_users SET token_hash = $2, rotated_at = now()
            WHERE id = $1 AND disabled_at IS NULL
            """,
            staff_id,
            _hash(secret),
        )
        if not status.endswith(" 1"):
            return None
        ended = await conn.execute(
            "UPDATE staff_sessions SET ended_at = now() WHERE staff_id = $1 AND ended_at IS NULL",
            staff_id,
        )
    return secret, int(ended.split()[-1])


async def upsert_oidc_member(
    pool: asyncpg.Pool,
    *,
    issuer: str,
    subject: str,
    name: str,
    role: Role,
    clinics: Sequence[str] | None,
) -> StaffRow | None:
    """The member of a provider identity, created on first sign-in; role and clinics follow
    the provider's groups at every sign-in. None if the member was disabled here."""
    row = await pool.fetchrow(
        """
        INSERT INTO staff_users AS u (name, role, clinics, token_hash, oidc_issuer, oidc_subject)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (oidc_issuer, oidc_subject) WHERE oidc_subject IS NOT NULL
        DO UPDATE SET name = EXCLUDED.name, role = EXCLUDED.role, clinics = EXCLUDED.clinics
        RETURNING id, name, role, created_at, disabled_at, clinics
        """,
        name[:200],
        role,
        None if clinics is None else list(clinics),
        # A member of the provider has no own token: a random hash nobody holds the secret of.
        "oidc:" + secrets.token_hex(32),
        issuer,
        subject,
    )
    assert row is not None
    return None if row["disabled_at"] is not None else _staff_row(row)


# ---------------------------------------------------------------- the access log


class AccessEntry(BaseModel):
    """One line of the access log: ids only."""

    id: int
    at: datetime
    staff_id: int | None
    token_id: int | None
    action: str
    permission: str
    route: str
    patient_id: str | None
    clinic_id: str | None
    client: str | None


AccessAction = Literal["view", "change", "export", "denied"]


async def log_access(
    pool: asyncpg.Pool,
    principal: Principal,
    *,
    action: AccessAction,
    permission: str,
    route: str,
    patient_id: str | None,
    clinic_id: str | None,
    client: str | None,
) -> None:
    await pool.execute(
        """
        INSERT INTO access_log (staff_id, token_id, action, permission, route, patient_id,
                                clinic_id, client)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        """,
        principal.staff.id,
        principal.token_id,
        action,
        permission,
        route[:200],
        patient_id,
        clinic_id,
        None if client is None else client[:100],
    )


async def list_access(
    pool: asyncpg.Pool,
    *,
    clinics: Sequence[str] | None,
    patient_id: str | None = None,
    staff_id: int | None = None,
    limit: int = 200,
    before_id: int | None = None,
) -> list[AccessEntry]:
    """The newest lines first, within ``clinics`` (None: every clinic; lines without a clinic,
    such as refused requests for an unknown patient, are an organisation admin's only)."""
    rows = await pool.fetch(
        """
        SELECT id, at, staff_id, token_id, action, permission, route, patient_id, clinic_id,
               client
        FROM access_log
        WHERE ($1::text[] IS NULL OR clinic_id = ANY($1))
          AND ($2::text IS NULL OR patient_id = $2)
          AND ($3::bigint IS NULL OR staff_id = $3)
          AND ($4::bigint IS NULL OR id < $4)
        ORDER BY id DESC LIMIT $5
        """,
        None if clinics is None else list(clinics),
        patient_id,
        staff_id,
        before_id,
        limit,
    )
    return [AccessEntry.model_validate(dict(r)) for r in rows]


CSV_COLUMNS = (
    "id",
    "at",
    "staff_id",
    "token_id",
    "action",
    "permission",
    "route",
    "patient_id",
    "clinic_id",
    "client",
)


def access_csv(entries: Iterable[AccessEntry]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for e in entries:
        values = e.model_dump(mode="json")
        writer.writerow(["" if values[c] is None else values[c] for c in CSV_COLUMNS])
    return out.getvalue()
