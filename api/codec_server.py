"""Temporal's remote codec server protocol, as a FastAPI router for staff.

The Temporal UI (``TEMPORAL_CODEC_ENDPOINT=<api>/codec``) and CLI (``--codec-endpoint``) send
encrypted payloads here to show them in clear to staff, and send clear payloads to be encoded
(e.g. a signal typed in the UI). Both POSTs take and return
``{"payloads": [{"metadata": {name: base64}, "data": base64}]}``, the protobuf JSON form of
``temporalio.api.common.v1.Payloads``.

The browser calls from the UI's origin, so it first sends a CORS preflight (``OPTIONS``, no
credentials); the router answers it for the configured origins only. The POSTs require the
staff dependency; decoded payloads are clinical data and never leave without it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

CODEC_PREFIX = "/codec"
# Headers the UI sends: JSON body, the namespace, and its access token when
# TEMPORAL_CODEC_PASS_ACCESS_TOKEN is on.
ALLOWED_REQUEST_HEADERS = "content-type,x-namespace,authorization"
PREFLIGHT_MAX_AGE_SECONDS = 600


def _b64decode(value: str) -> bytes:
    # Protobuf JSON accepts standard and URL-safe base64, padded or not; so do we.
    text = value.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64") from None


class CodecPayload(BaseModel):
    """One payload in protobuf JSON form: metadata values and data are base64."""

    model_config = ConfigDict(extra="ignore")

    metadata: dict[str, str] = Field(default_factory=dict)
    data: str = ""

    @field_validator("data")
    @classmethod
    def _data_is_base64(cls, value: str) -> str:
        _b64decode(value)
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_is_base64(cls, value: dict[str, str]) -> dict[str, str]:
        for item in value.values():
            _b64decode(item)
        return value

    def to_proto(self) -> Payload:
        """The protobuf payload this JSON stands for."""
        return Payload(
            metadata={name: _b64decode(item) for name, item in self.metadata.items()},
            data=_b64decode(self.data),
        )

    @classmethod
    def from_proto(cls, payload: Payload) -> CodecPayload:
        """The JSON form of a protobuf payload (standard padded base64)."""
        return cls(
            metadata={
                name: base64.b64encode(item).decode("ascii")
                for name, item in payload.metadata.items()
            },
            data=base64.b64encode(payload.data).decode("ascii"),
        )


class CodecPayloads(BaseModel):
    """Request and response body of ``/codec/encode`` and ``/codec/decode``."""

    model_config = ConfigDict(extra="ignore")

    payloads: list[CodecPayload] = Field(default_factory=list)


def build_codec_router(
    get_codec: Callable[[], PayloadCodec],
    require_staff: Callable[..., Any],
    *,
    allowed_origins: Collection[str] = (),
) -> APIRouter:
    """A router implementing Temporal's remote codec protocol under ``/codec``.

    Args:
        get_codec: Returns the codec to apply (called per request, so tests and key rotation
            can swap it); typically the one built from ``JOURNEY_CODEC_KEYS``.
        require_staff: A FastAPI dependency that raises 401/403 for anyone but staff; it guards
            both POSTs (the preflight carries no credentials and is not guarded).
        allowed_origins: Browser origins allowed to call (the Temporal UI's public origin, e.g.
            ``https://temporal-ui.clinic.example``; ``http://localhost:8233`` in development).
            ``"*"`` is refused because responses carry credentials.

    Guarantees: ``POST /codec/encode`` and ``POST /codec/decode`` return as many payloads as
    they were sent, in order; ``OPTIONS`` on both answers the CORS preflight.

    Refuses: a body that is not the protocol's JSON or holds bad base64 (422); a payload the
    codec cannot decode, e.g. an unknown key id (400, with the codec's message, which names
    key ids only); a caller ``require_staff`` refuses (its 401/403).

    Raises:
        ValueError: ``allowed_origins`` contains ``"*"``.
    """
    origins = frozenset(allowed_origins)
    if "*" in origins:
        raise ValueError("the codec server needs explicit origins: '*' cannot carry credentials")
    router = APIRouter(prefix=CODEC_PREFIX, tags=["codec"])

    def cors_headers(request: Request) -> dict[str, str]:
        origin = request.headers.get("origin")
        if origin is None or origin not in origins:
            return {"Vary": "Origin"}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }

    async def apply(
        transform: Callable[[Sequence[Payload]], Awaitable[list[Payload]]],
        body: CodecPayloads,
        request: Request,
        response: Response,
    ) -> CodecPayloads:
        try:
            result = await transform([payload.to_proto() for payload in body.payloads])
        except ValueError as err:
            raise HTTPException(
                status_code=status.HTTP_400_BAD_REQUEST,
                detail=str(err),
                headers=cors_headers(request),
            ) from None
        response.headers.update(cors_headers(request))
        return CodecPayloads(payloads=[CodecPayload.from_proto(payload) for payload in result])

    staff = [Depends(require_staff)]

    @router.post("/encode", dependencies=staff, response_model=CodecPayloads)
    async def encode_payloads(
        body: CodecPayloads, request: Request, response: Response
    ) -> CodecPayloads:
        """Encode (encrypt) payloads, as the workers would before sending them to Temporal."""
        return await apply(get_codec().encode, body, request, response)

    @router.post("/decode", dependencies=staff, response_model=CodecPayloads)
    async def decode_payloads(
        body: CodecPayloads, request: Request, response: Response
    ) -> CodecPayloads:
        """Decode (decrypt) payloads from Temporal's history for display to staff."""
        return await apply(get_codec().decode, body, request, response)

    async def preflight(request: Request) -> Response:
        headers = cors_headers(request)
        if request.headers.get("origin") in origins:
            headers |= {
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": ALLOWED_REQUEST_HEADERS,
                "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_SECONDS),
            }
        return Response(status_code=status.HTTP_204_NO_CONTENT, headers=headers)

    for path in ("/encode", "/decode"):
        router.add_api_route(
            path,
            preflight,
            methods=["OPTIONS"],
            include_in_schema=False,
            name=f"codec_preflight_{path.strip('/')}",
        )
    return router
