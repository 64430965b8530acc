"""Browser tests of staff access (issue 16), Chromium driven by Playwright like
tests/test_web.py: a receptionist signs in through the clinic chain's identity provider (the
local OpenID provider of tests/oidc_provider.py, a real HTTP server), sees her clinic's
journeys only, cannot open another clinic's journey, is offered no clinician's form, and logs
out through the provider. The app is served by uvicorn on real PostgreSQL (no Temporal needed:
these pages read the read model)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
import uvicorn
from playwright.async_api import Browser, async_playwright, expect

from api.main import create_app
from tests.access_helpers import Chain, make_chain, member
from tests.oidc_provider import Provider, running_provider
from tests.test_api import make_settings
from tests.test_oidc import PEOPLE, oidc_settings
from tests.test_web import CHROMIUM, CHROMIUM_ARGS, _free_port, eventually, shot

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed at /usr/bin/chromium (`make browser` installs it)",
)


@dataclass
class Site:
    base: str
    chain: Chain
    provider: Provider
    browser: Browser
    token: str


@pytest.fixture
async def site(pg_pool: asyncpg.Pool, pg_dsn: str) -> AsyncIterator[Site]:
    chain = await make_chain(pg_pool)
    _, token = await member(pg_pool, "Rosa Reception", "reception", ["hamburg"])
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with running_provider({k: dict(v) for k, v in PEOPLE.items()}) as provider:
        app = create_app(
            make_settings(
                database_url=pg_dsn, temporal_address="127.0.0.1:9", journey_public_url=base
            )
        )
        app.state.access = oidc_settings(provider)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        serving = asyncio.create_task(server.serve())
        try:
            await eventually(lambda: asyncio.sleep(0, server.started))
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
                )
                yield Site(base, chain, provider, browser, token)
                await browser.close()
        finally:
            server.should_exit = True
            await serving


async def test_a_receptionist_signs_in_through_the_provider_and_sees_her_clinic_only(
    site: Site,
) -> None:
    context = await site.browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await page.goto(site.base + "/journeys")
    await expect(page).to_have_url(f"{site.base}/login?next=%2Fjourneys")
    await shot(page, "access-login")
    await page.get_by_role("link", name="Sign in with Chain ID").click()
    # The provider's own page (another origin): she picks her account there.
    await expect(page.get_by_role("heading", name="Test identity provider")).to_be_visible()
    assert page.url.startswith(site.provider.issuer + "/authorize?")
    await page.get_by_role("button", name="Continue as rita").click()
    await expect(page).to_have_url(f"{site.base}/journeys")
    await expect(page.locator(".who")).to_contain_text("Rita Reception")
    await expect(page.locator(".who")).to_contain_text("(reception)")
    table = page.locator("table.journeys")
    await expect(table).to_contain_text("Hanna Hamburg")
    await expect(table).not_to_contain_text("Max Munich")
    await expect(page.get_by_role("link", name="Access log")).to_have_count(0)
    await shot(page, "access-reception-list")
    # Searching for the other clinic's patient finds nothing.
    await page.get_by_label("Patient name").fill("Max")
    await page.get_by_role("button", name="Show").click()
    await expect(page.get_by_label("Patient name")).to_have_value("Max")
    await expect(page.locator("#main")).not_to_contain_text("Max Munich")
    # Her own patient's page offers no clinician's form; the other clinic's is not there.
    await page.goto(f"{site.base}/journeys/{site.chain.hamburg_patient}")
    await expect(page.get_by_role("heading", name="Hanna Hamburg")).to_be_visible()
    await expect(page.locator("#form-review")).to_have_count(0)
    await expect(page.locator("#form-check")).to_have_count(0)
    response = await page.goto(f"{site.base}/journeys/{site.chain.munich_patient}")
    assert response is not None and response.status == 404
    await expect(page.locator("body")).not_to_contain_text("Max Munich")
    await shot(page, "access-other-clinic")
    # Logout goes through the provider and back to the sign-in page.
    await page.goto(f"{site.base}/journeys")
    await page.get_by_role("button", name="Log out").click()
    await expect(page).to_have_url(f"{site.base}/login")
    assert len(site.provider.ended_sessions) == 1
    await page.goto(site.base + "/journeys")
    await expect(page).to_have_url(f"{site.base}/login?next=%2Fjourneys")
    await context.close()


async def test_a_group_without_access_is_refused_in_the_browser(site: Site) -> None:
    context = await site.browser.new_context()
    page = await context.new_page()
    await page.goto(site.base + "/login")
    await page.get_by_role("link", name="Sign in with Chain ID").click()
    await page.get_by_role("button", name="Continue as eve").click()
    await expect(page.locator("#login-error")).to_contain_text("not in a group with access")
    await page.goto(site.base + "/")
    await expect(page).to_have_url(f"{site.base}/login?next=%2F")
    await context.close()
