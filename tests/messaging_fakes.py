"""Real local servers for the messaging tests (issue 18): a Twilio-compatible SMS provider
(Starlette under uvicorn, in the test's event loop) and an SMTP server (aiosmtpd, in its own
thread). Neither knows our code: the provider signs its status callbacks the provider's way,
written out here from its documentation, not with the API's own function.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import httpx
import uvicorn
from aiosmtpd.controller import Controller
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def serve_asgi(app: Any, port: int) -> AsyncIterator[None]:
    """Serve ``app`` with uvicorn on ``port`` in this event loop (lifespan included)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                assert not task.done(), "uvicorn did not start"
                await asyncio.sleep(0.01)
        yield
    finally:
        server.should_exit = True
        await task


@dataclass
class SentSms:
    sid: str
    to: str
    sender: str
    body: str
    status_callback: str | None


@dataclass
class FakeSmsProvider:
    """``POST /2010-04-01/Accounts/{sid}/Messages.json`` with basic auth; honours the
    ``Idempotency-Key`` header (a repeat answers the first message and sends nothing)."""

    account: str = "AC" + "0" * 32
    token: str = "provider-auth-token-for-tests"
    port: int = field(default_factory=free_port)
    invalid_numbers: set[str] = field(default_factory=set)
    lose_responses: int = 0  # accept the message, then answer 503 (a response lost in transit)
    sent: list[SentSms] = field(default_factory=list)
    requests: int = 0
    _by_key: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(
                    "/2010-04-01/Accounts/{account}/Messages.json",
                    self._create,
                    methods=["POST"],
                )
            ]
        )

    async def _create(self, request: Request) -> JSONResponse:
        self.requests += 1
        expected = "Basic " + base64.b64encode(f"{self.account}:{self.token}".encode()).decode()
        if (
            request.path_params["account"] != self.account
            or request.headers.get("authorization") != expected
        ):
            return JSONResponse({"code": 20003, "message": "Authenticate"}, 401)
        form = {k: str(v) for k, v in (await request.form()).items()}
        key = request.headers.get("idempotency-key")
        if key and key in self._by_key:
            return JSONResponse(self._by_key[key], 201)
        if form["To"] in self.invalid_numbers:
            return JSONResponse(
                {"code": 21211, "message": "The 'To' number is not a valid phone number."}, 400
            )
        sid = "SM" + uuid.uuid4().hex
        self.sent.append(
            SentSms(sid, form["To"], form.get("From", ""), form["Body"], form.get("StatusCallback"))
        )
        answer = {"sid": sid, "status": "queued", "to": form["To"], "body": form["Body"]}
        if key:
            self._by_key[key] = answer
        if self.lose_responses > 0:
            self.lose_responses -= 1
            return JSONResponse({"code": 20500, "message": "Internal error"}, 503)
        return JSONResponse(answer, 201)

    def signature(self, url: str, params: dict[str, str]) -> str:
        """The provider's request signature: HMAC-SHA1 over the URL and the sorted fields."""
        payload = url + "".join(f"{k}{params[k]}" for k in sorted(params))
        mac = hmac.new(self.token.encode(), payload.encode(), hashlib.sha1)
        return base64.b64encode(mac.digest()).decode()

    async def report(
        self, sid: str, status: str, error_code: str | None = None, *, sign_with: str | None = None
    ) -> httpx.Response:
        """Post a status callback for ``sid`` to the URL the message named, signed."""
        message = next(m for m in self.sent if m.sid == sid)
        assert message.status_callback, "the message named no StatusCallback"
        params = {"MessageSid": sid, "MessageStatus": status, "AccountSid": self.account}
        if error_code:
            params["ErrorCode"] = error_code
        signature = self.signature(message.status_callback, params)
        if sign_with is not None:
            signature = sign_with
        async with httpx.AsyncClient() as client:
            return await client.post(
                message.status_callback, data=params, headers={"X-Twilio-Signature": signature}
            )

    async def send_inbound(
        self, url: str, sender: str, body: str, *, sid: str | None = None, to: str = "+15559990000"
    ) -> httpx.Response:
        """A patient's SMS to the clinic's number, posted signed to the inbound webhook ``url``
        (the provider's form fields); ``sid`` repeats a message (a provider retry)."""
        params = {
            "MessageSid": sid or "SM" + uuid.uuid4().hex,
            "AccountSid": self.account,
            "From": sender,
            "To": to,
            "Body": body,
            "NumMedia": "0",
        }
        async with httpx.AsyncClient() as client:
            return await client.post(
                url, data=params, headers={"X-Twilio-Signature": self.signature(url, params)}
            )


class _Handler:
    def __init__(self, server: LocalSmtpServer) -> None:
        self.server = server

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.server.refused:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.server.received.append(parsed)
        return "250 Message accepted for delivery"


@dataclass
class LocalSmtpServer:
    """aiosmtpd on a free port; ``refused`` recipients are answered 550."""

    port: int = field(default_factory=free_port)
    refused: set[str] = field(default_factory=set)
    received: list[EmailMessage] = field(default_factory=list)
    _controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
