"""OpenID Connect sign-in (issue 16) against a local provider that is a real HTTP server
issuing signed tokens (tests/oidc_provider.py): the authorization code flow with PKCE and the
client secret, groups mapped to a role and clinics, logout here and at the provider, an
expired ID token, a refused group, a forged state, a member disabled here."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlparse

import asyncpg
import httpx
from pydantic import SecretStr

from api.access import store
from api.access.config import AccessSettings
from api.web.routes import SESSION_COOKIE
from tests.access_helpers import CSRF_FIELD, access_settings, app_client, make_chain
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider, running_provider

GROUP_MAP = {
    "hh-reception": {"role": "reception", "clinics": ["hamburg"]},
    "chain-clinicians": {"role": "clinician", "clinics": ["hamburg", "munich"]},
    "chain-admins": {"role": "admin"},
}
PEOPLE: dict[str, dict[str, Any]] = {
    "rita": {"name": "Rita Reception", "groups": ["hh-reception", "everyone"]},
    "carl": {"name": "Carl Clinician", "groups": ["chain-clinicians"]},
    "eve": {"name": "Eve Outsider", "groups": ["everyone", "marketing"]},
}


def oidc_settings(provider: Provider, **extra: Any) -> AccessSettings:
    return access_settings(
        oidc_issuer=provider.issuer,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET,
        oidc_group_map=GROUP_MAP,
        oidc_provider_name="Chain ID",
        **extra,
    )


@asynccontextmanager
async def browser_like(pg_dsn: str, provider: Provider) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(pg_dsn, oidc_settings(provider)) as http:
        yield http


async def sign_in(
    app: httpx.AsyncClient, login: str, next_path: str = "/journeys"
) -> httpx.Response:
    """The browser's round trip: app → provider's page → the person's button → app."""
    start = await app.get(f"/auth/oidc/login?next={next_path}")
    assert start.status_code == 303, start.text
    authorize = start.headers["location"]
    query = parse_qs(urlparse(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]
    assert query["client_id"] == [CLIENT_ID] and "nonce" in query and "state" in query
    async with httpx.AsyncClient() as outside:  # the provider is a real server
        page = await outside.get(authorize)
        assert page.status_code == 200 and f'value="{login}"' in page.text
        fields = dict(
            re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text)
        )
        back = await outside.post(
            str(httpx.URL(authorize).copy_with(query=None)), data={**fields, "login": login}
        )
    assert back.status_code == 302
    callback = urlparse(back.headers["location"])
    assert callback.path == "/auth/oidc/callback"
    return await app.get(f"{callback.path}?{callback.query}")


async def test_sign_in_through_the_provider_maps_groups_to_role_and_clinics_and_logs_out(
    pg_dsn: str, pg_pool: asyncpg.Pool
) -> None:
    chain = await make_chain(pg_pool)
    with running_provider(PEOPLE) as provider:
        async with browser_like(pg_dsn, provider) as app:
            login_page = (await app.get("/login")).text
            assert "Sign in with Chain ID" in login_page
            done = await sign_in(app, "rita")
            assert done.status_code == 303 and done.headers["location"] == "/journeys", done.text
            assert app.cookies.get(SESSION_COOKIE)
            # The code was exchanged with the client secret and the PKCE verifier.
            (exchange,) = provider.token_requests
            assert exchange["grant_type"] == "authorization_code" and exchange["code_verifier"]
            listed = await app.get("/journeys")
            assert listed.status_code == 200
            assert "Hanna Hamburg" in listed.text and "Max Munich" not in listed.text
            assert "Rita Reception" in listed.text and "(reception)" in listed.text
            assert (await app.get(f"/journeys/{chain.munich_patient}")).status_code == 404
            member = await pg_pool.fetchrow(
                "SELECT id, role, clinics, oidc_subject FROM staff_users WHERE name = $1",
                "Rita Reception",
            )
            assert member is not None
            assert (member["role"], member["clinics"], member["oidc_subject"]) == (
                "reception",
                ["hamburg"],
                "sub-rita",
            )
            via = await pg_pool.fetchval(
                "SELECT via FROM staff_sessions WHERE staff_id = $1", member["id"]
            )
            assert via == "oidc"

            # Logout ends the session here and sends the browser to the provider's logout.
            csrf = CSRF_FIELD.search(listed.text)
            assert csrf is not None
            out = await app.post("/logout", data={"csrf_token": csrf.group(1)})
            assert out.status_code == 303
            end = out.headers["location"]
            assert end.startswith(f"{provider.issuer}/logout?")
            assert parse_qs(urlparse(end).query)["post_logout_redirect_uri"] == [
                "http://testserver/login"
            ]
            async with httpx.AsyncClient() as outside:
                back = await outside.get(end)
            assert back.status_code == 302 and back.headers["location"].endswith("/login")
            assert len(provider.ended_sessions) == 1
            again = await app.get("/journeys")
            assert again.status_code == 303 and again.headers["location"].startswith("/login")


async def test_a_group_without_access_an_expired_token_and_a_forged_state_are_refused(
    pg_dsn: str, pg_pool: asyncpg.Pool
) -> None:
    await make_chain(pg_pool)
    with running_provider(PEOPLE) as provider:
        async with browser_like(pg_dsn, provider) as app:
            refused = await sign_in(app, "eve")
            assert refused.status_code == 403
            assert "not in a group with access" in refused.text
            assert not app.cookies.get(SESSION_COOKIE)
            assert (
                await pg_pool.fetchval(
                    "SELECT count(*) FROM staff_users WHERE oidc_subject = 'sub-eve'"
                )
                == 0
            )

            provider.token_lifetime = -120  # the provider hands out an expired ID token
            expired = await sign_in(app, "carl")
            assert expired.status_code == 401 and "identity token was refused" in expired.text
            assert not app.cookies.get(SESSION_COOKIE)
            provider.token_lifetime = 300

            # A callback whose state is not the one this browser started with.
            start = await app.get("/auth/oidc/login")
            assert start.status_code == 303
            forged = await app.get("/auth/oidc/callback?code=abc&state=not-ours")
            assert forged.status_code == 400
            assert not app.cookies.get(SESSION_COOKIE)

            # Carl signs in; disabled here, his session ends and the provider cannot bring
            # him back.
            ok = await sign_in(app, "carl", "/")
            assert ok.status_code == 303
            assert (await app.get("/")).status_code == 200
            carl = await pg_pool.fetchval(
                "SELECT id FROM staff_users WHERE oidc_subject = 'sub-carl'"
            )
            assert (await store.disable_staff(pg_pool, carl))[:2] == (True, 1)
            assert (await app.get("/")).status_code == 303
            back = await sign_in(app, "carl", "/")
            assert back.status_code == 403 and "disabled" in back.text


async def test_group_changes_at_the_provider_apply_at_the_next_sign_in(
    pg_dsn: str, pg_pool: asyncpg.Pool
) -> None:
    chain = await make_chain(pg_pool)
    with running_provider(PEOPLE) as provider:
        async with browser_like(pg_dsn, provider) as app:
            assert (await sign_in(app, "carl")).status_code == 303
            page = await app.get(f"/journeys/{chain.munich_patient}")
            assert page.status_code == 200
            provider.people["carl"] = {"name": "Carl Clinician", "groups": ["hh-reception"]}
            assert (await sign_in(app, "carl")).status_code == 303
            assert (await app.get(f"/journeys/{chain.munich_patient}")).status_code == 404
            role = await pg_pool.fetchval(
                "SELECT role FROM staff_users WHERE oidc_subject = 'sub-carl'"
            )
            assert role == "reception"


async def test_a_wrong_client_secret_or_an_unreachable_provider_signs_nobody_in(
    pg_dsn: str, pg_pool: asyncpg.Pool
) -> None:
    with running_provider(PEOPLE) as provider:
        wrong = oidc_settings(provider)
        wrong.oidc_client_secret = SecretStr("not-the-secret")
        async with app_client(pg_dsn, wrong) as app:
            refused = await sign_in(app, "carl")
            assert refused.status_code == 401 and "refused the sign-in" in refused.text
            assert not app.cookies.get(SESSION_COOKIE)
        issuer = provider.issuer
    # The provider is gone: the sign-in page says so, nothing breaks.
    gone = access_settings(
        oidc_issuer=issuer, oidc_client_id=CLIENT_ID, oidc_client_secret=CLIENT_SECRET
    )
    async with app_client(pg_dsn, gone) as app:
        r = await app.get("/auth/oidc/login")
        assert r.status_code == 503 and "cannot be reached" in r.text
