"""The codec endpoint as mounted by ``create_app``: staff only, a clear 503 without keys, the
CORS origins from ``JOURNEY_CODEC_CORS_ORIGINS``."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from fastapi.testclient import TestClient

from activities.repository import StaffRow
from api.access.enforce import enforce
from api.deps import get_codec_staff
from api.main import create_app
from tests.test_api import make_settings
from worker.codec import generate_key

CLEAR = {
    "metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
    "data": base64.b64encode(b'{"patient_id":"p_x"}').decode(),
}


def _client(**settings: object) -> TestClient:
    app = create_app(make_settings(**settings))

    async def staff() -> StaffRow:
        # Stands in for a valid bearer token: the lifespan (and its database) is not started.
        return StaffRow(
            id=1, name="Ada", role="admin", created_at=datetime.now(UTC), disabled_at=None
        )

    app.dependency_overrides[get_codec_staff] = staff
    # The app-wide permission check (issue 16) needs the database: it stands aside here too;
    # tests/test_access_routes.py proves the codec needs codec.use.
    app.dependency_overrides[enforce] = _admitted
    return TestClient(app)


async def _admitted() -> None:
    return None


def test_without_keys_the_codec_answers_503_with_the_reason() -> None:
    r = _client().post("/codec/decode", json={"payloads": [CLEAR]})
    assert r.status_code == 503
    assert r.json()["detail"][0]["rule"] == "codec_not_configured"
    assert "JOURNEY_CODEC_KEYS" in r.json()["detail"][0]["message"]


def test_with_keys_payloads_round_trip_and_cors_follows_the_setting() -> None:
    http = _client(
        journey_codec_keys=f"k1:{generate_key()}",
        journey_codec_cors_origins=["https://temporal-ui.clinic.example"],
    )
    encoded = http.post("/codec/encode", json={"payloads": [CLEAR]}).json()["payloads"]
    assert base64.b64decode(encoded[0]["metadata"]["encoding"]) == b"binary/encrypted"
    decoded = http.post("/codec/decode", json={"payloads": encoded}).json()["payloads"]
    assert decoded == [CLEAR]
    preflight = {"Access-Control-Request-Method": "POST"}
    allowed = http.options(
        "/codec/decode", headers={**preflight, "Origin": "https://temporal-ui.clinic.example"}
    )
    assert allowed.headers["access-control-allow-origin"] == "https://temporal-ui.clinic.example"
    other = http.options("/codec/decode", headers={**preflight, "Origin": "http://localhost:8233"})
    assert "access-control-allow-origin" not in other.headers


def test_default_origins_are_the_local_temporal_ui() -> None:
    assert make_settings().journey_codec_cors_origins == [
        "http://127.0.0.1:8233",
        "http://localhost:8233",
    ]


async def test_dashboard_login_opens_the_codec_for_the_temporal_ui(pg_dsn: str) -> None:
    """The Temporal UI in the staff member's browser sends the dashboard session cookie."""
    import re

    import asyncpg

    from activities.repository import create_staff_user
    from tests.test_api import serve

    pool = await asyncpg.connect(pg_dsn)
    try:
        _, token = await create_staff_user(pool, "Ada", "admin")  # type: ignore[arg-type]
    finally:
        await pool.close()
    app = create_app(
        make_settings(
            database_url=pg_dsn,
            temporal_address="127.0.0.1:9",  # no Temporal needed for the codec
            journey_codec_keys=f"k1:{generate_key()}",
        )
    )
    async with serve(app) as http:
        assert (await http.post("/codec/encode", json={"payloads": [CLEAR]})).status_code == 401
        form = (await http.get("/login")).text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert csrf is not None
        r = await http.post(
            "/login", data={"token": token, "csrf_token": csrf.group(1), "next": "/"}
        )
        assert r.status_code in (302, 303)
        encoded = await http.post("/codec/encode", json={"payloads": [CLEAR]})
        assert encoded.status_code == 200
        decoded = await http.post("/codec/decode", json=encoded.json())
        assert decoded.json()["payloads"] == [CLEAR]
        # A bad bearer token is not rescued by the cookie.
        bad = await http.post(
            "/codec/decode", json=encoded.json(), headers={"Authorization": "Bearer nope"}
        )
        assert bad.status_code == 401
