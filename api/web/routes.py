"""The web pages: the staff dashboard (overview, journeys list, journey page) and the patient's
own page, server-rendered from the read model, with actions through :class:`JourneyService`.

Security:
    * Staff log in with their staff token once; the session cookie then holds a random
      server-side session id (``staff_sessions``, :mod:`api.web.sessions`), never the token:
      HttpOnly, SameSite=Lax, Secure on https and always in production, valid for a working
      day. Logout ends the session in the database; disabling the user ends all of theirs.
    * Every staff POST form carries the CSRF token bound to the session (stored with it). The
      login form and the patient's forms (no session) use a signed double-submit cookie
      (SameSite=Strict) that must equal the form field.
    * The patient page is reached by the per-journey link token only and shows that journey
      alone; ``Referrer-Policy: no-referrer`` keeps the token out of other sites' logs.
    * Pages are ``Cache-Control: no-store`` (they carry personal data) and a strict CSP (no
      inline script or style).

Lists, counts and searches read PostgreSQL only (never Temporal); actions are Temporal updates
and signals, and a refusal is shown next to the form that asked, with every reason.
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets
import uuid
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Final, cast
from urllib.parse import quote, urlencode, urlsplit
from zoneinfo import ZoneInfo

import asyncpg
from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, Signer
from starlette.datastructures import FormData

from activities import replies, repository
from activities.i18n import LANGUAGE_NAMES, LANGUAGES, Translator, translator
from activities.repository import JourneyRow, StaffRow
from api.routes.me import headline as patient_headline
from api.service import (
    FactKept,
    JourneyNotFound,
    JourneyService,
    RequestRefused,
    ServiceUnavailable,
    actor_for,
    staff_ref,
)
from api.tokens import InvalidPatientToken, PatientTokenExpired, verify_patient_token
from api.web import sessions, views
from api.web.stuck import stuck_context
from worker.settings import Settings
from workflows import guards
from workflows.bounds import check_date, check_text
from workflows.calendar import local_datetime
from workflows.ids import workflow_id
from workflows.messages import JourneyStatus, ResolveAnomalyRequest, ReviewRequest
from workflows.protocol import ClinicProtocol, DateRange
from workflows.reasons import Reason, format_date, format_weekday_date
from workflows.replies import ReplyAnsweredRequest
from workflows.screening import ScreeningAnswers

__all__ = ["router"]

_HERE = Path(__file__).resolve().parent
TEMPLATES: Final = Jinja2Templates(directory=_HERE / "templates")
STATIC_FILES: Final[dict[str, str]] = {"app.css": "text/css", "live.js": "text/javascript"}

SESSION_COOKIE: Final = "pj_staff"
CSRF_COOKIE: Final = "pj_csrf"
# A salt of its own: a patient link signed with the same secret never passes as a CSRF token.
CSRF_SALT: Final = "journey.csrf.v1"
SESSION_MAX_AGE: Final = 12 * 3600  # a working day; staff log in again the next morning
PAGE_SIZE: Final = 25
OVERVIEW_LIMIT: Final = 15  # rows per overview list; "show all" links to the filtered list
TODAY_LIMIT: Final = 100  # candidates for today's sessions (session_due, then scheduled)
LIVE_POLL_MS: Final = 2500
RESCHEDULE_DAYS: Final = 56  # the patient's calendar: about eight weeks

STAFF_ACTIONS: Final = frozenset(
    {
        "pause",
        "resume",
        "withdraw",
        "review",
        "reschedule",
        "pre-session-check",
        "resolve-anomaly",
        "language",
        "answer-reply",
    }
)
# Flash messages by code, so nothing from the query string is echoed into the page.
STAFF_MESSAGES: Final[dict[str, str]] = {
    "pause": "Journey paused.",
    "resume": "Journey resumed.",
    "withdraw": "Journey withdrawn.",
    "review": "Review recorded.",
    "reschedule": "Session moved.",
    "check_cleared": "Pre-session check recorded: cleared.",
    "check_deferred": "Pre-session check recorded: the session is deferred.",
    "anomaly_applied": "The kept fact was applied.",
    "anomaly_dismissed": "The kept fact was dismissed.",
    "answer-reply": "The patient's reply is marked answered.",
    "language": "Language changed: the patient's next messages, page and invitations use it.",
}
_KEPT_FOR_STAFF: Final = Reason(
    rule="kept_for_staff",
    message="This was not recorded in your plan yet: the clinic has it and will look at it.",
)
# The codes of the patient page's flash messages; the words shown are the catalogs'
# ``page.flash.<code>`` in the patient's language (these English ones are for reading only).
PATIENT_MESSAGES: Final[dict[str, str]] = {
    "reschedule": "Your session has been moved. You will get a confirmation.",
    "spf": "Thank you: SPF 50 use recorded for today.",
    "reaction": "Thank you: the clinic has your report.",
    "reaction_adverse": "Thank you: a clinician will contact you. Your next session is on hold.",
}
SCREENING_CHECKS: Final[tuple[tuple[str, str], ...]] = (
    ("pregnant", "Pregnant or breastfeeding"),
    ("recent_tan", "Tan from recent sun or solarium"),
    ("open_wounds", "Open wounds in the treatment area"),
    ("active_infection", "Active herpes or another skin infection in the area"),
    ("photosensitivity", "Photosensitivity"),
    ("malignant_lesions", "Malignant skin lesions"),
)


# ---------------------------------------------------------------- page plumbing


class _Redirect(Exception):
    """Ends a page handler with a 303 to ``location`` (after a POST, or to the login)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


class _FormError(Exception):
    """A form field is missing or malformed; shown next to the form (422)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reasons = [Reason(rule="invalid_form", message=message)]


class _PageRoute(APIRoute):
    """Pages answer in HTML, even when Temporal or PostgreSQL is down (the API's JSON error
    handlers are right for API clients, not for a person at reception)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except _Redirect as r:
                return RedirectResponse(r.location, status_code=303)
            except JourneyNotFound:
                return _error_page(request, 404, "No such journey", "There is no journey here.")
            except (
                ServiceUnavailable,
                asyncpg.PostgresConnectionError,
                asyncpg.InterfaceError,
                OSError,
            ):
                response = _error_page(
                    request,
                    503,
                    "Temporarily unavailable",
                    "The journey service cannot be reached just now. Nothing was changed; "
                    "please try again in a few seconds.",
                )
                response.headers["Retry-After"] = "5"
                return response

        return handler


router = APIRouter(route_class=_PageRoute, include_in_schema=False)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _service(request: Request) -> JourneyService:
    service: JourneyService = request.app.state.service
    return service


def _pool(request: Request) -> asyncpg.Pool:
    return _service(request).pool


def _https(request: Request) -> bool:
    settings = _settings(request)
    return (
        settings.journey_env == "production"
        or request.url.scheme == "https"
        or settings.journey_public_url.startswith("https://")
    )


def _csrf_signer(settings: Settings) -> Signer:
    return Signer(settings.journey_patient_link_secret.get_secret_value(), salt=CSRF_SALT)


def _valid_csrf_cookie(request: Request) -> str | None:
    value = request.cookies.get(CSRF_COOKIE)
    if not value:
        return None
    try:
        _csrf_signer(_settings(request)).unsign(value)
    except BadSignature:
        return None
    return value


def _new_csrf(request: Request) -> str:
    return _csrf_signer(_settings(request)).sign(secrets.token_urlsafe(24)).decode()


def _set_csrf_cookie(request: Request, response: Response, value: str) -> None:
    response.set_cookie(
        CSRF_COOKIE,
        value,
        httponly=True,
        samesite="strict",
        secure=_https(request),
        path="/",
    )


def _check_csrf(request: Request, form: FormData) -> None:
    """Refuse a POST whose form token does not match the signed cookie (403)."""
    cookie = _valid_csrf_cookie(request)
    sent = form.get("csrf_token")
    if cookie is None or not isinstance(sent, str) or not hmac.compare_digest(cookie, sent):
        raise _Forbidden()


async def _check_staff_csrf(request: Request, form: FormData) -> None:
    """Refuse a staff POST without a live session or whose form token is not the session's
    own CSRF token (403)."""
    session = await _staff_session(request)
    sent = form.get("csrf_token")
    if (
        session is None
        or not isinstance(sent, str)
        or not hmac.compare_digest(session.csrf_token, sent)
    ):
        raise _Forbidden()


class _Forbidden(Exception):
    """A form without a valid CSRF token."""


def _security_headers(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )


def _render(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    status_code: int = 200,
) -> HTMLResponse:
    """Render a page with the CSRF token (the session's for a logged-in staff member, else the
    double-submit cookie's, setting it when new) and the headers."""
    session: sessions.StaffSession | None = getattr(request.state, "staff_session", None)
    csrf = session.csrf_token if session is not None else _valid_csrf_cookie(request)
    fresh = csrf is None
    if csrf is None:
        csrf = _new_csrf(request)
    response = TEMPLATES.TemplateResponse(
        request,
        template,
        {
            "csrf_token": csrf,
            "stage_labels": views.STAGE_LABELS,
            "flag_labels": views.FLAG_LABELS,
            "language_names": LANGUAGE_NAMES,
            "staff": None,
            **context,
        },
        status_code=status_code,
    )
    if fresh:
        _set_csrf_cookie(request, response, csrf)
    _security_headers(response)
    _allow_provider_logout(request, response)
    return response


def _allow_provider_logout(request: Request, response: Response) -> None:
    """The logout form ends at the sign-in provider's end-session page for a member who signed
    in there (api/access/oidc.py): ``form-action`` admits that origin too."""
    access = getattr(request.app.state, "access", None)
    issuer = access.oidc_issuer if access is not None and access.oidc_enabled else None
    if not issuer:
        return
    parts = urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}"
    policy = response.headers["Content-Security-Policy"]
    response.headers["Content-Security-Policy"] = policy.replace(
        "form-action 'self'", f"form-action 'self' {origin}"
    )


def _error_page(request: Request, status_code: int, title: str, message: str) -> HTMLResponse:
    return _render(
        request, "error.html", {"title": title, "message": message}, status_code=status_code
    )


error_page = _error_page  # the access checks answer a person with the same page (api/access)
render_page = _render  # the access log page (api/access/pages.py)


def _safe_next(value: str | None) -> str:
    """Only a local path: ``//evil.example`` or ``https://…`` would be an open redirect."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


async def _staff_session(request: Request) -> sessions.StaffSession | None:
    """The live session of the cookie (looked up once per request), or None."""
    if hasattr(request.state, "staff_session"):
        cached: sessions.StaffSession | None = request.state.staff_session
        return cached
    cookie = request.cookies.get(SESSION_COOKIE)
    session = await sessions.get_session(_pool(request), cookie) if cookie else None
    request.state.staff_session = session
    return session


async def _session_staff(request: Request) -> StaffRow | None:
    session = await _staff_session(request)
    return None if session is None else session.staff


session_staff = _session_staff  # the codec endpoint accepts the dashboard login too


async def _page_staff(request: Request) -> StaffRow:
    """The logged-in staff user, or a redirect to the login page that comes back here."""
    staff = await _session_staff(request)
    if staff is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise _Redirect("/login?next=" + quote(target, safe=""))
    return staff


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _text(form: FormData, name: str, label: str, max_length: int = 500) -> str:
    """Free text within the same bounds as the API's (workflows/bounds.py): no control
    character but line breaks, at most ``max_length`` characters."""
    value = _field(form, name)
    if len(value) > max_length:
        raise _FormError(f"{label.capitalize()} must be at most {max_length} characters.")
    try:
        return check_text(value, multiline=True)
    except ValueError:
        raise _FormError(
            f"{label.capitalize()} contains characters that are not allowed."
        ) from None


def _required(form: FormData, name: str, label: str) -> str:
    value = _text(form, name, label)
    if not value:
        raise _FormError(f"Please fill in {label}.")
    return value


def _int_field(form: FormData, name: str, label: str, maximum: int = 50) -> int:
    try:
        value = int(_field(form, name))
    except ValueError:
        raise _FormError(f"Please choose {label}.") from None
    if not 1 <= value <= maximum:
        raise _FormError(f"Please choose {label} between 1 and {maximum}.")
    return value


def _date_field(value: str, label: str) -> date:
    try:
        return check_date(date.fromisoformat(value))
    except ValueError:
        raise _FormError(f"Please give {label} as a date (1900 to 2100).") from None


def _request_id(form: FormData) -> str | None:
    """The form's one-time id: a double-submitted form runs its update once in Temporal."""
    value = _field(form, "request_id")
    try:
        return check_text(value) if value and len(value) <= 64 else None
    except ValueError:
        return None


# ---------------------------------------------------------------- shared reads


def _scope(request: Request) -> list[str] | None:
    """The clinics the member sees (api/access; None: every clinic)."""
    from api.access.enforce import principal_clinics

    return principal_clinics(request)


async def _clinics(pool: asyncpg.Pool) -> dict[str, tuple[str, str]]:
    """clinic_id → (name, time zone), for filters and for dates in each clinic's zone."""
    rows = await pool.fetch("SELECT clinic_id, name, timezone FROM clinics ORDER BY name")
    return {r["clinic_id"]: (r["name"], r["timezone"]) for r in rows}


def _tz(clinics: Mapping[str, tuple[str, str]], row: JourneyRow) -> str:
    return clinics.get(row.clinic_id, ("", "UTC"))[1]


def _list_item(
    row: JourneyRow, clinics: Mapping[str, tuple[str, str]], real_now: datetime
) -> dict[str, Any]:
    """One journey as the overview and the list show it."""
    status = views.journey_status(row)
    tz = _tz(clinics, row)
    now = views.journey_now(row, status, real_now)
    return {
        "row": row,
        "status": status,
        "tz": tz,
        "name": row.patient_name or row.patient_id,
        "next_at": views.format_local_datetime(row.next_action_at, tz),
        "overdue": row.next_action_at is not None and row.next_action_at < now,
        "clinic_name": clinics.get(row.clinic_id, (row.clinic_id, ""))[0],
    }


async def _live_version(
    pool: asyncpg.Pool, patient_id: str | None, scope: list[str] | None = None
) -> str:
    """Changes whenever a journey in scope writes a step or a refusal is logged."""
    if patient_id is None:
        row = await pool.fetchrow(
            "SELECT count(*) AS n, coalesce(sum(version), 0) AS v, max(updated_at) AS u "
            "FROM journeys WHERE ($1::text[] IS NULL OR clinic_id = ANY($1))",
            scope,
        )
        extra = await _refused_version(pool, scope)
    else:
        wf = workflow_id(patient_id)
        row = await pool.fetchrow(
            "SELECT count(*) AS n, coalesce(sum(version), 0) AS v, max(updated_at) AS u "
            "FROM journeys WHERE workflow_id = $1",
            wf,
        )
        extra = await pool.fetchval(
            "SELECT coalesce(max(id), 0) FROM journey_events WHERE workflow_id = $1", wf
        )
    assert row is not None
    return _live_stamp(row["n"], row["v"], row["u"], extra)


def _live_stamp(journeys: int, versions: int, last_update: datetime | None, extra: int) -> str:
    stamp = last_update.isoformat() if last_update else "-"
    return f"{journeys}.{versions}.{stamp}.{extra}"


async def _refused_version(pool: asyncpg.Pool, scope: list[str] | None = None) -> int:
    if scope is not None:
        return int(
            await pool.fetchval(
                "SELECT coalesce(max(e.id), 0) FROM journey_events e"
                " JOIN journeys j ON j.workflow_id = e.workflow_id"
                " WHERE e.kind = 'request_refused' AND j.clinic_id = ANY($1)",
                scope,
            )
        )
    return int(
        await pool.fetchval(
            "SELECT coalesce(max(id), 0) FROM journey_events WHERE kind = 'request_refused'"
        )
    )


async def _clinic_protocol(request: Request, clinic_id: str) -> ClinicProtocol:
    found = await repository.get_clinic(_pool(request), clinic_id)
    return found if found is not None else ClinicProtocol()


# ---------------------------------------------------------------- static files and login


@router.get("/static/web/{name}")
async def static_file(name: str) -> Response:
    """The stylesheet and the live-update script (a fixed list: no path is ever joined)."""
    media = STATIC_FILES.get(name)
    if media is None:
        return Response(status_code=404)
    return FileResponse(
        _HERE / "static" / name,
        media_type=media,
        headers={"Cache-Control": "public, max-age=300"},
    )


def login_page(
    request: Request, *, error: str | None = None, next_path: str = "/", status_code: int = 200
) -> HTMLResponse:
    """The sign-in page: the provider's button when OpenID Connect is configured, the pasted
    token while that path is on (api/access/config.py)."""
    access = request.app.state.access
    return _render(
        request,
        "login.html",
        {
            "next": next_path,
            "error": error,
            "oidc": access.oidc_enabled,
            "oidc_name": access.oidc_provider_name,
            "token_login": access.token_login_enabled(_settings(request).journey_env),
        },
        status_code=status_code,
    )


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> Response:
    """The sign-in page (the provider, or the staff token printed by ``journey staff add``)."""
    return login_page(request, next_path=_safe_next(next))


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the staff token; on success keep it in the signed session cookie."""
    form = await request.form()
    next_path = _safe_next(_field(form, "next"))
    try:
        _check_csrf(request, form)
    except _Forbidden:
        return login_page(
            request,
            error="The form expired. Please try again.",
            next_path=next_path,
            status_code=403,
        )
    if not request.app.state.access.token_login_enabled(_settings(request).journey_env):
        return login_page(
            request, error="Sign-in with a staff token is turned off here.", status_code=403
        )
    token = _field(form, "token")
    staff = await repository.get_staff_by_token(_pool(request), token) if token else None
    if staff is None:
        return login_page(
            request, error="That staff token is not valid.", next_path=next_path, status_code=401
        )
    response = await start_session(request, staff.id, next_path, via="token")
    if response.status_code != 303:
        return login_page(
            request, error="That staff token is not valid.", next_path=next_path, status_code=401
        )
    return response


async def start_session(request: Request, staff_id: int, next_path: str, via: str) -> Response:
    """A new dashboard session for ``staff_id`` (token login or OpenID Connect): the cookie and
    a 303 to ``next_path``; a 401 response if the member is disabled."""
    next_path = _safe_next(next_path)
    session_id, session = await sessions.create_session(
        _pool(request), staff_id, timedelta(seconds=SESSION_MAX_AGE), via=via
    )
    if session is None:  # disabled meanwhile
        return login_page(request, error="Your access is disabled.", status_code=401)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=SESSION_MAX_AGE,
        httponly=True,
        samesite="lax",
        secure=_https(request),
        path="/",
    )
    # A new CSRF token per login: one fixed before login cannot be reused after it.
    _set_csrf_cookie(request, response, _new_csrf(request))
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the staff session (in the database: the cookie is worthless afterwards)."""
    form = await request.form()
    try:
        await _check_staff_csrf(request, form)
    except _Forbidden:
        return _error_page(request, 403, "Form expired", "Reload the page and try again.")
    from api.access.oidc import logout_location

    cookie = request.cookies.get(SESSION_COOKIE, "")
    via = await sessions.session_via(_pool(request), cookie)
    await sessions.end_session(_pool(request), cookie)
    response = RedirectResponse(await logout_location(request, via), status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


# ---------------------------------------------------------------- overview


async def _overview_context(pool: asyncpg.Pool, scope: list[str] | None = None) -> dict[str, Any]:
    # A few statements whatever the number of journeys (issue 13): the counts by stage and flag
    # in one, today's candidates in one, every flagged short list in one, the season's in one;
    # each list is capped, so the page does not grow with the number of journeys.
    real_now = datetime.now(UTC)
    clinics = await _clinics(pool)
    summary = await repository.overview_counts(pool, scope)
    counts = summary.stages

    def items(rows: list[JourneyRow]) -> list[dict[str, Any]]:
        return [_list_item(r, clinics, real_now) for r in rows]

    candidates = await repository.journeys_due_soon(
        pool, real_now + timedelta(hours=36), limit=TODAY_LIMIT, clinics=scope
    )
    today: list[dict[str, Any]] = []
    no_completion: list[dict[str, Any]] = []
    for item in items(candidates):
        status: JourneyStatus | None = item["status"]
        if status is None:
            continue
        session = views.current_session(status)
        if session is None or session.starts_at is None:
            continue
        now = views.journey_now(item["row"], status, real_now)
        local_today = now.astimezone(ZoneInfo(item["tz"])).date()
        # A journey in session_due (a row from before Journey v2) is due by the workflow's own
        # clock; a scheduled one (the read model keeps "scheduled" on the session's day) counts
        # when its session is on the clinic's today by the journey's clock.
        if item["row"].stage != "session_due" and session.planned_on != local_today:
            continue
        item["session"] = session
        item["time"] = views.format_local_time(session.starts_at, item["tz"])
        item["arrive"] = views.format_local_time(session.arrive_by, item["tz"])
        today.append(item)
        # Past the session's end and still no completion from the booking system or device.
        if session.state == "booked" and now > session.starts_at + timedelta(minutes=30):
            no_completion.append(item)
    today.sort(key=lambda i: i["session"].starts_at)

    # A short list per flag and a link to all of them: the list page filters, sorts and pages.
    listed = ["no_show", "checkin_overdue", "review_overdue", *views.ATTENTION_FLAGS]
    flag_counts = {flag: summary.flags.get(flag, 0) for flag in listed}
    by_flag = await repository.journeys_by_flag(pool, flag_counts, OVERVIEW_LIMIT, scope)
    groups = {
        flag: {
            "items": items(by_flag[flag]),
            "total": flag_counts[flag],
            "link": f"/journeys?flag={flag}",
        }
        for flag in listed
    }
    waiting_rows, _ = await repository.list_journeys(
        pool, stage="awaiting_season", limit=OVERVIEW_LIMIT, with_total=False, clinics=scope
    )
    waiting = items(waiting_rows)
    for item in waiting:
        st = item["status"]
        opens = st.season_opens_on if st else None
        first = st.sessions[0].planned_on if st and st.sessions else None
        item["opens"] = format_weekday_date(opens) if opens else ""
        item["first"] = format_weekday_date(first) if first else ""
    waiting.sort(
        key=lambda i: (i["status"].season_opens_on or date.max) if i["status"] else date.max
    )
    return {
        "counts": [(s, views.STAGE_LABELS[s], counts.get(s, 0)) for s in views.STAGE_ORDER],
        "total": sum(counts.values()),
        "today": today,
        "today_capped": len(candidates) >= TODAY_LIMIT,
        "no_completion": no_completion,
        "no_shows": groups["no_show"],
        "late_checkins": groups["checkin_overdue"],
        "late_reviews": groups["review_overdue"],
        "attention": {flag: groups[flag] for flag in views.ATTENTION_FLAGS},
        "waiting": waiting,
        "waiting_total": counts.get("awaiting_season", 0),
        "generated": views.format_local_datetime(real_now, "UTC"),
        # The same version /live answers, from the counts' scan (no second scan of journeys).
        "live_version": _live_stamp(
            summary.journeys,
            summary.versions,
            summary.last_update,
            await _refused_version(pool, scope),
        ),
    }


@router.get("/")
async def overview(request: Request) -> Response:
    """What is due today, overdue, flagged and waiting for the season; updates live."""
    staff = await _page_staff(request)
    context = await _overview_context(_pool(request), _scope(request))
    return _render(
        request,
        "overview.html",
        {
            **context,
            "staff": staff,
            "live_scope": "",
            "live_url": "/",
            "page": "overview",
            "messaging_clinics": await _messaging_pages().clinics_in_scope(
                _pool(request), _scope(request)
            ),
        },
    )


@router.get("/stuck")
async def stuck(request: Request) -> Response:
    """Journeys whose workflow task keeps failing (a bug): they stall silently otherwise."""
    staff = await _page_staff(request)
    client = await request.app.state.temporal.get()
    context = await stuck_context(client, _pool(request), clinics=_scope(request))
    return _render(request, "stuck.html", {**context, "staff": staff, "page": "stuck"})


@router.get("/live")
async def live(request: Request, patient_id: str | None = None) -> Response:
    """A small JSON version the pages poll; it changes when a journey in scope changes."""
    staff = await _session_staff(request)
    if staff is None:
        return JSONResponse({"detail": "login required"}, status_code=401)
    if patient_id is not None:
        try:
            workflow_id(patient_id)
        except ValueError:
            return JSONResponse({"detail": "unknown journey"}, status_code=404)
    version = await _live_version(_pool(request), patient_id, _scope(request))
    return JSONResponse({"version": version}, headers={"Cache-Control": "no-store"})


# ---------------------------------------------------------------- journeys list

ORDERS: Final[dict[str, str]] = {
    "next_action_at": "Next action (soonest first)",
    "updated_at": "Last change (latest first)",
    "patient_name": "Patient name",
    "stage": "Stage",
}


@router.get("/journeys")
async def journeys(
    request: Request,
    stage: str | None = None,
    clinic: str | None = None,
    flag: str | None = None,
    due: str | None = None,
    q: str | None = None,
    order: str | None = None,
    page: str | None = None,
) -> Response:
    """Filter by stage, clinic, flag and due date; search by name (PostgreSQL only); page."""
    staff = await _page_staff(request)
    pool = _pool(request)
    scope = _scope(request)
    clinics = {k: v for k, v in (await _clinics(pool)).items() if scope is None or k in scope}
    stage = stage if stage in views.STAGE_LABELS else None
    clinic = clinic if clinic in clinics else None
    flag = flag if flag in views.FLAG_LABELS else None
    order_key = cast(repository.JourneyOrder, order) if order in ORDERS else "next_action_at"
    q = (q or "").strip()[:100] or None
    try:
        page_no = max(1, min(int(page or "1"), 10_000))
    except ValueError:
        page_no = 1
    due_date: date | None = None
    due_before: datetime | None = None
    if due:
        try:
            due_date = date.fromisoformat(due)
        except ValueError:
            due_date = None
    if due_date is not None:
        # "Due by the end of that day" in the clinic's zone (the filtered clinic's, else the
        # default clinic's): the date staff typed is a local date.
        zone = clinics.get(clinic or repository.DEFAULT_CLINIC_ID, ("", "UTC"))[1]
        due_before = local_datetime(due_date + timedelta(days=1), time(0, 0), zone)
    rows, total = await _service(request).list(
        stage=stage,
        clinic_id=clinic,
        flag=flag,
        next_action_before=due_before,
        name_query=q,
        order=order_key,
        limit=PAGE_SIZE,
        offset=(page_no - 1) * PAGE_SIZE,
        clinics=scope,
    )
    real_now = datetime.now(UTC)
    filters = {
        "stage": stage or "",
        "clinic": clinic or "",
        "flag": flag or "",
        "due": due_date.isoformat() if due_date else "",
        "q": q or "",
    }

    def link(**changes: Any) -> str:
        params = {**filters, "order": order_key, "page": str(page_no), **changes}
        return "/journeys?" + urlencode({k: v for k, v in params.items() if v})

    pages = max(1, -(-total // PAGE_SIZE))
    return _render(
        request,
        "journeys.html",
        {
            "staff": staff,
            "page": "journeys",
            "items": [_list_item(r, clinics, real_now) for r in rows],
            "total": total,
            "filters": filters,
            "order": order_key,
            "orders": ORDERS,
            "clinics": clinics,
            "page_no": page_no,
            "pages": pages,
            "prev_link": link(page=str(page_no - 1)) if page_no > 1 else None,
            "next_link": link(page=str(page_no + 1)) if page_no < pages else None,
            "sort_link": lambda key: link(order=key, page="1"),
            "first_shown": (page_no - 1) * PAGE_SIZE + 1 if rows else 0,
            "last_shown": (page_no - 1) * PAGE_SIZE + len(rows),
            "live_version": await _live_version(pool, None, scope),
            "live_scope": "",
            "live_url": link(),
        },
    )


# ---------------------------------------------------------------- journey page


async def _journey_page(
    request: Request,
    staff: StaffRow,
    patient_id: str,
    *,
    errors: Mapping[str, list[Reason]] | None = None,
    values: Mapping[str, str] | None = None,
    message: str | None = None,
    status_code: int = 200,
) -> Response:
    try:
        wf = workflow_id(patient_id)
    except ValueError:
        raise JourneyNotFound(patient_id) from None
    pool = _pool(request)
    row = await repository.get_journey(pool, patient_id)
    if row is None:
        raise JourneyNotFound(patient_id)
    patient = await repository.get_patient(pool, patient_id)
    cp = await _clinic_protocol(request, row.clinic_id)
    tz = cp.clinic.timezone
    status = views.journey_status(row)
    today = views.local_today(row, status, tz)
    timeline = await repository.get_timeline(pool, wf)
    sessions = status.sessions if status else []
    allowed = _allowed_requests(row.stage, status) & _permitted_requests(request)
    movable = (
        [s for s in sessions if s.state not in ("done", "cancelled")]
        if "reschedule" in allowed
        else []
    )
    current = views.current_session(status) if status else None
    # Built-in scheduling: the free times of the next session to move (docs/scheduling.md).
    free_for = movable[0].number if movable and status is not None else None
    free_times = (
        await _free_times(request, status, free_for, tz)
        if free_for is not None and status is not None
        else []
    )
    return _render(
        request,
        "journey.html",
        {
            "free_for": free_for,
            "free_times": free_times,
            "staff": staff,
            "page": "journeys",
            "row": row,
            "patient": patient,
            "status": status,
            "cp": cp,
            "tz": tz,
            "today": today,
            "today_text": format_weekday_date(today),
            "picture": views.plan_picture(status, cp, today) if status else None,
            "sessions": [
                {
                    "s": s,
                    "when": views.format_local_datetime(s.starts_at, tz)
                    or format_weekday_date(s.planned_on),
                    "arrive": views.format_local_time(s.arrive_by, tz),
                    "done_at": views.format_local_datetime(s.completed_at, tz),
                }
                for s in sessions
            ],
            "movable": movable,
            "current": current,
            "allowed": allowed,
            "anomalies": [
                {"a": a, "when": views.format_local_datetime(a.received_at, tz)}
                for a in (status.anomalies if status else [])
                if not a.resolved
            ],
            "timeline": [
                {"e": e, "when": views.format_local_datetime(e.occurred_at, tz)}
                for e in reversed(timeline)
            ],
            "next_at": views.format_local_datetime(row.next_action_at, tz),
            "spf_until": format_date(status.spf_until) if status and status.spf_until else "",
            "review_on": format_date(status.review_on) if status and status.review_on else "",
            "season_opens": format_date(status.season_opens_on)
            if status and status.season_opens_on
            else "",
            "errors": errors or {},
            "values": values or {},
            "message": message,
            "screening_checks": SCREENING_CHECKS,
            "request_id": uuid.uuid4().hex,
            "live_version": await _live_version(pool, patient_id),
            "live_scope": patient_id,
            "live_url": f"/journeys/{patient_id}",
            "closed": row.stage in guards.CLOSED_STAGES,
            # Consent, photos and outcomes (issue 19): api/web/clinical_pages.py.
            **await _clinical_pages().journey_context(request, staff, row, status, cp),
            # Messages and replies (issue 18): api/web/messaging_pages.py.
            **await _messaging_pages().journey_context(pool, wf, tz),
        },
        status_code=status_code,
    )


def _messaging_pages() -> Any:
    from api.web import messaging_pages  # it imports this module

    return messaging_pages


def _clinical_pages() -> Any:
    from api.web import clinical_pages  # it imports this module

    return clinical_pages


def _permitted_requests(request: Request) -> frozenset[str]:
    """The journey requests the member's permissions allow (the page offers no other form)."""
    from api.access.permissions import REQUEST_PERMISSIONS

    principal = getattr(request.state, "principal", None)
    if principal is None:
        return frozenset()
    return frozenset(r for r, p in REQUEST_PERMISSIONS.items() if principal.may(p))


def _allowed_requests(stage: str, status: JourneyStatus | None) -> frozenset[str]:
    """The requests the journey takes in ``stage`` (workflows.guards, the table its validators
    use): a paused journey takes a move only if it was paused in a stage with sessions."""
    allowed = set(guards.available_requests(stage))
    if stage == "paused" and not (
        status is not None
        and status.paused_from is not None
        and guards.accepts("reschedule", status.paused_from)
    ):
        allowed.discard("reschedule")
    return frozenset(allowed)


@router.get("/journeys/{patient_id}")
async def journey_page(request: Request, patient_id: str, msg: str | None = None) -> Response:
    """One patient's whole path: the plan picture, the audit timeline and the staff actions."""
    staff = await _page_staff(request)
    return await _journey_page(request, staff, patient_id, message=STAFF_MESSAGES.get(msg or ""))


@router.post("/journeys/{patient_id}/{action}")
async def journey_action(request: Request, patient_id: str, action: str) -> Response:
    """A staff action; success redirects back, a refusal is shown next to its form."""
    form = await request.form()
    try:
        await _check_staff_csrf(request, form)
    except _Forbidden:
        if await _session_staff(request) is None:
            await _page_staff(request)  # logged out or expired: to the login page
        return _error_page(request, 403, "Form expired", "Reload the page and try again.")
    staff = await _page_staff(request)
    if action not in STAFF_ACTIONS:
        raise JourneyNotFound(patient_id)
    try:
        workflow_id(patient_id)
    except ValueError:
        raise JourneyNotFound(patient_id) from None
    service = _service(request)
    actor = actor_for(staff)
    request_id = _request_id(form)
    code = action
    try:
        if action == "pause":
            reason = _required(form, "reason", "a reason")
            await service.pause(patient_id, reason, actor=actor, request_id=request_id)
        elif action == "resume":
            reason = _required(form, "reason", "a reason")
            await service.resume(patient_id, reason, actor=actor, request_id=request_id)
        elif action == "withdraw":
            reason = _required(form, "reason", "a reason")
            if _field(form, "confirm") != "yes":
                raise _FormError("Tick the box to confirm the withdrawal: it cannot be undone.")
            await service.withdraw(patient_id, reason, actor=actor, request_id=request_id)
        elif action == "review":
            if staff.role not in ("clinician", "admin"):
                raise RequestRefused(
                    "Forbidden",
                    [
                        Reason(
                            rule="role",
                            message="Recording the review needs a clinician or an admin.",
                        )
                    ],
                )
            outcome = _field(form, "outcome")
            if outcome not in ("complete", "further_course"):
                raise _FormError("Choose the review outcome.")
            further = (
                _int_field(form, "further_sessions", "the number of further sessions")
                if outcome == "further_course"
                else None
            )
            if further is not None and further < 1:
                raise _FormError("A further course needs at least one session.")
            note = _text(form, "note_ref", "the note reference", 200) or None
            grades = _clinical_pages().review_grades(form)
            await service.review(
                patient_id,
                ReviewRequest(
                    outcome=outcome,
                    further_sessions=further,
                    reviewed_by=actor,
                    note_ref=note,
                    staff_ref=staff_ref(staff),
                    **grades,
                ),
                request_id=request_id,
            )
        elif action == "reschedule":
            number = _int_field(form, "session_number", "the session")
            new_date = _date_field(_field(form, "new_date"), "the new date")
            new_time_text = _field(form, "new_time")
            try:
                new_time = time.fromisoformat(new_time_text) if new_time_text else None
            except ValueError:
                raise _FormError("Please give the time as hours and minutes.") from None
            await service.reschedule(patient_id, number, new_date, new_time, request_id=request_id)
        elif action == "resolve-anomaly":
            anomaly_id = _int_field(form, "anomaly_id", "the anomaly", 1_000_000)
            resolution = _field(form, "resolution")
            if resolution not in ("apply", "dismiss"):
                raise _FormError("Choose whether to apply or dismiss the kept fact.")
            note = _required(form, "note", "a note")
            resolved = await service.resolve_anomaly(
                patient_id,
                ResolveAnomalyRequest(
                    anomaly_id=anomaly_id,
                    action=resolution,
                    note=note,
                    requested_by=actor,
                    staff_ref=staff_ref(staff),
                ),
                request_id=request_id,
            )
            code = f"anomaly_{resolved.resolution}"
        elif action == "answer-reply":
            reply_id = _int_field(form, "reply_id", "the reply", 2**62)
            note = _required(form, "note", "a note")
            await service.answer_reply(
                patient_id,
                ReplyAnsweredRequest(
                    reply_id=reply_id,
                    note=note,
                    requested_by="clinician" if actor == "clinician" else "staff",
                    staff_ref=staff_ref(staff),
                ),
                request_id=request_id,
            )
            await service.db(
                replies.mark_answered(service.pool, patient_id, reply_id, staff_ref(staff))
            )
        elif action == "language":
            # The patient's language (docs/languages.md): messages not sent yet follow it.
            chosen = _field(form, "language")
            if chosen not in LANGUAGES:
                raise _FormError("Choose one of the languages offered.")
            changed = await service.db(
                repository.set_patient_language(service.pool, patient_id, chosen)
            )
            if changed is None:
                raise JourneyNotFound(patient_id)
        else:  # pre-session-check
            number = _int_field(form, "session_number", "the session")
            found: dict[str, Any] = {
                name: _field(form, name) == "yes" for name, _ in SCREENING_CHECKS
            }
            found["other_condition"] = _text(form, "other_condition", "other condition") or None
            answers = ScreeningAnswers.model_validate(found)
            result = await service.pre_session_check(
                patient_id,
                number,
                answers,
                actor=actor,
                request_id=request_id,
                staff_ref=staff_ref(staff),
            )
            code = "check_cleared" if result.cleared else "check_deferred"
    except RequestRefused as refused:
        return await _journey_page(
            request,
            staff,
            patient_id,
            errors={action: refused.reasons},
            values={k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"},
            status_code=409,
        )
    except _FormError as bad:
        return await _journey_page(
            request,
            staff,
            patient_id,
            errors={action: bad.reasons},
            values={k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"},
            status_code=422,
        )
    raise _Redirect(f"/journeys/{patient_id}?msg={code}")


# ---------------------------------------------------------------- the patient's page


def _patient_id(request: Request, token: str) -> str:
    try:
        return verify_patient_token(_settings(request), token)
    except PatientTokenExpired:
        raise _LinkError("This link has expired. Please ask the clinic for a new one.") from None
    except InvalidPatientToken:
        raise _LinkError("This link is not valid. Please ask the clinic for a new one.") from None


class _LinkError(Exception):
    """A bad or expired patient link."""


async def _patient_page(
    request: Request,
    token: str,
    patient_id: str,
    *,
    session_number: int | None = None,
    errors: Mapping[str, list[Reason]] | None = None,
    message: str | None = None,
    flash: str | None = None,
    status_code: int = 200,
) -> Response:
    pool = _pool(request)
    row = await repository.get_journey(pool, patient_id)
    patient = await repository.get_patient(pool, patient_id)
    # Every word of the page in the patient's language (docs/languages.md).
    t = translator(patient.language if patient else None)
    if row is None:
        return _render(
            request,
            "patient.html",
            {"missing": True, "token": token, "t": t, "page_lang": t.language},
            status_code=404,
        )
    cp = await _clinic_protocol(request, row.clinic_id)
    tz = cp.clinic.timezone
    spf_factor = cp.protocol.spf_factor
    # The workflow's refusals in the patient's language where the catalog explains the rule.
    errors = {
        form: [Reason(rule=r.rule, message=t.reason(r.rule, r.message)) for r in found]
        for form, found in (errors or {}).items()
    }
    if flash in PATIENT_MESSAGES:
        message = t(f"page.flash.{flash}", factor=spf_factor)
    status = views.journey_status(row)
    today = views.local_today(row, status, tz)
    sessions = status.sessions if status else []
    movable = [s for s in sessions if s.state in ("planned", "booked")]
    chosen = next((s for s in movable if s.number == session_number), None) or (
        movable[0] if movable else None
    )
    # What the journey takes now (workflows.guards); a journey on hold is the clinic's to move.
    can_move = (
        status is not None
        and chosen is not None
        and row.stage != "paused"
        and "reschedule" in _allowed_requests(row.stage, status)
    )
    trips: list[DateRange] | None = []
    options: list[views.DayOption] = []
    free_times: list[dict[str, str]] = []
    if can_move and status is not None and chosen is not None:
        trips = list(status.trips)
        options = views.date_options(
            status, cp, chosen.number, today=today, trips=trips or [], days=RESCHEDULE_DAYS
        )
        free_times = await _free_times(request, status, chosen.number, tz, t)
    spf_until, review_on = views.spf_and_review(status, cp) if status else (None, None)
    done = [s for s in sessions if s.state == "done"]
    upcoming = views.current_session(status) if status else None
    p = cp.protocol
    return _render(
        request,
        "patient.html",
        {
            "missing": False,
            "token": token,
            "row": row,
            "first_name": (patient.full_name.split(" ")[0] if patient else ""),
            "clinic_name": cp.clinic.name,
            "status": status,
            "t": t,
            "page_lang": t.language,
            "spf_factor": spf_factor,
            "session_minutes_min": cp.protocol.session_minutes_min,
            "session_minutes_max": cp.protocol.session_minutes_max,
            "headline": patient_headline(t, row.stage, spf_factor),
            "upcoming": upcoming,
            "upcoming_when": t.when_with_year(upcoming.starts_at, tz)
            if upcoming and upcoming.starts_at
            else (t.weekday_date(upcoming.planned_on) if upcoming else ""),
            "upcoming_arrive": t.time(upcoming.arrive_by, tz)
            if upcoming and upcoming.arrive_by
            else "",
            "sessions": [
                {
                    "s": s,
                    "when": t.when_with_year(s.starts_at, tz)
                    if s.starts_at
                    else t.weekday_date(s.planned_on),
                }
                for s in sessions
            ],
            "numbing": bool(status and status.numbing_cream),
            "numbing_minutes": p.numbing_lead_minutes,
            "recovery_min": p.recovery_days_min,
            "recovery_max": p.recovery_days_max,
            "spf_months": p.spf_months,
            "review_months": p.review_months,
            "spf_until": t.weekday_date(spf_until) if spf_until else "",
            "review_on": t.weekday_date(review_on) if review_on else "",
            "season_opens": t.weekday_date(status.season_opens_on)
            if status and status.season_opens_on
            else "",
            "waiting_reason": status.waiting_reason if status else None,
            "today": today,
            "today_text": t.weekday_date(today),
            "can_move": can_move,
            "movable": movable,
            "chosen": chosen,
            # The week starts on the locale's first day (Monday in Europe, Sunday in the US).
            "weeks": views.calendar_weeks(options, first_weekday=t.first_week_day),
            "weekday_heads": t.weekday_names(),
            "calendar_weeks_count": RESCHEDULE_DAYS // 7,
            "groups": [
                dataclasses.replace(g, message=t.reason(g.rule, g.message))
                for g in views.group_refusals(options, date_text=t.long_date)
            ],
            "allowed_count": sum(1 for o in options if o.allowed),
            "free_times": free_times,
            "trips_unknown": trips is None,
            "done": done,
            "can_attest": bool(done) and guards.accepts("spf_attested", row.stage),
            "errors": errors or {},
            "message": message,
            "request_id": uuid.uuid4().hex,
            **await _clinical_pages().patient_context(request, token, patient_id, row, status, cp),
        },
        status_code=status_code,
    )


async def _free_times(
    request: Request, status: JourneyStatus, number: int, tz: str, t: Translator | None = None
) -> list[dict[str, str]]:
    """Concrete free times for moving session ``number`` (built-in scheduling,
    docs/scheduling.md): ``value`` ("YYYY-MM-DD HH:MM") and ``label``. Empty for a clinic
    without resources on file, or when they cannot be read now (the dates still show)."""
    import logging

    from api.routes.scheduling import free_times_for
    from api.service import ServiceError

    try:
        found = await free_times_for(_service(request), status, number)
    except (ServiceError, asyncpg.PostgresError, OSError) as err:
        logging.getLogger(__name__).warning(
            "free times unavailable for the patient page: %s", type(err).__name__
        )
        return []
    return [
        {
            "value": f"{f.on.isoformat()} {f.local_time:%H:%M}",
            # The patient's page in the patient's language; the staff page as before.
            "label": t.when_with_year(f.starts_at, tz)
            if t is not None
            else views.format_local_datetime(f.starts_at, tz),
        }
        for f in found.free_times
    ]


def _link_error_page(request: Request, message: str) -> Response:
    response = _error_page(request, 401, "Link not valid", message)
    return response


@router.get("/p/{token}")
async def patient_page(
    request: Request, token: str, session: str | None = None, msg: str | None = None
) -> Response:
    """The patient's own page: the plan in plain words, moving a session, SPF, reactions."""
    try:
        patient_id = _patient_id(request, token)
    except _LinkError as bad:
        return _link_error_page(request, str(bad))
    try:
        number = int(session) if session else None
    except ValueError:
        number = None
    return await _patient_page(
        request,
        token,
        patient_id,
        session_number=number,
        flash=msg,
    )


@router.post("/p/{token}/{action}")
async def patient_action(request: Request, token: str, action: str) -> Response:
    """Move a session, attest SPF 50 or report a reaction (the link's own journey only)."""
    try:
        patient_id = _patient_id(request, token)
    except _LinkError as bad:
        return _link_error_page(request, str(bad))
    form = await request.form()
    try:
        _check_csrf(request, form)
    except _Forbidden:
        return _error_page(request, 403, "Form expired", "Reload the page and try again.")
    if action not in ("reschedule", "spf", "reaction"):
        return _error_page(request, 404, "Not found", "There is nothing here.")
    service = _service(request)
    # What the page answers is in the patient's language (docs/languages.md).
    t = translator(await repository.patient_language(_pool(request), patient_id))
    row = await repository.get_journey(_pool(request), patient_id)
    if row is None:
        raise JourneyNotFound(patient_id)
    status = views.journey_status(row)
    cp = await _clinic_protocol(request, row.clinic_id)
    today = views.local_today(row, status, cp.clinic.timezone)
    code = action
    number: int | None = None
    try:
        if action == "reschedule":
            number = _int_field(form, "session_number", "the session")
            # A free time picked from the list ("YYYY-MM-DD HH:MM") is that exact start; a date
            # alone lets the journey pick the best free time that day.
            slot_date, _, slot_time = _field(form, "slot").partition(" ")
            chosen = _field(form, "other_date") or slot_date or _field(form, "new_date")
            if not chosen:
                raise _FormError(t("page.error.choose_date"))
            try:
                new_time = (
                    time.fromisoformat(slot_time) if slot_time and chosen == slot_date else None
                )
            except ValueError:
                raise _FormError(t("page.error.choose_time")) from None
            await service.reschedule(
                patient_id,
                number,
                _date_field(chosen, "the new date"),
                new_time,
                by_patient=True,
                request_id=_request_id(form),
            )
        elif action == "spf":
            await service.spf_attested(patient_id, today)
        else:
            number = _int_field(form, "session_number", "the session")
            done = {
                s.number: s.completed_at or s.starts_at
                for s in (status.sessions if status else [])
                if s.state == "done"
            }
            if number not in done:
                raise _FormError(t("page.error.choose_done_session"))
            at = done[number]
            day = max(0, min((today - at.date()).days if at else 0, 60))
            kind = _field(form, "reaction")
            if kind == "adverse":
                await service.report_reaction(
                    patient_id, number, day, "prolonged", severity="moderate"
                )
                code = "reaction_adverse"
            elif kind in ("expected", "prolonged", "none"):
                await service.report_reaction(patient_id, number, day, kind)
            else:
                raise _FormError(t("page.error.say_skin"))
    except RequestRefused as refused:
        if isinstance(refused, FactKept):
            kept = Reason(rule=_KEPT_FOR_STAFF.rule, message=t("page.error.kept_for_staff"))
            refused.reasons = [*refused.reasons, kept]
        return await _patient_page(
            request,
            token,
            patient_id,
            session_number=number,
            errors={action: refused.reasons},
            status_code=409,
        )
    except _FormError as bad:
        return await _patient_page(
            request,
            token,
            patient_id,
            session_number=number,
            errors={action: bad.reasons},
            status_code=422,
        )
    raise _Redirect(f"/p/{token}?msg={code}")
