"""The request-body size limit: a pure ASGI middleware answering 413 before any route runs.

A body larger than the limit (``JOURNEY_MAX_BODY_BYTES``, 64 KiB by default; the codec
endpoint, which decodes batches of Temporal payloads, ``JOURNEY_CODEC_MAX_BODY_BYTES``) is
refused with ``413 {"detail": [{"field": "body", "rule": "body_too_large", ...}]}`` whether
it announces its size (``Content-Length``) or streams it (chunked): the middleware reads at
most ``limit + 1`` bytes and hands the route the buffered body. Nothing larger ever reaches
pydantic, PostgreSQL or Temporal (a 3 MB drug list would otherwise exceed Temporal's payload
limit and turn into a 500, a 10 MB field into a misleading 503).
"""

from __future__ import annotations

import json
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodySizeLimit"]

_METHODS_WITH_BODY: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` (``prefix_limits`` overrides it by path
    prefix, e.g. ``{"/codec": 4 MiB}``) with a 413 in the API's error format."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, prefix_limits: dict[str, int] | None = None
    ) -> None:
        """Args:
        app: The wrapped application.
        max_bytes: The default limit in bytes.
        prefix_limits: Larger or smaller limits for paths starting with a prefix.
        """
        self.app = app
        self.max_bytes = max_bytes
        self.prefix_limits = prefix_limits or {}

    def _limit(self, path: str) -> int:
        for prefix, limit in self.prefix_limits.items():
            if path.startswith(prefix):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with its body buffered, or answer 413."""
        if scope["type"] != "http" or scope["method"] not in _METHODS_WITH_BODY:
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(send, limit)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                await _too_large(send, limit)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        buffered: list[Message] = [
            {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        ]

        async def replay() -> Message:
            if buffered:
                return buffered.pop()
            return await receive()  # after the body: waits for the disconnect

        await self.app(scope, replay, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps(
        {
            "detail": [
                {
                    "field": "body",
                    "rule": "body_too_large",
                    "message": f"The request body is larger than {limit} bytes.",
                }
            ]
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
