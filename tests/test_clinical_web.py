"""The clinical record's pages in a real browser (issue 19): the patient signs the consent on
their page (the gate's reason shown first), the journey page shows the consent and the
baseline and review photos side by side (every view logged). Screenshots land in
``test-artifacts/screenshots/`` (kept out of git)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from playwright.async_api import Page, expect

from activities import repository
from api import consent, photos
from api.clinical_access import may
from tests.test_clinical_api import gps_jpeg
from tests.test_web import (
    FAST_CLINIC,
    FAST_SCALE,
    Site,
    enrol,
    eventually,
    read_status,
    shot,
    site,
)
from workflows.protocol import ClinicProtocol, ClinicSettings, Protocol

__all__ = ["site"]

CONSENTING = ClinicProtocol(
    clinic=ClinicSettings(
        clinic_id="consenting",
        name="Consenting clinic",
        open_weekdays=(0, 1, 2, 3, 4, 5, 6),
        sandbox=True,
        consent_required=True,
    ),
    # Session 1 three simulated days ahead: the patient signs well before its day.
    protocol=Protocol(booking_notice_days=3, no_show_grace_hours=240),
)
CONSENT_BODY = (
    "Laser pore contraction heats the deeper skin to tighten pores.\n"
    "Expect redness and swelling for 2 to 5 days. Rarely: blisters, pigment changes.\n"
    "Use SPF 50 every day for two months after the last session."
)


async def staff_login(site: Site, page: Page, token: str) -> None:
    await page.goto(site.base + "/login")
    await page.get_by_label("Staff token").fill(token)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()


@pytest.mark.timeout(180)
async def test_patient_signs_consent_on_their_page(site: Site) -> None:
    await repository.upsert_clinic(site.pool, CONSENTING)
    await consent.add_text(
        site.pool, "consenting", "en", "2027-01", "Informed consent", CONSENT_BODY, "test"
    )
    await consent.add_text(
        site.pool, "consenting", "de", "2027-01", "Einwilligung", "Deutscher Text.", "test"
    )
    nora = await enrol(site, "Nora Consent", clinic_id="consenting", time_scale=FAST_SCALE)
    await read_status(site, nora.patient_id, lambda s: "consent_needed" in s.flags)

    context = await site.browser.new_context(viewport={"width": 390, "height": 844})
    page = await context.new_page()
    await page.goto(nora.patient_link)
    await expect(page.locator("#consent-gate")).to_contain_text(
        "No session is booked until the informed consent is signed"
    )
    await expect(page.locator("#consent-text")).to_contain_text("SPF 50 every day")
    await expect(page.locator("#headline")).to_contain_text("please sign your consent")
    await shot(page, "consent_patient_before")
    # The box is required; the browser refuses to send without it, the server too.
    await page.get_by_label("Type your full name to sign").fill("Nora Consent")
    await page.get_by_label("I have read this text").check()
    await page.get_by_role("button", name="Sign consent").click()
    await expect(page.locator("#clinical-flash")).to_contain_text("your consent is recorded")
    await expect(page.locator("#consent-state")).to_contain_text("version 2027-01")
    await expect(page.locator("#headline")).not_to_contain_text("sign your consent")
    await shot(page, "consent_patient_signed")
    st = await read_status(site, nora.patient_id, lambda s: s.consent_valid)
    assert "consent_needed" not in st.flags
    row = await site.pool.fetchrow(
        "SELECT * FROM consent_records WHERE patient_id = $1", nora.patient_id
    )
    assert row is not None and row["typed_name"] == "Nora Consent" and row["language"] == "en"

    # Staff see the signature on the journey page.
    staff_page = await (
        await site.browser.new_context(viewport={"width": 1280, "height": 900})
    ).new_page()
    await staff_login(site, staff_page, site.staff_token)
    await staff_page.goto(f"{site.base}/journeys/{nora.patient_id}")
    await expect(staff_page.locator("#consent-state")).to_contain_text(
        "Consent valid: version 2027-01"
    )
    await expect(staff_page.locator("table.consent-records")).to_contain_text(
        "Signed by the patient"
    )
    # Reception sees no photos or outcomes.
    await expect(staff_page.locator("#photos")).to_have_count(0)
    await shot(staff_page, "consent_journey_page")

    # An admin adds a new version and makes it required: the open journeys are asked again.
    _, admin_token = await repository.create_staff_user(site.pool, "Ada Admin", "admin")
    admin = await (
        await site.browser.new_context(viewport={"width": 1280, "height": 900})
    ).new_page()
    await staff_login(site, admin, admin_token)
    await admin.goto(f"{site.base}/clinics/consenting/consent")
    await admin.locator("#t-version").fill("2027-02")
    await admin.get_by_label("Title").fill("Informed consent (new risks)")
    await admin.get_by_label("Text").fill(CONSENT_BODY + "\nNew: rare temporary darkening.")
    await admin.get_by_role("button", name="Add version").click()
    await expect(admin.locator("#flash")).to_contain_text("Consent text version added")
    # The same version again is refused: a text is never edited.
    await admin.locator("#t-version").fill("2027-02")
    await admin.get_by_label("Title").fill("Changed")
    await admin.get_by_label("Text").fill("Changed")
    await admin.get_by_role("button", name="Add version").click()
    await expect(admin.locator("#texts-errors")).to_contain_text("a changed text is a new version")
    await admin.goto(f"{site.base}/clinics/consenting/consent")
    await admin.locator("#q-version").select_option("2027-02")
    await admin.get_by_role("button", name="Make required and ask again").click()
    await expect(admin.locator("#required-version")).to_have_text("2027-02")

    async def asked() -> bool:
        n = await site.pool.fetchval(
            "SELECT count(*) FROM consent_requirements WHERE finished_at IS NOT NULL AND asked = 1"
        )
        return bool(n)

    await eventually(asked)
    await admin.reload()
    await expect(admin.locator("#runs tbody tr").first).to_contain_text("done")
    await shot(admin, "consent_clinic_texts")
    await read_status(site, nora.patient_id, lambda s: not s.consent_valid)
    # The patient's page asks again, saying why.
    await page.goto(nora.patient_link)
    await expect(page.locator("#consent-gate")).to_contain_text(
        "No further session is booked until the informed consent is signed again: "
        "the clinic now requires version 2027-02"
    )
    await shot(page, "consent_patient_asked_again")
    # Reception records the signed paper of the new version on the journey page.
    await staff_page.goto(f"{site.base}/journeys/{nora.patient_id}")
    await expect(staff_page.locator("#consent-gate")).to_contain_text("requires version 2027-02")
    await staff_page.locator("#cp-version").select_option("2027-02")
    await staff_page.get_by_label("Reference").fill("Binder 3, page 41")
    await staff_page.get_by_role("button", name="Record paper consent").click()
    await expect(staff_page.locator("#clinical-flash")).to_contain_text("Paper consent recorded")
    await expect(staff_page.locator("table.consent-records")).to_contain_text("Binder 3, page 41")
    await read_status(site, nora.patient_id, lambda s: s.consent_valid)
    await context.close()


def review_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 160, 150)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.timeout(180)
async def test_photos_side_by_side_on_the_journey_page(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNEY_PHOTO_DIR", str(tmp_path))
    clinician, token = await repository.create_staff_user(site.pool, "Cleo Clinician", "clinician")
    assert may(clinician, "clinical.view")
    ivy = await enrol(site, "Ivy Photo", clinic_id=FAST_CLINIC, time_scale=FAST_SCALE)
    await read_status(site, ivy.patient_id, lambda s: bool(s.sessions))

    context = await site.browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await staff_login(site, page, token)
    await page.goto(f"{site.base}/journeys/{ivy.patient_id}")
    await expect(page.locator("#no-photos")).to_be_visible()
    # A baseline photo through the form (its GPS location is removed on the way in).
    await page.locator("#photo-file").set_input_files(
        files=[{"name": "baseline.jpg", "mimeType": "image/jpeg", "buffer": gps_jpeg((640, 480))}]
    )
    await page.get_by_role("button", name="Upload photo").click()
    await expect(page.locator("#clinical-flash")).to_contain_text("Photo uploaded")
    # A text file is refused next to the form.
    await page.locator("#photo-file").set_input_files(
        files=[{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"not a photo"}]
    )
    await page.get_by_role("button", name="Upload photo").click()
    await expect(page.locator("#photo-errors")).to_contain_text("Only JPEG and PNG")

    # The review photo: the journey is weeks from its review on this clock, so it is stored
    # through the module the review upload uses (the upload rules are tested in
    # test_clinical_api.py); the page shows both side by side.
    limits = photos.PhotoSettings()
    cleaned = photos.clean_photo(
        review_png(),
        declared_type="image/png",
        max_bytes=limits.max_bytes,
        max_pixels=limits.max_pixels,
    )
    store = photos.LocalPhotoStore(tmp_path)
    await store.put(cleaned.sha256, cleaned.data, cleaned.media_type)
    await photos.insert_photo(
        site.pool,
        patient_id=ivy.patient_id,
        clinic_id=FAST_CLINIC,
        course_number=1,
        kind="review",
        photo=cleaned,
        store="local",
        note=None,
        staff=clinician,
    )
    await page.goto(f"{site.base}/journeys/{ivy.patient_id}")
    baseline = page.locator('figure.photo[data-kind="baseline"] img')
    review = page.locator('figure.photo[data-kind="review"] img')
    await expect(baseline).to_have_count(1)
    await expect(review).to_have_count(1)
    for img in (baseline, review):
        await expect(img).to_have_js_property("complete", True)
        assert await img.evaluate("i => i.naturalWidth") > 0  # loaded, not a broken image
    b_box, r_box = await baseline.bounding_box(), await review.bounding_box()
    assert b_box is not None and r_box is not None
    assert abs(b_box["y"] - r_box["y"]) < 2 and r_box["x"] > b_box["x"] + b_box["width"]
    await page.locator("#photos").scroll_into_view_if_needed()
    await shot(page, "photos_side_by_side")
    views = await site.pool.fetchval(
        "SELECT count(*) FROM photo_views WHERE patient_id = $1", ivy.patient_id
    )
    assert views >= 2
    await context.close()


# One session, a long due window, the simulation clock at its fastest: once its session is
# reported the journey reaches its review in about a second of real time.
REVIEWING = ClinicProtocol(
    clinic=ClinicSettings(
        clinic_id="reviewing",
        name="Reviewing clinic",
        open_weekdays=(0, 1, 2, 3, 4, 5, 6),
        sandbox=True,
    ),
    protocol=Protocol(
        sessions_by_grade={"small": 1, "moderate": 1, "large": 1},
        booking_notice_days=0,
        no_show_grace_hours=100_000,
        spf_months=1,
        review_months=1,
    ),
)


@pytest.mark.timeout(180)
async def test_satisfaction_and_review_outcome_on_the_pages(site: Site) -> None:
    await repository.upsert_clinic(site.pool, REVIEWING)
    _, token = await repository.create_staff_user(site.pool, "Cleo Clinician", "clinician")
    rae = await enrol(site, "Rae Outcome", clinic_id="reviewing", time_scale=10_000_000)
    st = await read_status(
        site, rae.patient_id, lambda s: bool(s.sessions) and s.sessions[0].state == "booked"
    )
    starts = st.sessions[0].starts_at
    assert starts is not None
    await site.service.complete_session(
        rae.patient_id, 1, starts, idempotency_key=f"done-{rae.patient_id}", source="device"
    )
    await read_status(site, rae.patient_id, lambda s: s.stage == "awaiting_review")

    # The patient is asked before the review.
    patient = await (
        await site.browser.new_context(viewport={"width": 390, "height": 844})
    ).new_page()
    await patient.goto(rae.patient_link)
    await patient.get_by_label("4 · Satisfied").check()
    await patient.get_by_label("Anything to add?").fill("Smoother skin, pores less visible.")
    await patient.get_by_role("button", name="Send my answer").click()
    await expect(patient.locator("#clinical-flash")).to_contain_text("Thank you for telling us")
    await expect(patient.locator("#satisfaction-done")).to_contain_text("4/5")
    await shot(patient, "satisfaction_patient")

    # The clinician records the review with the grades; the journey page shows both.
    page = await (
        await site.browser.new_context(viewport={"width": 1280, "height": 900})
    ).new_page()
    await staff_login(site, page, token)
    await page.goto(f"{site.base}/journeys/{rae.patient_id}")
    await expect(page.locator("#outcome-satisfaction")).to_contain_text("4/5 · Satisfied")
    form = page.locator("#form-review")
    await form.get_by_label("Complete").check()
    await form.get_by_label("Global aesthetic improvement").select_option("4")
    await form.get_by_label("Pore visibility").select_option("2")
    await form.get_by_label("Adverse events").fill("Redness for two days; resolved.")
    await form.get_by_role("button", name="Record review").click()
    await expect(page.locator("#flash")).to_contain_text("Review recorded")
    await expect(page.locator("#outcome-gi")).to_contain_text("4/5 · Much improved")
    await expect(page.locator("#outcome-pv")).to_contain_text("2/5 · Barely visible")
    await expect(page.locator("#outcome-ae")).to_contain_text("Redness for two days")
    # Review photos may follow the recorded review.
    await expect(page.locator('#form-photo input[value="review"]')).to_have_count(1)
    await page.locator("#outcome").scroll_into_view_if_needed()
    await shot(page, "outcome_journey_page")
    data = await site.pool.fetchval(
        "SELECT data FROM journey_events WHERE workflow_id = $1 AND kind = 'completed'",
        f"journey-{rae.patient_id}",
    )
    assert data["global_improvement"] == 4 and data["adverse_events_summary"].startswith("Redness")
