"""Every request goes through :func:`enforce` (an app-wide dependency) before its route runs.

1. The route's rule comes from ``ROUTE_PERMISSIONS`` (``api/access/permissions.py``) by method
   and path template; a route missing there is refused (403 ``no_permission_declared``).
2. A public route passes (it checks its own credential: patient link, signature...).
3. Otherwise the caller is authenticated: ``Authorization: Bearer`` (an API token, or a
   member's own staff token while the pasted-token path is on), or on the dashboard and the
   codec the session cookie. None: 401 (the dashboard redirects to the sign-in page).
4. The principal must hold the permission (else 403 ``forbidden``, logged as ``denied``).
5. Clinic scope: a patient named by the path (``{patient_id}``, a FHIR id, ``?patient=``,
   ``?_id=``) must belong to one of the principal's clinics, else it is answered as an unknown
   journey (404, logged as ``denied``); a clinic in the path or an enrolment's body too (403).
   Lists filter by ``principal.clinic_list`` in SQL (the routes pass it on).
6. Access to a patient is appended to ``access_log`` (view, change, export; ids only).
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import quote

import asyncpg
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from activities.repository import DEFAULT_CLINIC_ID
from api.access import store
from api.access.config import AccessSettings
from api.access.permissions import ROUTE_PERMISSIONS, ByAction, Permission, Public
from api.fhir.resources import FhirIdError, our_patient_id
from api.service import JourneyNotFound
from api.tokens import InvalidPatientToken, verify_patient_token
from worker.settings import Settings
from workflows.ids import workflow_id

__all__ = [
    "AccessDenied",
    "ClinicScopeDep",
    "authenticate",
    "current_principal",
    "enforce",
    "install_handlers",
    "principal_clinics",
    "rule_for",
]

_API_PREFIXES = ("/api/", "/fhir/", "/codec/")
# The FHIR ids that name a patient, by resource type (as api/routes/fhir.py reads them).
_FHIR_IDS: dict[str, re.Pattern[str]] = {
    "Patient": re.compile(r"^(?P<patient>[A-Za-z0-9.-]{1,64})$"),
    "CarePlan": re.compile(r"^(?P<patient>[A-Za-z0-9.-]+)\.c\d{1,4}$"),
    "Appointment": re.compile(r"^(?P<patient>[A-Za-z0-9.-]+)\.c\d{1,4}\.s\d{1,4}$"),
    "Procedure": re.compile(r"^(?P<patient>[A-Za-z0-9.-]+)\.c\d{1,4}\.s\d{1,4}$"),
    "QuestionnaireResponse": re.compile(
        r"^(?P<patient>[A-Za-z0-9.-]+)\.(e\d{1,18}|c\d{1,4}\.intake)$"
    ),
    "Flag": re.compile(r"^(?P<patient>[A-Za-z0-9.-]+)\.[a-z-]{1,64}$"),
}


class AccessDenied(Exception):
    """401 (who are you?) or 403 (not this): JSON for API clients, a page for a person."""

    def __init__(self, status_code: int, rule: str, message: str) -> None:
        super().__init__(message)
        self.status_code, self.rule, self.message = status_code, rule, message


def _is_page(request: Request) -> bool:
    path = request.url.path
    return not path.startswith(_API_PREFIXES) and path != "/live"


def rule_for(method: str, path: str) -> Permission | Public | ByAction | None:
    """The declared rule of a route (HEAD is GET's)."""
    return ROUTE_PERMISSIONS.get(("GET" if method == "HEAD" else method, path))


def current_principal(request: Request) -> store.Principal:
    """The principal :func:`enforce` admitted (a route with a permission only)."""
    principal: store.Principal = request.state.principal
    return principal


def principal_clinics(request: Request) -> list[str] | None:
    """The clinics the caller sees, for SQL (None: every clinic)."""
    principal: store.Principal | None = getattr(request.state, "principal", None)
    return None if principal is None else principal.clinic_list


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authenticate(request: Request) -> store.Principal | None:
    """The caller's principal, or None when they presented nothing.

    Raises:
        AccessDenied: 401 for a bearer token that is not valid (expired, revoked, its member
            disabled), 403 for a patient link on a staff route.
    """
    pool: asyncpg.Pool = request.app.state.pool
    settings: Settings = request.app.state.settings
    access: AccessSettings = request.app.state.access
    if request.headers.get("authorization") is not None:
        token = _bearer(request) or ""
        principal = await store.principal_for_bearer(
            pool, token, staff_tokens=access.token_login_enabled(settings.journey_env)
        )
        if principal is not None:
            return principal
        try:
            verify_patient_token(settings, token)
        except InvalidPatientToken:
            raise AccessDenied(
                401, "unauthorized", "The bearer token is not valid (or expired or revoked)."
            ) from None
        raise AccessDenied(403, "forbidden", "A patient link cannot be used for staff requests.")
    if _is_page(request) or request.url.path in ("/live", "/codec/encode", "/codec/decode"):
        from api.web.routes import session_staff  # the pages import this module

        staff = await session_staff(request)
        session = getattr(request.state, "staff_session", None)
        if staff is not None and session is not None:
            if session.via == "token" and not access.token_login_enabled(settings.journey_env):
                return None  # signed in by pasted token, a path since turned off
            return store.principal_for_staff(staff, "session")
    return None


def _patient_named(request: Request, path: str) -> str | None:
    """The patient a request names, if it is a well-formed id (a malformed one cannot exist:
    the route answers it as an unknown journey, and it never reaches SQL here)."""
    found = _named(request, path)
    if found is None:
        return None
    try:
        workflow_id(found)
    except ValueError:
        return None
    return found


def _named(request: Request, path: str) -> str | None:
    params = request.path_params
    if "patient_id" in params:
        return str(params["patient_id"])
    if path == "/live":  # the journey page's live version names its patient in the query
        return request.query_params.get("patient_id")
    if not path.startswith("/fhir/R4/"):
        return None
    kind = path.removeprefix("/fhir/R4/").split("/")[0]
    subject: str | None = None
    if "rid" in params:
        m = _FHIR_IDS.get(kind, _FHIR_IDS["Patient"]).match(str(params["rid"]))
        subject = m["patient"] if m else None
    else:
        subject = request.query_params.get("patient") or (
            request.query_params.get("_id") if kind == "Patient" else None
        )
    if subject is None:
        return None
    try:
        return our_patient_id(subject)
    except FhirIdError:
        return None


def _client(request: Request) -> str | None:
    return request.client.host if request.client is not None else None


async def enforce(request: Request) -> None:
    """The app-wide check (module docstring). Sets ``request.state.principal``."""
    route: Any = request.scope.get("route")
    found_path = getattr(route, "path", None)
    path = found_path if isinstance(found_path, str) else ""
    rule = rule_for(request.method, path)
    if rule is None:
        raise AccessDenied(
            403, "no_permission_declared", "This route declares no permission: refused."
        )
    if isinstance(rule, Public):
        return
    if isinstance(rule, ByAction):
        permission: Permission = rule.actions.get(
            str(request.path_params.get("action", "")), rule.default
        )
    else:
        permission = rule
    principal = await authenticate(request)
    if principal is None:
        raise AccessDenied(401, "unauthorized", "Sign in first (or send a bearer token).")
    pool: asyncpg.Pool = request.app.state.pool
    patient_id = _patient_named(request, path)

    async def log(action: store.AccessAction, clinic_id: str | None) -> None:
        await store.log_access(
            pool,
            principal,
            action=action,
            permission=permission,
            route=f"{request.method} {path}",
            patient_id=patient_id,
            clinic_id=clinic_id,
            client=_client(request),
        )

    clinic_id: str | None = None
    if patient_id is not None:
        clinic_id = await store.clinic_of_patient(pool, patient_id)
    if not principal.may(permission):
        await log("denied", clinic_id)
        raise AccessDenied(
            403,
            "forbidden",
            f"This needs the permission {permission!r}, which your role "
            f"({', '.join(sorted(principal.roles))}) does not have.",
        )
    if clinic_id is not None and not principal.sees(clinic_id):
        await log("denied", clinic_id)
        raise JourneyNotFound(patient_id or "")
    wanted_clinic = request.path_params.get("clinic_id")
    if wanted_clinic is None and request.method == "POST" and path == "/api/journeys":
        wanted_clinic = await _body_clinic(request, DEFAULT_CLINIC_ID)
    if wanted_clinic is None and request.method == "POST" and path == "/api/plans/preview":
        wanted_clinic = await _body_clinic(request, None)  # a clinic's protocol, if named
    if wanted_clinic is not None and not principal.sees(str(wanted_clinic)):
        await log("denied", str(wanted_clinic))
        raise AccessDenied(403, "clinic_out_of_scope", "That clinic is outside your clinics.")
    request.state.principal = principal
    if patient_id is not None:
        action: store.AccessAction = "view" if request.method in ("GET", "HEAD") else "change"
        await log("export" if path.startswith("/fhir/") else action, clinic_id)
    elif path.startswith("/fhir/") or path.endswith(".csv"):
        await log("export", None)


async def _body_clinic(request: Request, default: str | None) -> str | None:
    """The ``clinic_id`` of a JSON body (``default`` when absent or malformed: the route
    answers a malformed body with its 422)."""
    try:
        body = await request.json()
    except ValueError:
        return default
    value = body.get("clinic_id", default) if isinstance(body, dict) else None
    return value if isinstance(value, str) else default


async def _denied(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AccessDenied)
    if _is_page(request):
        if exc.status_code == 401:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse("/login?next=" + quote(target, safe=""), status_code=303)
        from api.web.routes import error_page

        return error_page(request, exc.status_code, "Not allowed", exc.message)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return JSONResponse(
        {"detail": [{"rule": exc.rule, "message": exc.message}]},
        status_code=exc.status_code,
        headers=headers,
    )


def install_handlers(app: FastAPI) -> None:
    """The answers of :class:`AccessDenied`."""
    app.add_exception_handler(AccessDenied, _denied)


ClinicScopeDep = Annotated[list[str] | None, Depends(principal_clinics)]
"""A route's view of the caller's clinics, for SQL (None: every clinic)."""
