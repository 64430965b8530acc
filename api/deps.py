"""FastAPI dependencies: settings, the service, staff and patient credentials.

* ``StaffDep``: ``Authorization: Bearer <staff token>`` → the staff row. Missing or unknown →
  401; a valid *patient* token on a staff endpoint → 403 (a credential outside its scope).
* ``require_role(...)``: the staff user must hold one of the roles → else 403.
* ``PatientDep``: the patient link token (``Authorization: Bearer <token>`` or ``?token=``) →
  the patient id. Missing, bad or expired → 401; a ``patient_id`` query naming another
  journey → 403.
* Bounded parameters (``workflows/bounds.py``): ``PatientIdPath``, ``IdempotencyKeyHeader``,
  ``QueryText(n)``, ``QueryDateTime``; a value outside its bounds is a 422 naming it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Path, Query, Request, status
from pydantic import AfterValidator

from activities.repository import StaffRole, StaffRow
from api import schemas
from api.service import JourneyService
from api.tokens import InvalidPatientToken, PatientTokenExpired, verify_patient_token
from worker.settings import Settings
from workflows.bounds import check_datetime, check_text
from workflows.ids import PATIENT_ID_PATTERN

__all__ = [
    "ERROR_RESPONSES",
    "IdempotencyKeyHeader",
    "PatientDep",
    "PatientIdPath",
    "QueryDateTime",
    "QueryText",
    "ServiceDep",
    "SettingsDep",
    "StaffDep",
    "require_role",
]

# Answers any operation can give (the body-size middleware and validation), documented on
# every route so clients and the fuzz suite know them.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    413: {"model": schemas.ErrorBody, "description": "The request body is too large."},
    422: {"model": schemas.ErrorBody, "description": "A field breaks a rule."},
}


def _optional_text(value: str | None) -> str | None:
    return None if value is None else check_text(value)


def _optional_datetime(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:  # documented: a time without an offset is UTC
        value = value.replace(tzinfo=UTC)
    return check_datetime(value)


# Not a 422: an id that cannot exist is "no such journey" (404), answered by the service
# before any query (a NUL in it would otherwise reach PostgreSQL).
PatientIdPath = Annotated[
    str,
    Path(description=f"The patient's opaque id (``p_…``, {PATIENT_ID_PATTERN}); others: 404."),
]
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=200),
    AfterValidator(_optional_text),
]
QueryDateTime = Annotated[
    datetime | None,
    Query(description="ISO 8601; without an offset it is UTC. Dates 1900-01-01..2100-12-31."),
    AfterValidator(_optional_datetime),
]


def QueryText(max_length: int, description: str | None = None) -> Any:
    """An optional query text of at most ``max_length`` characters, no control character."""
    return Annotated[
        str | None,
        Query(
            max_length=max_length,
            description=description,
            pattern=r"^[^\x00-\x1f\x7f-\x9f]*$",
        ),
        AfterValidator(_optional_text),
    ]


def get_settings_dep(request: Request) -> Settings:
    """The app's settings (set by ``create_app``)."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_service(request: Request) -> JourneyService:
    """The service built by the lifespan."""
    service: JourneyService = request.app.state.service
    return service


ServiceDep = Annotated[JourneyService, Depends(get_service)]


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail=[{"rule": "unauthorized", "message": message}],
        headers={"WWW-Authenticate": "Bearer"},
    )


def _forbidden(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_403_FORBIDDEN, detail=[{"rule": "forbidden", "message": message}]
    )


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def get_staff(request: Request, service: ServiceDep, settings: SettingsDep) -> StaffRow:
    """The staff user of the bearer token.

    Raises:
        HTTPException: 401 without a valid token; 403 for a patient link token.
    """
    principal = getattr(request.state, "principal", None)
    if principal is not None:  # admitted by api.access.enforce (tokens, scope, permission)
        found: StaffRow = principal.staff
        return found
    token = _bearer(request)
    if token is None:
        raise _unauthorized("A staff bearer token is required.")
    staff = await service.staff_by_token(token)
    if staff is not None:
        return staff
    try:
        verify_patient_token(settings, token)
    except InvalidPatientToken:
        raise _unauthorized("The bearer token is not valid.") from None
    raise _forbidden("A patient link cannot be used for staff requests.")


StaffDep = Annotated[StaffRow, Depends(get_staff)]


async def get_codec_staff(request: Request, service: ServiceDep, settings: SettingsDep) -> StaffRow:
    """Staff for the codec endpoint: the bearer token (Temporal CLI ``--codec-auth``), or the
    dashboard's session cookie (the Temporal UI in the same browser, with credentials on).

    Raises:
        HTTPException: 401/403 as :func:`get_staff`.
    """
    if request.headers.get("authorization") is None:
        from api.web.routes import session_staff  # the web pages import this module

        staff = await session_staff(request)
        if staff is not None:
            return staff
    return await get_staff(request, service, settings)


def require_role(*roles: StaffRole) -> Callable[[StaffRow], Awaitable[StaffRow]]:
    """A dependency admitting staff with one of ``roles`` only (others: 403)."""

    async def check(staff: StaffDep) -> StaffRow:
        if staff.role not in roles:
            raise _forbidden(f"This needs the role {' or '.join(roles)}; you are {staff.role}.")
        return staff

    return check


def get_patient_id(
    request: Request,
    settings: SettingsDep,
    token: Annotated[str | None, Query(description="The patient link token.")] = None,
    patient_id: Annotated[
        str | None, Query(description="Optional: the journey meant; must be the token's own.")
    ] = None,
) -> str:
    """The patient id of the link token.

    Raises:
        HTTPException: 401 missing, bad or expired token; 403 ``patient_id`` of another journey.
    """
    presented = _bearer(request) or token
    if not presented:
        raise _unauthorized("The patient link token is required.")
    try:
        own = verify_patient_token(settings, presented)
    except PatientTokenExpired:
        raise _unauthorized("The patient link has expired; ask the clinic for a new one.") from None
    except InvalidPatientToken:
        raise _unauthorized("The patient link is not valid.") from None
    if patient_id is not None and patient_id != own:
        raise _forbidden("This link reaches its own journey only.")
    return own


PatientDep = Annotated[str, Depends(get_patient_id)]
