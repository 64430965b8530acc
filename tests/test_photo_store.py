"""The photo stores (api/photos.py): SigV4 against AWS's published example, the S3 adapter
against a real local HTTP server that checks every request's signature and payload hash (an
S3-compatible fake: PUT and GET of objects, path-style), and an upload through the API with
``JOURNEY_PHOTO_STORE=s3``; the local content-addressed folder."""

from __future__ import annotations

import asyncio
import hashlib
import io
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from PIL import Image, PngImagePlugin
from pydantic import SecretStr

from api.photos import (
    LocalPhotoStore,
    PhotoRefused,
    PhotoSettings,
    S3PhotoStore,
    clean_photo,
    sigv4_headers,
)
from tests.test_api import FAST_SCALE, Stack, enrol, stack
from tests.test_clinical_api import gps_jpeg, in_read_model

__all__ = ["stack"]

KEY_ID, SECRET, REGION, BUCKET = "AKIDTEST", "test-secret-key", "eu-test-1", "photos-bucket"
EMPTY = hashlib.sha256(b"").hexdigest()


def test_png_metadata_is_dropped_and_orientation_applied() -> None:
    img = Image.new("RGB", (30, 10), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    exif.get_ifd(0x8825)[2] = (48.0, 51.0, 30.0)
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "taken at 12 Example Street")
    out = io.BytesIO()
    img.save(out, "PNG", exif=exif, pnginfo=text, icc_profile=b"icc" * 20)
    cleaned = clean_photo(
        out.getvalue(), declared_type="image/png", max_bytes=10**6, max_pixels=10**6
    )
    again = Image.open(io.BytesIO(cleaned.data))
    assert again.info == {} and not again.getexif()
    assert b"Example Street" not in cleaned.data and b"icc" * 20 not in cleaned.data
    assert (cleaned.width, cleaned.height) == (10, 30) == again.size  # upright
    with pytest.raises(PhotoRefused, match="pixels"):
        clean_photo(out.getvalue(), declared_type=None, max_bytes=10**6, max_pixels=100)


def test_sigv4_matches_the_aws_example() -> None:
    # docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html, "GET Object".
    headers = sigv4_headers(
        "GET",
        "https://examplebucket.s3.amazonaws.com/test.txt",
        EMPTY,
        access_key_id="AKIAIOSFODNN7EXAMPLE",
        secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        region="us-east-1",
        now=datetime(2013, 5, 24, tzinfo=UTC),
        extra={"Range": "bytes=0-9"},
    )
    assert headers["authorization"].endswith(
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


class FakeS3:
    """A minimal S3-compatible server: path-style PUT/GET of objects, every request's SigV4
    signature and ``x-amz-content-sha256`` checked (403 otherwise)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.refused = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        status, payload = self.handle(scope["method"], scope["path"], headers, body)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": payload})

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        claimed = headers.get("x-amz-content-sha256", "")
        if claimed != hashlib.sha256(body).hexdigest():
            self.refused += 1
            return 400, b"XAmzContentSHA256Mismatch"
        now = datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        signed = headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
        extra = {
            n: headers[n] for n in signed if n not in ("host", "x-amz-content-sha256", "x-amz-date")
        }
        expected = sigv4_headers(
            method,
            f"http://{headers['host']}{path}",
            claimed,
            access_key_id=KEY_ID,
            secret_access_key=SECRET,
            region=REGION,
            now=now,
            extra=extra,
        )
        if expected["authorization"] != headers["authorization"]:
            self.refused += 1
            return 403, b"SignatureDoesNotMatch"
        if method == "PUT":
            self.objects[path] = body
            return 200, b""
        if method == "GET":
            found = self.objects.get(path)
            return (200, found) if found is not None else (404, b"NoSuchKey")
        return 405, b""


@pytest.fixture
async def fake_s3() -> AsyncIterator[tuple[FakeS3, str]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    app = FakeS3()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    for _ in range(500):  # up to ~5 s for the server to listen
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        yield app, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


def s3_settings(endpoint: str, secret: str = SECRET) -> PhotoSettings:
    return PhotoSettings(
        store="s3",
        s3_endpoint=endpoint,
        s3_bucket=BUCKET,
        s3_region=REGION,
        s3_access_key_id=KEY_ID,
        s3_secret_access_key=SecretStr(secret),
    )


async def test_s3_store_round_trip_and_refusals(fake_s3: tuple[FakeS3, str]) -> None:
    server, endpoint = fake_s3
    store = S3PhotoStore(s3_settings(endpoint))
    data = b"\xff\xd8 a photo"
    digest = hashlib.sha256(data).hexdigest()
    await store.put(digest, data, "image/jpeg")
    assert server.objects == {f"/{BUCKET}/photos/{digest}": data}
    assert await store.get(digest) == data
    with pytest.raises(FileNotFoundError):
        await store.get("0" * 64)
    with pytest.raises(ValueError, match="does not match"):
        await store.put("0" * 64, data, "image/jpeg")
    # A wrong secret is refused by the server (the signature is really checked).
    wrong = S3PhotoStore(s3_settings(endpoint, secret="not-the-secret"))
    with pytest.raises(Exception, match="403"):
        await wrong.get(digest)
    assert server.refused == 1


async def test_local_store_is_content_addressed(tmp_path: Path) -> None:
    store = LocalPhotoStore(tmp_path)
    data = b"pixels"
    digest = hashlib.sha256(data).hexdigest()
    await store.put(digest, data, "image/png")
    await store.put(digest, data, "image/png")  # a repeat is a no-op
    assert (tmp_path / digest[:2] / digest[2:4] / digest).read_bytes() == data
    assert await store.get(digest) == data
    with pytest.raises(ValueError):
        store.path_of("../../etc/passwd")


@pytest.mark.timeout(60)
async def test_upload_through_the_api_to_s3(
    stack: Stack, fake_s3: tuple[FakeS3, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, endpoint = fake_s3
    for name, value in {
        "STORE": "s3",
        "S3_ENDPOINT": endpoint,
        "S3_BUCKET": BUCKET,
        "S3_REGION": REGION,
        "S3_ACCESS_KEY_ID": KEY_ID,
        "S3_SECRET_ACCESS_KEY": SECRET,
    }.items():
        monkeypatch.setenv(f"JOURNEY_PHOTO_{name}", value)
    created = await enrol(stack, clinic_id="fast", time_scale=FAST_SCALE)
    pid = created["patient_id"]
    await in_read_model(stack, pid)
    r = await stack.http.post(
        f"/api/photos/{pid}",
        files={"file": ("b.jpg", gps_jpeg(), "image/jpeg")},
        data={"kind": "baseline"},
        headers=stack.auth(),
    )
    assert r.status_code == 201, r.text
    photo = r.json()
    assert photo["store"] == "s3"
    assert f"/{BUCKET}/photos/{photo['sha256']}" in server.objects
    r = await stack.http.get(photo["url"], headers=stack.auth())
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == photo["sha256"]
