"""A real local HTTP server that receives Standard Webhooks, for the outbound webhook tests.

It verifies every request's signature with the ``standardwebhooks`` package (as a clinic's
receiver would), records what it got, and can answer 503 to its first ``fail_first`` requests
(a receiver that is down for a while). ``start()``/``stop()`` run it in a thread on a fixed port,
so a test can also leave a port closed and open it later.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    message_id: str
    payload: dict[str, Any]


@dataclass
class Receiver:
    secret: str
    port: int = field(default_factory=free_port)
    fail_first: int = 0
    received: list[Received] = field(default_factory=list)
    bad_signatures: int = 0
    failed_on_purpose: int = 0
    requests: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def _handle(self, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            self.requests += 1
            try:
                payload = Webhook(self.secret).verify(body, headers)
            except WebhookVerificationError:
                self.bad_signatures += 1
                return 401
            if self.failed_on_purpose < self.fail_first:
                self.failed_on_purpose += 1
                return 503
            self.received.append(Received(headers["webhook-id"], payload))
            return 204

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                code = receiver._handle({k.lower(): v for k, v in self.headers.items()}, body)
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ------------------------------------------------------------ what it saw

    def unique_ids(self) -> set[str]:
        return {r.message_id for r in self.received}

    def duplicates(self) -> int:
        return len(self.received) - len(self.unique_ids())

    def sequences_by_journey(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for r in self.received:
            out.setdefault(r.payload["data"]["journey_id"], []).append(
                r.payload["data"]["sequence"]
            )
        return out

    def types(self) -> list[str]:
        return [r.payload["type"] for r in self.received]

    def dump(self) -> str:
        return json.dumps([r.payload for r in self.received], indent=1, default=str)
