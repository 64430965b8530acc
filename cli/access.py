"""``journey staff …`` and ``journey token …``: staff members and API tokens (issue 16).

* ``staff add NAME --role R [--clinic C …]``: a member with their own token (printed once;
  the development and break-glass path, docs/security.md). Roles: reception (``staff`` is its
  old name), clinician, manager, admin; no ``--clinic`` is every clinic.
* ``staff list``: members, role, clinics, how they sign in, live sessions and tokens.
* ``staff disable ID``: at once, every session ends and every token of theirs is revoked.
* ``staff rotate ID``: a new own token (printed once); the old one and their sessions stop.
* ``token create --staff ID --name N --role R [--clinic C …] [--days D]``: an API token for
  a script or machine, scoped to roles and clinics the member has, expiring (default 90 days,
  at most 366), printed once, stored as its sha256.
* ``token list [--staff ID]``, ``token revoke ID``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from cli.codes import BAD_INPUT, NOT_FOUND
from cli.journeys import JsonOpt, _emit, _fail, _run

if TYPE_CHECKING:
    from rich.table import Table

    from activities.repository import StaffRole
    from api.service import JourneyService

__all__ = ["register"]

ROLE_NAMES = ("reception", "staff", "clinician", "manager", "admin")
ClinicOpt = Annotated[
    list[str] | None,
    typer.Option("--clinic", help="A clinic id the member or token sees (repeat; none: all)."),
]


def _check_clinics(clinics: list[str] | None) -> list[str] | None:
    if not clinics:
        return None
    from workflows.bounds import check_text

    for c in clinics:
        try:
            check_text(c)
        except ValueError:
            _fail(f"--clinic {c!r} is not a clinic id", BAD_INPUT)
        if not 1 <= len(c) <= 64:
            _fail(f"--clinic {c!r} is not a clinic id", BAD_INPUT)
    return sorted(set(clinics))


def register(app: typer.Typer) -> None:
    """Add the ``staff`` and ``token`` command groups."""
    staff = typer.Typer(help="Back-office members.", no_args_is_help=True)
    token = typer.Typer(help="API tokens for scripts and machines.", no_args_is_help=True)

    @staff.command("add")
    def staff_add(
        name: str,
        role: Annotated[
            str, typer.Option(help="reception (or its old name staff), clinician, manager, admin.")
        ] = "reception",
        clinic: ClinicOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Create a member and print their own token once (only its hash is stored)."""
        if role not in ROLE_NAMES:
            _fail(f"--role {role!r} must be one of {', '.join(ROLE_NAMES)}", BAD_INPUT)
        clinics = _check_clinics(clinic)

        async def add(service: JourneyService) -> tuple[Any, str]:
            from activities.repository import create_staff_user

            staff_role = cast("StaffRole", role)  # checked above
            row, secret = await service.db(create_staff_user(service.pool, name, staff_role))
            if clinics is not None:
                await service.db(
                    service.pool.execute(
                        "UPDATE staff_users SET clinics = $2 WHERE id = $1", row.id, clinics
                    )
                )
            return row, secret

        row, secret = _run(add)
        data = {
            "id": row.id,
            "name": row.name,
            "role": row.role,
            "clinics": clinics,
            "token": secret,
        }
        _emit(
            data,
            as_json,
            lambda: f"Staff user {row.id} ({row.role}). Token, shown once:\n{secret}",
        )

    @staff.command("list")
    def staff_list(as_json: JsonOpt = False) -> None:
        """Every member: role, clinics, sign-in, live sessions and tokens."""
        from api.access.store import list_staff

        members = _run(lambda s: s.db(list_staff(s.pool)))
        data = [m.model_dump(mode="json") for m in members]

        def table() -> Table:
            from rich.table import Table

            t = Table("id", "name", "role", "clinics", "sign-in", "sessions", "tokens", "disabled")
            for m in members:
                t.add_row(
                    str(m.id),
                    m.name,
                    m.role,
                    "all" if m.clinics is None else ", ".join(m.clinics),
                    m.sign_in,
                    str(m.live_sessions),
                    str(m.live_tokens),
                    m.disabled_at.isoformat() if m.disabled_at else "",
                )
            return t

        _emit(data, as_json, table)

    @staff.command("disable")
    def staff_disable(staff_id: int, as_json: JsonOpt = False) -> None:
        """Disable a member: every dashboard session ends and every token stops, at once."""
        from api.access.store import disable_staff

        disabled, ended, revoked = _run(lambda s: s.db(disable_staff(s.pool, staff_id)))
        if not disabled:
            _fail(f"no enabled staff user {staff_id}", NOT_FOUND)
        _emit(
            {"id": staff_id, "disabled": True, "sessions_ended": ended, "tokens_revoked": revoked},
            as_json,
            lambda: (
                f"Staff user {staff_id} disabled; {ended} session(s) ended, "
                f"{revoked} token(s) revoked."
            ),
        )

    @staff.command("rotate")
    def staff_rotate(staff_id: int, as_json: JsonOpt = False) -> None:
        """A new own token for the member (shown once); the old one and their sessions stop."""
        from api.access.store import rotate_staff_token

        found = _run(lambda s: s.db(rotate_staff_token(s.pool, staff_id)))
        if found is None:
            _fail(f"no enabled staff user {staff_id}", NOT_FOUND)
        secret, ended = found
        _emit(
            {"id": staff_id, "token": secret, "sessions_ended": ended},
            as_json,
            lambda: (
                f"Staff user {staff_id}: new token, shown once ({ended} session(s) "
                f"ended):\n{secret}"
            ),
        )

    @token.command("create")
    def token_create(
        staff_id: Annotated[int, typer.Option("--staff", help="The owning member's id.")],
        name: Annotated[str, typer.Option(help="What the token is for (1-100 characters).")],
        role: Annotated[list[str], typer.Option("--role", help="A role of the token (repeat).")],
        clinic: ClinicOpt = None,
        days: Annotated[int, typer.Option(help="Valid for this many days (1-366).")] = 90,
        as_json: JsonOpt = False,
    ) -> None:
        """An API token, scoped and expiring; printed once, stored hashed."""
        from api.access.store import ScopeError, create_api_token

        if not 1 <= days <= 366:
            _fail("--days must be 1-366", BAD_INPUT)
        if not 1 <= len(name) <= 100:
            _fail("--name must be 1-100 characters", BAD_INPUT)
        for r in role:
            if r not in ROLE_NAMES:
                _fail(f"--role {r!r} must be one of {', '.join(ROLE_NAMES)}", BAD_INPUT)
        clinics = _check_clinics(clinic)

        async def create(service: JourneyService) -> tuple[Any, str] | str:
            try:
                return await service.db(
                    create_api_token(
                        service.pool,
                        staff_id=staff_id,
                        name=name,
                        roles=role,
                        clinics=clinics,
                        valid_for=timedelta(days=days),
                    )
                )
            except LookupError as err:
                return f"not_found:{err}"
            except ScopeError as err:
                return f"scope:{err}"

        made = _run(create)
        if isinstance(made, str):
            kind, _, message = made.partition(":")
            _fail(message, NOT_FOUND if kind == "not_found" else BAD_INPUT)
        row, secret = made
        data = {**row.model_dump(mode="json"), "token": secret}
        _emit(
            data,
            as_json,
            lambda: (
                f"Token {row.id} ({', '.join(row.roles)}; "
                f"{'all clinics' if row.clinics is None else ', '.join(row.clinics)}), expires "
                f"{row.expires_at:%Y-%m-%d %H:%M} UTC. Shown once:\n{secret}"
            ),
        )

    @token.command("list")
    def token_list(
        staff_id: Annotated[int | None, typer.Option("--staff", help="One member's.")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Tokens (never their secrets): roles, clinics, expiry, revocation, last use."""
        from api.access.store import list_api_tokens

        tokens = _run(lambda s: s.db(list_api_tokens(s.pool, staff_id)))
        data = [t.model_dump(mode="json") for t in tokens]

        def table() -> Table:
            from rich.table import Table

            t = Table("id", "name", "staff", "roles", "clinics", "expires", "revoked", "last used")
            for k in tokens:
                t.add_row(
                    str(k.id),
                    k.name,
                    str(k.staff_id),
                    ", ".join(k.roles),
                    "all" if k.clinics is None else ", ".join(k.clinics),
                    f"{k.expires_at:%Y-%m-%d %H:%M}",
                    f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "",
                    f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "",
                )
            return t

        _emit(data, as_json, table)

    @token.command("revoke")
    def token_revoke(token_id: int, as_json: JsonOpt = False) -> None:
        """Revoke a token at once."""
        from api.access.store import revoke_api_token

        if not _run(lambda s: s.db(revoke_api_token(s.pool, token_id))):
            _fail(f"no live token {token_id}", NOT_FOUND)
        _emit({"id": token_id, "revoked": True}, as_json, lambda: f"Token {token_id} revoked.")

    app.add_typer(staff, name="staff")
    app.add_typer(token, name="token")
