"""A small OpenID Connect provider for the tests: a real HTTP server (``ThreadingHTTPServer``
on 127.0.0.1) that issues RS256-signed ID tokens, with discovery, JWKS, the authorization
endpoint (a sign-in page with one button per known person), the token endpoint (client secret
by HTTP Basic, PKCE S256 checked, codes used once) and an end-session endpoint.

Knobs for the tests: ``people`` (login → claims, e.g. groups), ``token_lifetime`` (seconds; a
negative one issues an already expired token), ``ended_sessions`` (what the end-session
endpoint saw) and ``token_requests`` (what the token endpoint received).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

from joserfc import jwt
from joserfc.jwk import RSAKey

CLIENT_ID = "journey-dashboard"
CLIENT_SECRET = "provider-test-secret"


@dataclass
class Provider:
    issuer: str
    key: RSAKey
    people: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_lifetime: int = 300
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    ended_sessions: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "end_session_endpoint": f"{self.issuer}/logout",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        }

    def id_token(self, login: str, nonce: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": f"sub-{login}",
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + self.token_lifetime,
            "nonce": nonce,
            "preferred_username": login,
            **self.people[login],
        }
        return jwt.encode({"alg": "RS256", "kid": self.key.kid}, claims, self.key)


def _handler(provider: Provider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(
            self, status: int, body: str, ctype: str, headers: dict[str, str] | None = None
        ) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _json(self, status: int, body: Any) -> None:
            self._send(status, json.dumps(body), "application/json")

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/.well-known/openid-configuration":
                return self._json(200, provider.discovery())
            if url.path == "/jwks":
                return self._json(200, {"keys": [provider.key.as_dict(private=False)]})
            if url.path == "/authorize":
                if query.get("client_id") != CLIENT_ID or query.get("response_type") != "code":
                    return self._send(400, "bad client or response type", "text/plain")
                if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
                    return self._send(400, "PKCE S256 required", "text/plain")
                hidden = "".join(
                    f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                    for k, v in query.items()
                )
                buttons = "".join(
                    f'<button type="submit" name="login" value="{html.escape(p)}">'
                    f"Continue as {html.escape(p)}</button>"
                    for p in provider.people
                )
                page = (
                    "<!doctype html><title>Test identity provider</title>"
                    "<h1>Test identity provider</h1>"
                    f'<form method="post" action="/authorize">{hidden}{buttons}</form>'
                )
                return self._send(200, page, "text/html; charset=utf-8")
            if url.path == "/logout":
                provider.ended_sessions.append(query)
                back = query.get("post_logout_redirect_uri")
                if back:
                    return self._send(302, "", "text/plain", {"Location": back})
                return self._send(200, "signed out", "text/plain")
            return self._send(404, "not found", "text/plain")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            url = urlparse(self.path)
            if url.path == "/authorize":
                login = form.get("login", "")
                if login not in provider.people:
                    return self._send(400, "unknown person", "text/plain")
                code = secrets.token_urlsafe(16)
                with provider.lock:
                    provider.codes[code] = {
                        "login": login,
                        "nonce": form.get("nonce", ""),
                        "challenge": form.get("code_challenge", ""),
                        "redirect_uri": form.get("redirect_uri", ""),
                    }
                target = (
                    form["redirect_uri"]
                    + "?"
                    + urlencode({"code": code, "state": form.get("state", "")})
                )
                return self._send(302, "", "text/plain", {"Location": target})
            if url.path == "/token":
                provider.token_requests.append(form)
                basic = self.headers.get("Authorization", "")
                expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
                if basic != f"Basic {expected}":
                    return self._json(401, {"error": "invalid_client"})
                with provider.lock:
                    grant = provider.codes.pop(form.get("code", ""), None)
                if grant is None or form.get("redirect_uri") != grant["redirect_uri"]:
                    return self._json(400, {"error": "invalid_grant"})
                verifier = form.get("code_verifier", "")
                digest = hashlib.sha256(verifier.encode()).digest()
                challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
                if challenge != grant["challenge"]:
                    return self._json(400, {"error": "invalid_grant", "error_description": "PKCE"})
                return self._json(
                    200,
                    {
                        "access_token": secrets.token_urlsafe(16),
                        "token_type": "Bearer",
                        "expires_in": 300,
                        "id_token": provider.id_token(grant["login"], grant["nonce"]),
                    },
                )
            return self._send(404, "not found", "text/plain")

    return Handler


@contextmanager
def running_provider(people: dict[str, dict[str, Any]]) -> Iterator[Provider]:
    """The provider on a free port, stopped afterwards."""
    key = RSAKey.generate_key(2048, parameters={"kid": "test-key", "use": "sig", "alg": "RS256"})
    provider = Provider(issuer="", key=key, people=people)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(provider))
    provider.issuer = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
