"""The dashboard's staff session: a server-side session id in the cookie (never the bearer
token), ended by logout and by disabling the user, with the CSRF token bound to the session;
Secure cookies in production. Real PostgreSQL; Temporal is not needed for these pages."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest

from activities.repository import create_staff_user, disable_staff_user, get_journey
from api.access.config import AccessSettings
from api.main import create_app
from api.web.routes import CSRF_COOKIE, SESSION_COOKIE
from tests.test_api import Stack, enrol_body, eventually, make_settings, serve, stack
from worker.codec import generate_key

__all__ = ["stack"]  # the fixture, imported for the test below

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@asynccontextmanager
async def dashboard(
    pg_dsn: str, access: AccessSettings | None = None, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(database_url=pg_dsn, temporal_address="127.0.0.1:9", **settings))
    if access is not None:
        app.state.access = access
    async with serve(app) as http:
        yield http


async def login(http: httpx.AsyncClient, token: str) -> httpx.Response:
    form = (await http.get("/login")).text
    csrf = CSRF_FIELD.search(form)
    assert csrf is not None
    return await http.post(
        "/login", data={"token": token, "csrf_token": csrf.group(1), "next": "/"}
    )


async def page_csrf(http: httpx.AsyncClient) -> str:
    # Every staff page carries the logout form with the session's token.
    found = CSRF_FIELD.search((await http.get("/journeys")).text)
    assert found is not None
    return found.group(1)


@pytest.fixture
async def staff_token(pg_pool: asyncpg.Pool) -> str:
    _, token = await create_staff_user(pg_pool, "Rita Reception", "staff")
    return token


async def test_the_cookie_holds_a_session_id_stored_hashed_never_the_token(
    pg_dsn: str, pg_pool: asyncpg.Pool, staff_token: str
) -> None:
    async with dashboard(pg_dsn) as http:
        r = await login(http, staff_token)
        assert r.status_code == 303
        cookie = http.cookies[SESSION_COOKIE]
        assert staff_token not in cookie and cookie not in staff_token
        rows = await pg_pool.fetch("SELECT id_hash, ended_at FROM staff_sessions")
        assert len(rows) == 1 and rows[0]["ended_at"] is None
        assert rows[0]["id_hash"] != cookie  # only the sha256 is stored
        assert (await http.get("/journeys")).status_code == 200
        # The bearer token itself is not a session cookie.
        http.cookies.set(SESSION_COOKIE, staff_token)
        assert (await http.get("/journeys")).status_code == 303


async def test_logout_ends_the_session_even_for_a_copied_cookie(
    pg_dsn: str, pg_pool: asyncpg.Pool, staff_token: str
) -> None:
    async with dashboard(pg_dsn) as http:
        await login(http, staff_token)
        copied = http.cookies[SESSION_COOKIE]
        csrf = await page_csrf(http)
        r = await http.post("/logout", data={"csrf_token": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert await pg_pool.fetchval("SELECT ended_at IS NOT NULL FROM staff_sessions")
        http.cookies.set(SESSION_COOKIE, copied)  # replayed after the logout
        r = await http.get("/journeys")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")


async def test_disabling_the_user_ends_their_sessions(
    pg_dsn: str, pg_pool: asyncpg.Pool, staff_token: str
) -> None:
    async with dashboard(pg_dsn) as http:
        await login(http, staff_token)
        assert (await http.get("/journeys")).status_code == 200
        staff_id = await pg_pool.fetchval("SELECT staff_id FROM staff_sessions")
        assert await disable_staff_user(pg_pool, staff_id)
        r = await http.get("/journeys")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")


async def test_the_csrf_token_is_bound_to_the_session(
    pg_dsn: str, pg_pool: asyncpg.Pool, staff_token: str
) -> None:
    async with dashboard(pg_dsn) as http:
        await login(http, staff_token)
        own = await page_csrf(http)
        double_submit = http.cookies[CSRF_COOKIE]  # the pre-login token: not the session's
        assert own != double_submit
        action = "/journeys/p_nobody/no-such-action"  # answered without Temporal
        r = await http.post(action, data={"csrf_token": double_submit, "reason": "x"})
        assert r.status_code == 403
        # Another member's session token does not work in this session either.
        _, other_token = await create_staff_user(pg_pool, "Sam Staff", "staff")
        async with dashboard(pg_dsn) as other:
            await login(other, other_token)
            theirs = await page_csrf(other)
        assert theirs != own
        r = await http.post(action, data={"csrf_token": theirs, "reason": "x"})
        assert r.status_code == 403
        # The session's own token passes the check (then: no such action, 404).
        r = await http.post(action, data={"csrf_token": own, "reason": "x"})
        assert r.status_code == 404


async def test_production_cookies_are_secure_even_behind_plain_http(
    pg_dsn: str, staff_token: str
) -> None:
    async with dashboard(
        pg_dsn,
        # The pasted token is off in production unless turned on (break-glass, issue 16).
        AccessSettings(_env_file=None, token_login=True),
        journey_env="production",
        journey_patient_link_secret="a-real-secret-from-the-vault-0123456789",
        journey_codec_keys=f"k1:{generate_key()}",
        journey_codec_active_key="k1",
        journey_public_url="https://journey.clinic.example",
    ) as http:
        # Behind a TLS-terminating proxy the app sees http://: the cookie is Secure anyway.
        plain = await http.get("/login")
        csrf_cookie = [c for c in plain.headers.get_list("set-cookie") if CSRF_COOKIE in c]
        assert csrf_cookie and "secure" in csrf_cookie[0].lower()
        form = (await http.get("https://testserver/login")).text
        csrf = CSRF_FIELD.search(form)
        assert csrf is not None
        r = await http.post(
            "https://testserver/login",
            data={"token": staff_token, "csrf_token": csrf.group(1), "next": "/"},
        )
        assert r.status_code == 303
        cookies = r.headers.get_list("set-cookie")
        session = [c for c in cookies if c.startswith(f"{SESSION_COOKIE}=")]
        assert session and "secure" in session[0].lower() and "httponly" in session[0].lower()


async def test_dashboard_forms_have_the_api_bounds(stack: Stack) -> None:
    """A NUL in a form's reason would fail the journey's database write: refused (422) on the
    page, before anything reaches the journey."""
    r = await stack.http.post("/api/journeys", json=enrol_body(), headers=stack.auth())
    assert r.status_code == 201, r.text
    pid = r.json()["patient_id"]

    async def projected() -> bool:  # the journey page reads the read model
        return await get_journey(stack.pool, pid) is not None

    await eventually(projected)
    await login(stack.http, stack.admin)
    csrf = await page_csrf(stack.http)
    for field, value in [("reason", "away\x00"), ("reason", "x" * 501)]:
        r = await stack.http.post(f"/journeys/{pid}/pause", data={"csrf_token": csrf, field: value})
        assert r.status_code == 422, r.text
    r = await stack.http.post(
        f"/journeys/{pid}/reschedule",
        data={"csrf_token": csrf, "session_number": "1", "new_date": "9999-12-31"},
    )
    assert r.status_code == 422
    r = await stack.http.get(f"/api/journeys/{pid}", headers=stack.auth())
    assert r.json()["stage"] != "paused"
    assert "paused" not in {e["kind"] for e in r.json()["timeline"]}
