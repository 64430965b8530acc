"""OpenID Connect sign-in for the dashboard (authorization code + PKCE, with authlib).

``GET /auth/oidc/login?next=/…`` reads the provider's discovery document (cached), makes a
state, a nonce and a PKCE verifier, keeps them in a signed, HttpOnly, 10-minute cookie
(``pj_oidc``) and sends the browser to the provider. ``GET /auth/oidc/callback`` checks the
state against that cookie, exchanges the code with the verifier and the client secret
(authlib's ``AsyncOAuth2Client``), verifies the ID token (signature by the provider's JWKS,
issuer, audience, expiry, nonce; ``joserfc``), maps its groups claim to a role and clinics
(``JOURNEY_OIDC_GROUP_MAP``; no mapped group: refused), creates or updates the member and
starts a dashboard session like the token login (``via = 'oidc'``). Logout ends the session
here and, when the provider has an ``end_session_endpoint``, ends it there too.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
from authlib.common.errors import AuthlibBaseError
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from api.access import store
from api.access.config import AccessSettings
from worker.settings import Settings

__all__ = ["OIDC_COOKIE", "logout_location", "router"]

OIDC_COOKIE = "pj_oidc"
_FLOW_SALT = "journey.oidc-flow.v1"
_FLOW_MAX_AGE = 600
_DISCOVERY_TTL = 300.0

router = APIRouter(include_in_schema=False)


class OidcError(Exception):
    """The sign-in cannot go on; ``message`` is shown on the sign-in page."""


def _access(request: Request) -> AccessSettings:
    access: AccessSettings = request.app.state.access
    return access


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _signer(request: Request) -> URLSafeTimedSerializer:
    secret = _settings(request).journey_patient_link_secret.get_secret_value()
    return URLSafeTimedSerializer(secret, salt=_FLOW_SALT)


def _redirect_uri(request: Request) -> str:
    return _settings(request).journey_public_url.rstrip("/") + "/auth/oidc/callback"


async def _metadata(request: Request) -> dict[str, Any]:
    """The provider's discovery document (cached for a few minutes per app)."""
    access = _access(request)
    cached: tuple[float, dict[str, Any]] | None = getattr(request.app.state, "oidc_meta", None)
    if cached is not None and time.monotonic() - cached[0] < _DISCOVERY_TTL:
        return cached[1]
    issuer = (access.oidc_issuer or "").rstrip("/")
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(issuer + "/.well-known/openid-configuration")
        r.raise_for_status()
        meta: dict[str, Any] = r.json()
        jwks = await http.get(str(meta["jwks_uri"]))
        jwks.raise_for_status()
        meta["_jwks"] = jwks.json()
    if str(meta.get("issuer", "")).rstrip("/") != issuer:
        raise OidcError("The provider's discovery document names another issuer.")
    request.app.state.oidc_meta = (time.monotonic(), meta)
    return meta


def _client(request: Request, meta: dict[str, Any] | None = None) -> AsyncOAuth2Client:
    access = _access(request)
    secret = access.oidc_client_secret
    return AsyncOAuth2Client(
        client_id=access.oidc_client_id,
        client_secret=secret.get_secret_value() if secret is not None else None,
        scope=access.oidc_scopes,
        redirect_uri=_redirect_uri(request),
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic" if secret else "none",
        timeout=10,
    )


def _refusal(request: Request, message: str, status_code: int) -> Response:
    from api.web.routes import login_page  # the pages import api.access

    return login_page(request, error=message, status_code=status_code)


def _safe_next(value: str | None) -> str:
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


@router.get("/auth/oidc/login")
async def oidc_login(request: Request, next: str | None = None) -> Response:
    """Start the sign-in at the provider (authorization code + PKCE)."""
    if not _access(request).oidc_enabled:
        return _refusal(request, "Sign-in through a provider is not configured.", 404)
    verifier = generate_token(64)
    nonce = generate_token(32)
    try:
        meta = await _metadata(request)
        client = _client(request)
        async with client:
            # authlib refuses an authorization endpoint that is not https (loopback aside).
            url, state = client.create_authorization_url(
                str(meta["authorization_endpoint"]), code_verifier=verifier, nonce=nonce
            )
    except (httpx.HTTPError, OidcError, KeyError, ValueError, AuthlibBaseError):
        return _refusal(request, "The sign-in provider cannot be reached just now.", 503)
    flow = _signer(request).dumps({"s": state, "n": nonce, "v": verifier, "next": _safe_next(next)})
    response = RedirectResponse(str(url), status_code=303)
    response.set_cookie(
        OIDC_COOKIE,
        flow,
        max_age=_FLOW_MAX_AGE,
        httponly=True,
        samesite="lax",  # the provider's redirect back is a top-level navigation
        secure=_https(request),
        path="/auth/oidc/",
    )
    return response


def _https(request: Request) -> bool:
    settings = _settings(request)
    return (
        request.url.scheme == "https"
        or settings.journey_public_url.startswith("https://")
        or settings.journey_env == "production"
    )


async def _verified_claims(
    request: Request, meta: dict[str, Any], id_token: str, nonce: str
) -> dict[str, Any]:
    access = _access(request)
    keys = KeySet.import_key_set(meta["_jwks"])
    algorithms = list(meta.get("id_token_signing_alg_values_supported") or ["RS256"])
    token = jwt.decode(id_token, keys, algorithms=[a for a in algorithms if a != "none"])
    claims: dict[str, Any] = dict(token.claims)
    registry = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": str(meta["issuer"])},
        aud={"essential": True, "value": access.oidc_client_id or ""},
        sub={"essential": True},
        exp={"essential": True},
        nonce={"essential": True, "value": nonce},
        leeway=30,
    )
    registry.validate(claims)
    return claims


@router.get("/auth/oidc/callback")
async def oidc_callback(
    request: Request, code: str | None = None, state: str | None = None, error: str | None = None
) -> Response:
    """The provider's answer: check it, map the groups, start the session."""
    access = _access(request)
    if not access.oidc_enabled:
        return _refusal(request, "Sign-in through a provider is not configured.", 404)
    try:
        flow = _signer(request).loads(request.cookies.get(OIDC_COOKIE, ""), max_age=_FLOW_MAX_AGE)
    except BadSignature:
        return _refusal(
            request, "The sign-in took too long or was not started here. Try again.", 400
        )
    if error is not None or not code or not state or state != flow.get("s"):
        return _refusal(request, "The provider did not sign you in. Try again.", 400)
    try:
        meta = await _metadata(request)
        client = _client(request)
        async with client:
            tokens = await client.fetch_token(
                str(meta["token_endpoint"]),
                grant_type="authorization_code",
                code=code,
                code_verifier=flow["v"],
            )
        claims = await _verified_claims(request, meta, str(tokens["id_token"]), str(flow["n"]))
    except JoseError as err:
        return _refusal(request, f"The provider's identity token was refused ({err.error}).", 401)
    except (httpx.HTTPError, OidcError, KeyError, ValueError, TypeError, AuthlibBaseError):
        return _refusal(request, "The provider refused the sign-in or cannot be reached.", 401)
    groups_value = claims.get(access.oidc_groups_claim) or []
    groups = [str(g) for g in groups_value] if isinstance(groups_value, list) else []
    grant = access.grant_for(groups)
    if grant is None:
        return _refusal(
            request,
            "Your account is not in a group with access to the journey dashboard. "
            "Ask your administrator.",
            403,
        )
    pool: asyncpg.Pool = request.app.state.pool
    name = str(claims.get("name") or claims.get("preferred_username") or claims.get("email") or "")
    staff = await store.upsert_oidc_member(
        pool,
        issuer=str(meta["issuer"]),
        subject=str(claims["sub"]),
        name=name or f"member {claims['sub']}"[:200],
        role=grant.role,
        clinics=grant.clinics,
    )
    if staff is None:
        return _refusal(request, "Your access to the dashboard has been disabled.", 403)
    from api.web.routes import start_session  # the pages import api.access

    response = await start_session(request, staff.id, str(flow.get("next") or "/"), via="oidc")
    response.delete_cookie(OIDC_COOKIE, path="/auth/oidc/")
    return response


async def logout_location(request: Request, via: str | None) -> str:
    """Where the browser goes after logout: the provider's end-session endpoint for a member
    who signed in there (so the next sign-in asks again), else the sign-in page."""
    access = _access(request)
    if via != "oidc" or not access.oidc_enabled:
        return "/login"
    try:
        meta = await _metadata(request)
    except (httpx.HTTPError, OidcError, KeyError, ValueError):
        return "/login"
    end = meta.get("end_session_endpoint")
    if not end:
        return "/login"
    back = _settings(request).journey_public_url.rstrip("/") + "/login"
    query = urlencode({"client_id": access.oidc_client_id or "", "post_logout_redirect_uri": back})
    return f"{end}?{query}"
