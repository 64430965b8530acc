"""The clinic reports page in a real browser (Debian's chromium through Playwright, as in
tests/test_web.py): an admin filters by clinic and dates, every chart is drawn (the SVG images
load under the page's CSP), a chart's numbers open under it, its CSV downloads and parses
back, and a receptionist is refused. Screenshots: ``test-artifacts/screenshots/reports*.png``.

Only PostgreSQL and the app are needed (the reports never ask Temporal)."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
import uvicorn
from playwright.async_api import Browser, Page, async_playwright, expect

from activities import repository
from api.main import create_app
from tests.test_reports import seed
from tests.test_web import CHROMIUM, CHROMIUM_ARGS, _free_port, eventually, shot
from worker.settings import Settings

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed at /usr/bin/chromium (`make browser` installs it)",
)


@dataclass
class ReportSite:
    base: str
    admin_token: str
    reception_token: str
    browser: Browser


@pytest.fixture
async def report_site(pg_pool: asyncpg.Pool, pg_dsn: str) -> AsyncIterator[ReportSite]:
    await seed(pg_pool)
    _, admin = await repository.create_staff_user(pg_pool, "Ada Admin", "admin")
    _, reception = await repository.create_staff_user(pg_pool, "Rita Reception", "staff")
    port = _free_port()
    settings = Settings.model_validate(
        {
            "journey_env": "test",
            "database_url": pg_dsn,
            "temporal_address": "127.0.0.1:9",  # nothing listens: reports need PostgreSQL
            "journey_public_url": f"http://127.0.0.1:{port}",
        }
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: asyncio.sleep(0, server.started))
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            yield ReportSite(f"http://127.0.0.1:{port}", admin, reception, browser)
            await browser.close()
    finally:
        server.should_exit = True
        await serving


async def login(site: ReportSite, page: Page, token: str, target: str) -> None:
    await page.goto(site.base + target)
    await page.get_by_label("Staff token").fill(token)
    await page.get_by_role("button", name="Log in").click()


async def test_reports_page_in_a_browser(report_site: ReportSite) -> None:
    site = report_site
    context = await site.browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await login(site, page, site.admin_token, "/reports")
    await expect(page.get_by_role("heading", name="Clinic reports")).to_be_visible()
    await expect(page.get_by_role("link", name="Reports")).to_have_attribute("aria-current", "page")

    # Filter: Berlin, March 2027 (the seeded journeys).
    await page.get_by_label("Clinic", exact=True).select_option("berlin")
    await page.get_by_label("From", exact=True).fill("2027-03-01")
    await page.get_by_label("To", exact=True).fill("2027-03-28")
    await page.get_by_role("button", name="Show").click()
    await expect(page.get_by_role("heading", name="Clinic reports · Berlin")).to_be_visible()
    images = page.locator("figure.chart img")
    await expect(images).to_have_count(9)
    for i in range(9):  # every SVG is decoded and drawn (a CSP refusal leaves it at 0)
        width = await images.nth(i).evaluate("img => img.complete && img.naturalWidth")
        assert width == 720
    sessions = page.locator("#report-sessions-per-week")
    await expect(sessions.locator("figcaption")).to_have_text("3 sessions completed, 1 no-shows")
    await expect(page.locator("#report-no-show-rate figcaption")).to_contain_text("25.0 %")
    await shot(page, "reports")

    await sessions.get_by_text("Numbers", exact=True).click()
    await expect(sessions.locator("tbody tr")).to_have_count(4)
    await expect(sessions.locator("tbody tr").nth(2)).to_contain_text("2027-03-15")
    async with page.expect_download() as download_info:
        await sessions.get_by_role("link", name="Download the numbers (CSV)").click()
    download = await download_info.value
    assert download.suggested_filename == "sessions-per-week_berlin_2027-03-01_2027-03-28.csv"
    path = await download.path()
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [(r["week"], r["completed"], r["no-shows"]) for r in rows] == [
        ("2027-03-01", "1", "0"),
        ("2027-03-08", "1", "0"),
        ("2027-03-15", "0", "1"),
        ("2027-03-22", "1", "0"),
    ]
    async with page.expect_download() as export_info:
        await page.get_by_role("link", name="Journeys (CSV)").click()
    export = await (await export_info.value).path()
    assert [r["patient_id"] for r in csv.DictReader(io.StringIO(export.read_text()))] == [
        "p_b",
        "p_a",
        "p_c",
        "p_d",
    ]

    # A range without data: "No data yet" instead of pictures.
    await page.get_by_label("From", exact=True).fill("2030-01-01")
    await page.get_by_label("To", exact=True).fill("2030-01-31")
    await page.get_by_role("button", name="Show").click()
    await expect(page.locator(".no-data")).to_have_count(9)
    await expect(page.locator("#report-satisfaction .no-data")).to_have_text("No data yet.")

    # A phone: one column, the charts scale down.
    phone = await site.browser.new_context(viewport={"width": 390, "height": 844})
    small = await phone.new_page()
    await small.context.add_cookies(await context.cookies())
    await small.goto(site.base + "/reports?clinic=berlin&from=2027-03-01&to=2027-03-28")
    box = await small.locator("figure.chart img").first.bounding_box()
    assert box is not None and box["width"] < 390
    await shot(small, "reports-phone")
    await phone.close()
    await context.close()


async def test_reception_is_refused_in_a_browser(report_site: ReportSite) -> None:
    site = report_site
    context = await site.browser.new_context()
    page = await context.new_page()
    await login(site, page, site.reception_token, "/reports")
    # Refused by issue 16's permission check (reports.view), or by the page's own role check.
    await expect(
        page.get_by_role("heading", name=re.compile("^Not (allowed|available for your role)$"))
    ).to_be_visible()
    await expect(page.get_by_role("heading", name="Clinic reports")).to_have_count(0)
    await expect(page.get_by_role("link", name="Reports")).to_have_count(0)
    await shot(page, "reports-refused")
    await context.close()
