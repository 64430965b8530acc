"""A small fake booking system: a real HTTP server (Starlette under uvicorn, in the test's event
loop) that receives our outbound webhooks (verifying their Standard Webhooks signature, as a
clinic's booking system would) and keeps each patient's session windows; and a client side that
sends appointment events back to our API, signed with its own secret, over HTTP.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.booking.generic import GenericAdapter
from tests.messaging_fakes import free_port, serve_asgi


@dataclass
class Sent:
    """One appointment event sent to our API, and its answer."""

    webhook_id: str
    body: dict[str, Any]
    status_code: int
    answer: dict[str, Any]


@dataclass
class FakeBookingSystem:
    api_url: str
    clinic_id: str
    port: int = field(default_factory=free_port)
    inbound_secret: str = ""
    """The secret it signs its events with (ours: the registration's ``inbound_secret``)."""
    outbound_secret: str = ""
    """The secret our webhooks to it are signed with (the registration's ``outbound_secret``)."""
    received: list[dict[str, Any]] = field(default_factory=list)
    windows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    bad_signatures: int = 0
    sent: list[Sent] = field(default_factory=list)
    adapter: GenericAdapter = field(default_factory=GenericAdapter)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/pore-journey/webhooks"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------ receiving our webhooks

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            payload = Webhook(self.outbound_secret).verify(body, headers)
        except WebhookVerificationError:
            self.bad_signatures += 1
            return Response(status_code=401)
        self.received.append(payload)
        if payload.get("type") == "journey.session_window":
            window = self.adapter.window_payload(payload)
            self.windows.setdefault(window["patient_id"], []).append(window)
        return Response(status_code=204)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/pore-journey/webhooks", self._hook, methods=["POST"])])

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FakeBookingSystem]:
        async with serve_asgi(self.app(), self.port):
            yield self

    def types(self) -> list[str]:
        return [str(p.get("type")) for p in self.received]

    # ------------------------------------------------------------ sending appointment events

    def sign(
        self, webhook_id: str, body: bytes, secret: str | None = None, at: datetime | None = None
    ) -> dict[str, str]:
        when = at or datetime.now(UTC)
        return {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": Webhook(secret or self.inbound_secret).sign(
                webhook_id, when, body.decode()
            ),
        }

    async def post(
        self, body: bytes, headers: dict[str, str], clinic_id: str | None = None
    ) -> httpx.Response:
        async with httpx.AsyncClient(timeout=30) as http:
            return await http.post(
                f"{self.api_url}/api/booking/{clinic_id or self.clinic_id}/events",
                content=body,
                headers=headers,
            )

    async def send(
        self,
        kind: str,
        *,
        webhook_id: str | None = None,
        secret: str | None = None,
        **data: Any,
    ) -> Sent:
        """Send ``appointment.<kind>`` with ``data`` (datetimes as ISO strings), signed."""
        event_id = webhook_id or f"msg_{uuid.uuid4().hex}"
        body = {
            "type": f"appointment.{kind}",
            "timestamp": datetime.now(UTC).isoformat(),
            "data": {
                k: v.isoformat() if isinstance(v, datetime) else v
                for k, v in data.items()
                if v is not None
            },
        }
        raw = json.dumps(body).encode()
        r = await self.post(raw, self.sign(event_id, raw, secret))
        sent = Sent(event_id, body, r.status_code, r.json() if r.content else {})
        self.sent.append(sent)
        return sent
