"""The dashboard overview in a few grouped statements (issue 13): counts by stage and flag
from one scan, every flagged short list from one statement (common and rare flags), today's
candidates from one, and the same live version as ``/live``."""

from __future__ import annotations

import re
from collections import Counter

import asyncpg
import httpx

from activities import repository
from api.main import create_app
from tests.bench_pages import seed
from worker.settings import Settings


async def test_counts_and_flagged_lists_match_the_plain_queries(pg_pool: asyncpg.Pool) -> None:
    await seed(pg_pool, 400)
    summary = await repository.overview_counts(pg_pool)
    rows = await pg_pool.fetch("SELECT stage, flags, version FROM journeys")
    assert summary.stages == dict(Counter(r["stage"] for r in rows))
    assert summary.flags == dict(Counter(f for r in rows for f in r["flags"]))
    assert summary.journeys == len(rows)
    assert summary.versions == sum(r["version"] for r in rows)
    # One flag carried by a single journey (rare: looked up by the flags index) next to common
    # ones (walked along the next-action index), and one nobody carries.
    await pg_pool.execute(
        "UPDATE journeys SET flags = flags || ARRAY['adverse_event'] WHERE workflow_id ="
        " (SELECT min(workflow_id) FROM journeys)"
    )
    counts = {"no_show": summary.flags["no_show"], "adverse_event": 1, "review_overdue": 0}
    by_flag = await repository.journeys_by_flag(pg_pool, counts, 15)
    for flag in counts:
        expected, _ = await repository.list_journeys(pg_pool, flag=flag, limit=15)
        assert [r.workflow_id for r in by_flag[flag]] == [r.workflow_id for r in expected]
        assert all(r.patient_name for r in by_flag[flag])
    assert len(by_flag["adverse_event"]) == 1 and by_flag["review_overdue"] == []


async def test_the_overview_page_and_live_agree(pg_dsn: str, pg_pool: asyncpg.Pool) -> None:
    await seed(pg_pool, 300)
    _, token = await repository.create_staff_user(pg_pool, "Reception", "staff")
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, journey_env="test", database_url=pg_dsn, temporal_address="127.0.0.1:9"
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        form = await http.get("/login")
        match = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert match is not None
        await http.post("/login", data={"csrf_token": match.group(1), "token": token})
        page = await http.get("/")
        assert page.status_code == 200
        live = (await http.get("/live")).json()["version"]
        assert live in page.text  # the page starts from the version /live answers
        assert "(300 in all)" in page.text
        summary = await repository.overview_counts(pg_pool)
        n = summary.flags.get("no_show", 0)
        assert n > 15 and f"Show all {n} no-shows" in page.text
