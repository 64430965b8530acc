"""The clinical record through the HTTP API against the real stack (Temporal dev server, a worker
with the real activities, PostgreSQL): the consent gate (no booking without consent, a new
required version asks again, a withdrawal pauses), photo uploads (limits, EXIF stripped, every
view in the audit log) and the patient's satisfaction (issue 19)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from activities import repository
from tests.test_api import FAST_SCALE, Stack, enrol, eventually, stack
from workflows.protocol import ClinicProtocol, ClinicSettings, Protocol

__all__ = ["stack"]

CONSENT_CLINIC = "consenting"
CONSENT_PROTOCOL = ClinicProtocol(
    clinic=ClinicSettings(
        clinic_id=CONSENT_CLINIC,
        name="Consenting clinic",
        open_weekdays=(0, 1, 2, 3, 4, 5, 6),
        sandbox=True,
        consent_required=True,
    ),
    # Session 1 three simulated days ahead (~50 s at FAST_SCALE): consent comes before its day.
    # (On its day the journey busy-loops while it waits for consent: reported to the lead.)
    protocol=Protocol(booking_notice_days=3, no_show_grace_hours=240),
)


async def status_of(s: Stack, patient_id: str) -> dict[str, Any]:
    r = await s.http.get(f"/api/journeys/{patient_id}", headers=s.auth())
    assert r.status_code == 200, r.text
    return dict(r.json()["status"])


async def add_text(s: Stack, version: str, language: str = "en") -> dict[str, Any]:
    r = await s.http.post(
        f"/api/clinics/{CONSENT_CLINIC}/consent-texts",
        json={
            "language": language,
            "version": version,
            "title": f"Consent {version}",
            "body": f"I agree to laser pore treatment ({version}).\nRisks: redness, swelling.",
        },
        headers=s.auth(),
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def consenting_journey(s: Stack) -> tuple[str, str]:
    created = await enrol(s, clinic_id=CONSENT_CLINIC, time_scale=FAST_SCALE)
    return created["patient_id"], created["patient_link"].rsplit("/", 1)[1]


@pytest.mark.timeout(120)
async def test_consent_gate_new_version_and_withdrawal(stack: Stack) -> None:
    s = stack
    await repository.upsert_clinic(s.pool, CONSENT_PROTOCOL)
    v1 = await add_text(s, "v1")
    # A text is never edited: the same version again is refused, staff may not add one.
    r = await s.http.post(
        f"/api/clinics/{CONSENT_CLINIC}/consent-texts",
        json={"version": "v1", "title": "Changed", "body": "Changed"},
        headers=s.auth(),
    )
    assert r.status_code == 422 and r.json()["detail"][0]["rule"] == "version_exists"
    r = await s.http.post(
        f"/api/clinics/{CONSENT_CLINIC}/consent-texts",
        json={"version": "v9", "title": "T", "body": "B"},
        headers=s.auth(s.staff),
    )
    assert r.status_code == 403

    patient_id, token = await consenting_journey(s)
    me = {"Authorization": f"Bearer {token}"}

    async def waiting_for_consent() -> dict[str, Any] | None:
        st = await status_of(s, patient_id)
        return st if "consent_needed" in st["flags"] else None

    st = await eventually(waiting_for_consent)
    # No booking without consent.
    assert st["sessions"][0]["state"] == "planned" and not st["consent_valid"]
    r = await s.http.get("/api/me/consent", headers=me)
    assert r.status_code == 200, r.text
    mine = r.json()
    assert mine["consent_valid"] is False
    assert "No session is booked until the informed consent is signed" in mine["reason"]
    assert mine["text"]["id"] == v1["id"] and mine["languages"] == ["en"]

    # The box must be ticked; then the signature opens the gate.
    sign = {"text_id": v1["id"], "typed_name": "Jo Example", "confirmed": False}
    r = await s.http.post("/api/me/consent", json=sign, headers=me)
    assert r.status_code == 422 and r.json()["detail"][0]["rule"] == "confirmation_required"
    r = await s.http.post("/api/me/consent", json={**sign, "confirmed": True}, headers=me)
    assert r.status_code == 200, r.text
    assert r.json()["consent_valid"] is True and r.json()["version"] == "v1"
    record = await s.pool.fetchrow(
        "SELECT * FROM consent_records WHERE id = $1", r.json()["record_id"]
    )
    assert record is not None and record["typed_name"] == "Jo Example" and record["confirmed"]
    assert len(record["address_hmac"]) == 64 and record["text_sha256"] == v1["body_sha256"]

    async def booked() -> bool:
        st = await status_of(s, patient_id)
        return "consent_needed" not in st["flags"] and st["sessions"][0]["state"] != "planned"

    await eventually(booked)

    # A new required version: every open journey of the clinic is asked again.
    await add_text(s, "v2")
    await add_text(s, "v2", language="de")
    r = await s.http.post(
        f"/api/clinics/{CONSENT_CLINIC}/consent-texts/v2/require", headers=s.auth()
    )
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]

    async def finished() -> dict[str, Any] | None:
        r = await s.http.get(
            f"/api/clinics/{CONSENT_CLINIC}/consent-requirements/{run_id}", headers=s.auth()
        )
        return r.json() if r.json()["finished"] else None

    run = await eventually(finished)
    assert (run["total"], run["asked"], run["failed"]) == (1, 1, 0)
    st = await status_of(s, patient_id)
    assert st["consent_required_version"] == "v2" and not st["consent_valid"]
    r = await s.http.get("/api/me/consent?language=de", headers=me)
    assert r.json()["text"]["version"] == "v2" and r.json()["text"]["language"] == "de"
    assert "now requires version v2" in r.json()["reason"]
    # Asking again is idempotent: a journey already at v2 is skipped.
    r = await s.http.post(
        f"/api/clinics/{CONSENT_CLINIC}/consent-texts/v2/require", headers=s.auth()
    )
    again = r.json()["id"]

    async def finished_again() -> dict[str, Any] | None:
        r = await s.http.get(
            f"/api/clinics/{CONSENT_CLINIC}/consent-requirements/{again}", headers=s.auth()
        )
        return r.json() if r.json()["finished"] else None

    run = await eventually(finished_again)
    assert (run["asked"], run["skipped"]) == (0, 1)

    # A paper of an outdated version is refused at the door; v2 is recorded (reception may).
    r = await s.http.post(
        f"/api/journeys/{patient_id}/consent/paper",
        json={"version": "v1", "reference": "old binder"},
        headers=s.auth(s.staff),
    )
    assert r.status_code == 422 and r.json()["detail"][0]["rule"] == "not_required_version"
    r = await s.http.post(
        f"/api/journeys/{patient_id}/consent/paper",
        json={"version": "v2", "reference": "binder 4, page 12"},
        headers=s.auth(s.staff),
    )
    assert r.status_code == 200, r.text
    assert r.json()["consent_valid"] is True

    # The patient withdraws: the journey pauses and says why.
    r = await s.http.post(
        "/api/me/consent/withdraw", json={"reason": "I changed my mind"}, headers=me
    )
    assert r.status_code == 200, r.text
    assert r.json()["stage"] == "paused" and r.json()["consent_valid"] is False
    r = await s.http.get(f"/api/journeys/{patient_id}/consent", headers=s.auth())
    body = r.json()
    assert body["records"][0]["kind"] == "withdrawn"
    assert "Consent was withdrawn (I changed my mind)" in body["reason"]
    kinds = {
        row["kind"]
        for row in await s.pool.fetch(
            "SELECT kind FROM journey_events WHERE workflow_id = $1", f"journey-{patient_id}"
        )
    }
    assert {"consent_needed", "consent_recorded", "consent_required", "consent_withdrawn"} <= kinds
    # Records are append-only.
    with pytest.raises(Exception, match="append-only"):
        await s.pool.execute("UPDATE consent_records SET typed_name = 'x'")


async def in_read_model(s: Stack, patient_id: str) -> None:
    async def found() -> bool:
        return await repository.get_journey(s.pool, patient_id) is not None

    await eventually(found)


def gps_jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    """A real JPEG with a GPS location (and a camera make) in its EXIF."""
    img = Image.new("RGB", size, (180, 120, 100))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (52.0, 31.0, 12.0)
    gps[3] = "E"
    gps[4] = (13.0, 24.0, 36.0)
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif)
    return out.getvalue()


@pytest.mark.timeout(120)
async def test_photo_upload_limits_exif_and_view_log(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNEY_PHOTO_DIR", str(tmp_path))
    s = stack
    created = await enrol(s, clinic_id="fast", time_scale=FAST_SCALE)
    pid = created["patient_id"]
    await in_read_model(s, pid)
    raw = gps_jpeg()
    assert Image.open(io.BytesIO(raw)).getexif().get_ifd(0x8825)  # the test photo has a location

    def files(data: bytes, media: str = "image/jpeg") -> dict[str, Any]:
        return {"file": ("face.jpg", data, media)}

    # Reception may not upload or see photos.
    r = await s.http.post(
        f"/api/photos/{pid}", files=files(raw), data={"kind": "baseline"}, headers=s.auth(s.staff)
    )
    assert r.status_code == 403
    # Not an image; a PNG sent as a JPEG; review photos before the review.
    r = await s.http.post(
        f"/api/photos/{pid}",
        files=files(b"%PDF-1.4 not a photo"),
        data={"kind": "baseline"},
        headers=s.auth(),
    )
    assert r.status_code == 422 and r.json()["detail"][0]["rule"] == "photo_type"
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    r = await s.http.post(
        f"/api/photos/{pid}",
        files=files(png.getvalue()),
        data={"kind": "baseline"},
        headers=s.auth(),
    )
    assert r.status_code == 422 and r.json()["detail"][0]["rule"] == "photo_type"
    r = await s.http.post(
        f"/api/photos/{pid}", files=files(raw), data={"kind": "review"}, headers=s.auth()
    )
    assert r.status_code == 409 and r.json()["detail"][0]["rule"] == "photo_not_now"

    r = await s.http.post(
        f"/api/photos/{pid}", files=files(raw), data={"kind": "baseline"}, headers=s.auth()
    )
    assert r.status_code == 201, r.text
    photo = r.json()
    assert photo["media_type"] == "image/jpeg" and (photo["width"], photo["height"]) == (64, 48)

    # Served bytes: the stored hash, no EXIF at all (no location, no camera).
    r = await s.http.get(photo["url"], headers=s.auth())
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert hashlib.sha256(r.content).hexdigest() == photo["sha256"]
    served = Image.open(io.BytesIO(r.content))
    assert not served.getexif() and not served.getexif().get_ifd(0x8825)
    assert b"PhoneMaker" not in r.content
    # The content-addressed file under the data directory.
    stored = tmp_path / photo["sha256"][:2] / photo["sha256"][2:4]
    assert (stored / photo["sha256"]).read_bytes() == r.content

    # Every view is logged; reception gets a 403 (and sees nothing).
    assert (await s.http.get(photo["url"], headers=s.auth(s.staff))).status_code == 403
    views = await s.pool.fetch("SELECT * FROM photo_views WHERE photo_id = $1", photo["id"])
    assert len(views) == 1 and views[0]["staff_name"] == "Ada Admin"
    await s.http.get(photo["url"], headers=s.auth())
    assert await s.pool.fetchval("SELECT count(*) FROM photo_views") == 2
    with pytest.raises(Exception, match="append-only"):
        await s.pool.execute("DELETE FROM photo_views")


@pytest.mark.timeout(60)
async def test_photo_too_large_is_413(stack: Stack) -> None:
    s = stack
    created = await enrol(s, clinic_id="fast", time_scale=FAST_SCALE)
    await in_read_model(s, created["patient_id"])
    big = b"\xff\xd8" + b"\0" * (11 * 1024 * 1024)
    r = await s.http.post(
        f"/api/photos/{created['patient_id']}",
        files={"file": ("big.jpg", big, "image/jpeg")},
        data={"kind": "baseline"},
        headers=s.auth(),
    )
    assert r.status_code == 413
