"""The remote codec server router: the protocol's JSON, staff-only POSTs, and CORS preflight."""

from __future__ import annotations

import base64
import json
from typing import Annotated

import pytest
from fastapi import FastAPI, Header, HTTPException
from fastapi.testclient import TestClient
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.contrib.pydantic import pydantic_data_converter

from api.codec_server import build_codec_router
from worker.codec import ENCRYPTED_ENCODING, KEY_ID_METADATA_KEY, EncryptionCodec, generate_key

UI_ORIGIN = "http://localhost:8233"
STAFF = {"X-Staff-Token": "staff-test-token", "Content-Type": "application/json"}


def fake_require_staff(x_staff_token: Annotated[str | None, Header()] = None) -> str:
    """Stands in for the API's staff dependency: 401 without a token, 403 with a wrong one."""
    if x_staff_token is None:
        raise HTTPException(status_code=401, detail="staff login required")
    if x_staff_token != STAFF["X-Staff-Token"]:
        raise HTTPException(status_code=403, detail="not staff")
    return "staff-1"


def _key() -> bytes:
    return base64.b64decode(generate_key())


@pytest.fixture
def codec() -> EncryptionCodec:
    return EncryptionCodec({"k1": _key()}, "k1")


@pytest.fixture
def client(codec: EncryptionCodec) -> TestClient:
    app = FastAPI()
    app.include_router(
        build_codec_router(lambda: codec, fake_require_staff, allowed_origins=[UI_ORIGIN])
    )
    return TestClient(app)


def _body(*payloads: Payload) -> str:
    """The body exactly as Temporal's tools send it: protobuf JSON of ``Payloads``."""
    return json_format.MessageToJson(Payloads(payloads=payloads))


def _payloads(response_json: object) -> list[Payload]:
    return list(json_format.Parse(json.dumps(response_json), Payloads()).payloads)


def test_round_trip_through_encode_and_decode(client: TestClient) -> None:
    originals = list(pydantic_data_converter.payload_converter.to_payloads(["Jane", {"n": 3}]))
    originals.append(Payload())  # empty data and metadata: omitted fields in protobuf JSON

    encoded = client.post("/codec/encode", content=_body(*originals), headers=STAFF)
    assert encoded.status_code == 200, encoded.text
    encrypted = _payloads(encoded.json())
    assert len(encrypted) == 3
    for payload in encrypted:
        assert payload.metadata["encoding"] == ENCRYPTED_ENCODING
        assert payload.metadata[KEY_ID_METADATA_KEY] == b"k1"
        assert b"Jane" not in payload.data

    decoded = client.post("/codec/decode", content=_body(*encrypted), headers=STAFF)
    assert decoded.status_code == 200, decoded.text
    assert _payloads(decoded.json()) == originals


async def test_decode_reads_what_a_worker_wrote(client: TestClient, codec: EncryptionCodec) -> None:
    written = await codec.encode(pydantic_data_converter.payload_converter.to_payloads(["x"]))
    response = client.post("/codec/decode", content=_body(*written), headers=STAFF)
    assert response.status_code == 200
    decoded = _payloads(response.json())
    assert pydantic_data_converter.payload_converter.from_payloads(decoded, [str]) == ["x"]


def test_accepts_url_safe_unpadded_base64(client: TestClient) -> None:
    data = b"\xfb\xff\xfe"
    body = {
        "payloads": [
            {
                "metadata": {"encoding": base64.urlsafe_b64encode(b"binary/plain").decode()},
                "data": base64.urlsafe_b64encode(data).decode().rstrip("="),
            }
        ]
    }
    response = client.post("/codec/decode", json=body, headers=STAFF)
    assert response.status_code == 200
    assert _payloads(response.json())[0].data == data


@pytest.mark.parametrize("path", ["/codec/encode", "/codec/decode"])
def test_without_staff_credentials_is_401(client: TestClient, path: str) -> None:
    response = client.post(
        path, content=_body(Payload(data=b"x")), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401


@pytest.mark.parametrize("path", ["/codec/encode", "/codec/decode"])
def test_wrong_credentials_is_403(client: TestClient, path: str) -> None:
    response = client.post(path, content=_body(), headers={**STAFF, "X-Staff-Token": "guess"})
    assert response.status_code == 403


def test_unknown_key_id_is_400_naming_the_key(client: TestClient) -> None:
    foreign = Payload(
        metadata={"encoding": ENCRYPTED_ENCODING, KEY_ID_METADATA_KEY: b"k-retired"},
        data=b"\x00" * 40,
    )
    response = client.post("/codec/decode", content=_body(foreign), headers=STAFF)
    assert response.status_code == 400
    assert "k-retired" in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"payloads": [{"data": "not base64!"}]},
        {"payloads": [{"metadata": {"encoding": "%%%"}}]},
        {"payloads": "nope"},
    ],
)
def test_malformed_body_is_422(client: TestClient, body: object) -> None:
    response = client.post("/codec/decode", json=body, headers=STAFF)
    assert response.status_code == 422


@pytest.mark.parametrize("path", ["/codec/encode", "/codec/decode"])
def test_preflight_from_the_ui_origin_needs_no_credentials(client: TestClient, path: str) -> None:
    response = client.options(
        path,
        headers={
            "Origin": UI_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == UI_ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"].split(",")
    assert {"content-type", "x-namespace", "authorization"} <= set(allowed)


def test_preflight_from_another_origin_is_not_allowed(client: TestClient) -> None:
    response = client.options(
        "/codec/decode",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-methods" not in response.headers


def test_post_from_the_ui_origin_carries_cors_headers(client: TestClient) -> None:
    response = client.post(
        "/codec/encode", content=_body(Payload(data=b"x")), headers={**STAFF, "Origin": UI_ORIGIN}
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == UI_ORIGIN


def test_wildcard_origin_is_refused(codec: EncryptionCodec) -> None:
    with pytest.raises(ValueError, match="explicit origins"):
        build_codec_router(lambda: codec, fake_require_staff, allowed_origins=["*"])


def test_posts_are_in_openapi_and_preflight_is_not(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/codec/encode"]) == {"post"}
    assert set(paths["/codec/decode"]) == {"post"}
