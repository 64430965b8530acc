"""Clinic reports (issue 19 item 4): every report's numbers against a small hand-built data set
(exact counts, the clinic's time zone at the edges of the range), the CSV downloads and exports
parsed back with the csv module, and who may see them (a manager or an admin; reception: 403)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any, cast

import asyncpg
import httpx
import pytest

from activities import repository
from api.main import create_app
from api.web import report_charts, report_data
from api.web.report_data import ReportFilter, ReportTable
from worker.settings import Settings
from workflows.protocol import ClinicProtocol, ClinicSettings

BERLIN = ReportFilter("berlin", date(2027, 3, 1), date(2027, 3, 28), "Europe/Berlin")
EVERY = ReportFilter(None, date(2027, 3, 1), date(2027, 3, 28), "UTC")
QUERY = "clinic=berlin&from=2027-03-01&to=2027-03-28"


def at(text: str) -> datetime:
    """A UTC instant, ``"2027-03-01 10:00"``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# (patient, clinic, stage, flags, [(kind, at, data)]): journey time, as the journey writes it.
JOURNEYS: list[tuple[str, str, str, list[str], list[tuple[str, str, dict[str, Any]]]]] = [
    # A: enrolled in week 1, first session after 10 days, two SPF attestations in week 2.
    ("p_a", "berlin", "recovery", [], [
        ("journey_started", "2027-03-01 10:00", {}),
        ("planned", "2027-03-01 10:01", {}),
        ("session_completed", "2027-03-11 10:00", {"session": 1}),
        ("spf_attested", "2027-03-12 08:00", {}),
        ("spf_attested", "2027-03-13 08:00", {}),
    ]),
    # B: 23:30 UTC on 28 February is 00:30 on 1 March in Berlin: enrolled in the range there
    # (not in UTC); a no-show in week 3, the session 22.5 days after enrolment, an adverse event.
    ("p_b", "berlin", "paused", ["no_show", "adverse_event"], [
        ("journey_started", "2027-02-28 23:30", {}),
        ("no_show", "2027-03-16 12:00", {"session": 1}),
        ("session_completed", "2027-03-23 12:00", {"session": 1}),
        ("adverse_event", "2027-03-24 09:00", {"severity": "moderate"}),
    ]),
    # C: waiting for the season now.
    ("p_c", "berlin", "awaiting_season", [], [
        ("journey_started", "2027-03-09 09:00", {}),
        ("awaiting_season", "2027-03-09 10:00", {}),
    ]),
    # D: waited, then planned; the course is split by the summer.
    ("p_d", "berlin", "scheduled", ["course_split"], [
        ("journey_started", "2027-03-15 09:00", {}),
        ("awaiting_season", "2027-03-15 10:00", {}),
        ("planned", "2027-03-20 10:00", {}),
    ]),
    # E, F: enrolled before the range; reviewed in it with the clinician's grades.
    ("p_e", "berlin", "completed", [], [
        ("journey_started", "2026-10-01 09:00", {}),
        ("session_completed", "2026-10-20 09:00", {"session": 1}),
        ("completed", "2027-03-20 09:00", {"global_improvement": 4, "pore_visibility": 2}),
    ]),
    ("p_f", "berlin", "screening", [], [
        ("journey_started", "2026-09-01 09:00", {}),
        ("further_course", "2027-03-21 09:00", {"global_improvement": 5, "pore_visibility": 2}),
    ]),
    # H: enrolled before the range, its first session in week 1 (a session, not a cohort).
    ("p_h", "berlin", "recovery", [], [
        ("journey_started", "2027-02-20 09:00", {}),
        ("session_completed", "2027-03-01 09:00", {"session": 1}),
    ]),
    # I: 22:30 UTC on 28 March is 00:30 on 29 March in Berlin (summer time): after the range.
    ("p_i", "berlin", "screening", [], [("journey_started", "2027-03-28 22:30", {})]),
    # G: another clinic: only in the every-clinic report.
    ("p_g", "default", "completed", ["no_show"], [
        ("journey_started", "2027-03-02 09:00", {}),
        ("session_completed", "2027-03-03 09:00", {"session": 1}),
        ("no_show", "2027-03-04 09:00", {"session": 2}),
        ("completed", "2027-03-25 09:00", {"global_improvement": 1, "pore_visibility": 1}),
    ]),
]  # fmt: skip
APPOINTMENTS = [
    ("p_a", 1, "2027-03-11 10:00", "done"),
    ("p_b", 1, "2027-03-23 12:00", "done"),
    ("p_b", 2, "2027-04-15 12:00", "booked"),
    ("p_g", 1, "2027-03-03 09:00", "done"),
]
SATISFACTION = [("p_e", 5, "2027-03-20 10:00"), ("p_f", 4, "2027-03-21 10:00")]


async def seed(pool: asyncpg.Pool, *, satisfaction: bool = True) -> None:
    await repository.ensure_default_clinic(pool)
    await repository.upsert_clinic(
        pool,
        ClinicProtocol(
            clinic=ClinicSettings(clinic_id="berlin", name="Berlin", timezone="Europe/Berlin")
        ),
    )
    for pid, clinic, stage, flags, events in JOURNEYS:
        wf = f"journey-{pid}"
        await pool.execute(
            "INSERT INTO journeys (workflow_id, patient_id, clinic_id, version, stage,"
            " course_number, sessions_planned, sessions_done, flags, protocol_version)"
            " VALUES ($1, $2, $3, $4, $5, 1, 3, 0, $6, 'pore-2026.1')",
            wf,
            pid,
            clinic,
            len(events),
            stage,
            flags,
        )
        for step, (kind, when, data) in enumerate(events, 1):
            await pool.execute(
                "INSERT INTO journey_events (workflow_id, event_key, step, kind, actor,"
                " occurred_at, summary, data) VALUES ($1, $2, $3, $4, 'system', $5, $4, $6)",
                wf,
                f"{step}.0",
                step,
                kind,
                at(when),
                data,
            )
    for pid, number, when, status in APPOINTMENTS:
        await pool.execute(
            "INSERT INTO appointments (workflow_id, course_number, session_number, starts_at,"
            " duration_minutes, status, version) VALUES ($1, 1, $2, $3, 45, $4, 1)",
            f"journey-{pid}",
            number,
            at(when),
            status,
        )
    if satisfaction:
        # The table of issue 19's satisfaction question (migration 0019_clinical_record) if
        # this tree has it; its columns otherwise.
        await pool.execute(
            "CREATE TABLE IF NOT EXISTS patient_satisfaction (id bigserial PRIMARY KEY,"
            " workflow_id text NOT NULL, patient_id text NOT NULL, course_number int NOT NULL"
            " DEFAULT 1, score int NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
        )
        for pid, score, when in SATISFACTION:
            await pool.execute(
                "INSERT INTO patient_satisfaction (workflow_id, patient_id, score, created_at)"
                " VALUES ($1, $2, $3, $4)",
                f"journey-{pid}",
                pid,
                score,
                at(when),
            )


def by_name(tables: list[ReportTable]) -> dict[str, ReportTable]:
    return {t.name: t for t in tables}


def column(table: ReportTable, name: str) -> list[Any]:
    i = table.columns.index(name)
    return [row[i] for row in table.rows]


# ------------------------------------------------------------------ the numbers


async def test_every_report_of_one_clinic_counts_exactly(pg_pool: asyncpg.Pool) -> None:
    await seed(pg_pool)
    reports = by_name(await report_data.build_reports(pg_pool, BERLIN))
    assert list(reports) == list(report_data.REPORTS)
    weeks = ["2027-03-01", "2027-03-08", "2027-03-15", "2027-03-22"]

    stages = reports["journeys-by-stage"]
    assert column(stages, "week") == weeks
    assert column(stages, "enrolled") == [2, 1, 1, 0]  # A and B (Berlin's 1 March), C, D
    assert column(stages, "Recovery") == [1, 0, 0, 0]
    assert column(stages, "Paused") == [1, 0, 0, 0]
    assert column(stages, "Waiting for the season") == [0, 1, 0, 0]
    assert column(stages, "Scheduled") == [0, 0, 1, 0]
    assert "Screening" not in stages.columns  # I is enrolled on 29 March in Berlin

    sessions = reports["sessions-per-week"]
    assert column(sessions, "completed") == [1, 1, 0, 1]  # H, A, -, B
    assert column(sessions, "no-shows") == [0, 0, 1, 0]
    rate = reports["no-show-rate"]
    assert column(rate, "no-show rate %") == [0.0, 0.0, 100.0, 0.0]
    assert rate.summary.startswith("25.0 % over the period (1 of 4)")

    first = reports["time-to-first-session"]
    assert dict((r[0], r[1]) for r in first.rows) == {
        "under 2 weeks": 1,  # A: 10 days
        "2–4 weeks": 1,  # B: 22.5 days
        "4–6 weeks": 0,
        "6–8 weeks": 0,
        "8–12 weeks": 0,
        "12–26 weeks": 0,
        "26 weeks or more": 0,
        "no session yet": 2,  # C, D
    }
    assert first.summary.startswith("median 16 days over 2 journeys; 2 without a session yet")

    summer = reports["summer"]
    assert [r[1] for r in summer.rows] == [1, 2, 1]  # waiting now C; waited C, D; split D
    assert summer.summary == "of 4 journeys enrolled"

    spf = reports["spf-attestations"]
    assert column(spf, "attestations") == [0, 2, 0, 0]

    adverse = reports["adverse-events"]
    assert column(adverse, "moderate") == [0, 0, 0, 1]
    assert column(adverse, "total") == [0, 0, 0, 1]
    assert adverse.summary == "1 adverse events (1 moderate)"

    outcomes = reports["outcomes"]
    assert outcomes.rows == [[1, 0, 0], [2, 0, 2], [3, 0, 0], [4, 1, 0], [5, 1, 0]]

    satisfaction = reports["satisfaction"]
    assert satisfaction.rows == [[1, 0], [2, 0], [3, 0], [4, 1], [5, 1]]
    assert satisfaction.has_data


async def test_every_clinic_in_utc(pg_pool: asyncpg.Pool) -> None:
    await seed(pg_pool)
    reports = by_name(await report_data.build_reports(pg_pool, EVERY))
    # In UTC, B was enrolled on 28 February (outside), I on 28 March (inside), G in week 1.
    assert column(reports["journeys-by-stage"], "enrolled") == [2, 1, 1, 1]  # A, G; C; D; I
    assert column(reports["sessions-per-week"], "completed") == [2, 1, 0, 1]  # H, G; A; B
    assert column(reports["sessions-per-week"], "no-shows") == [1, 0, 1, 0]  # G; B
    assert reports["outcomes"].rows[:2] == [[1, 1, 1], [2, 0, 2]]  # G graded 1 and 1


async def test_no_data_yet(pg_pool: asyncpg.Pool) -> None:
    await seed(pg_pool, satisfaction=False)
    empty = ReportFilter("berlin", date(2030, 1, 1), date(2030, 1, 31), "Europe/Berlin")
    reports = await report_data.build_reports(pg_pool, empty)
    assert not any(t.has_data for t in reports)
    assert all(report_charts.chart_svg(t) is None for t in reports)
    satisfaction = by_name(await report_data.build_reports(pg_pool, BERLIN))["satisfaction"]
    assert not satisfaction.has_data and satisfaction.summary == "no data yet"


async def test_a_chart_is_an_svg_of_its_numbers(pg_pool: asyncpg.Pool) -> None:
    await seed(pg_pool)
    reports = by_name(await report_data.build_reports(pg_pool, BERLIN))
    svg = report_charts.chart_svg(reports["sessions-per-week"])
    assert svg is not None and svg.startswith("<svg") and "completed" in svg
    assert "<script" not in svg or "src=" not in svg  # nothing fetched from outside


def test_csv_cells_never_run_as_formulas() -> None:
    text = report_data.csv_text(["a", "b"], [["=HYPERLINK(1)", 3], ["-2", None]])
    assert list(csv.reader(io.StringIO(text))) == [
        ["a", "b"],
        ["'=HYPERLINK(1)", "3"],
        ["'-2", ""],
    ]


# ------------------------------------------------------------------ the pages


@pytest.fixture
async def app_for(pg_dsn: str, pg_pool: asyncpg.Pool) -> AsyncIterator[Any]:
    settings = Settings.model_validate(
        {"journey_env": "test", "database_url": pg_dsn, "temporal_address": "127.0.0.1:9"}
    )
    app = create_app(settings)
    clients: list[httpx.AsyncClient] = []
    async with app.router.lifespan_context(app):

        async def client(role: str | None) -> httpx.AsyncClient:
            """A client logged in with a new staff member of ``role`` (None: not logged in)."""
            http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
            clients.append(http)
            if role is None:
                return http
            staff_role = cast("repository.StaffRole", role)
            _, token = await repository.create_staff_user(pg_pool, role.title(), staff_role)
            form = await http.get("/login")
            match = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
            assert match is not None
            r = await http.post("/login", data={"csrf_token": match.group(1), "token": token})
            assert r.status_code == 303
            return http

        try:
            yield client
        finally:
            for http in clients:
                await http.aclose()


def parse_csv(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    return list(csv.DictReader(io.StringIO(response.text)))


async def test_the_page_and_every_chart_csv(pg_pool: asyncpg.Pool, app_for: Any) -> None:
    await seed(pg_pool)
    http = await app_for("admin")
    page = await http.get(f"/reports?{QUERY}")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    html = page.text
    assert html.count('<img src="data:image/svg+xml;base64,') == 9
    assert 'aria-current="page">Reports</a>' in html
    tables = by_name(await report_data.build_reports(pg_pool, BERLIN))
    for name in report_data.REPORTS:
        assert f'href="/reports/{name}.csv?{QUERY.replace("&", "&amp;")}"' in html
        rows = parse_csv(await http.get(f"/reports/{name}.csv?{QUERY}"))
        table = tables[name]
        assert [list(r) for r in rows[:1]] == [table.columns]
        assert [list(r.values()) for r in rows] == [
            ["" if v is None else str(v) for v in row] for row in table.rows
        ]
    assert (await http.get(f"/reports/nothing.csv?{QUERY}")).status_code == 404


async def test_exports_parse_back(pg_pool: asyncpg.Pool, app_for: Any) -> None:
    await seed(pg_pool)
    http = await app_for("admin")
    journeys = parse_csv(await http.get(f"/reports/export/journeys.csv?{QUERY}"))
    assert [r["patient_id"] for r in journeys] == ["p_b", "p_a", "p_c", "p_d"]
    a = journeys[1]
    assert a["clinic_id"] == "berlin" and a["stage"] == "recovery"
    assert a["enrolled_at"] == "2027-03-01 11:00"  # Berlin time
    assert a["first_session_at"] == "2027-03-11 11:00"
    assert journeys[0]["flags"] == "no_show;adverse_event"
    assert journeys[0]["enrolled_at"] == "2027-03-01 00:30"

    sessions = parse_csv(await http.get(f"/reports/export/sessions.csv?{QUERY}"))
    assert [(r["patient_id"], r["session_number"], r["status"]) for r in sessions] == [
        ("p_a", "1", "done"),
        ("p_b", "1", "done"),
    ]
    assert sessions[1]["starts_at"] == "2027-03-23 13:00"

    outcomes = parse_csv(await http.get(f"/reports/export/outcomes.csv?{QUERY}"))
    assert [
        (r["patient_id"], r["outcome"], r["global_improvement"], r["pore_visibility"],
         r["satisfaction"])
        for r in outcomes
    ] == [("p_e", "completed", "4", "2", "5"), ("p_f", "further_course", "5", "2", "4")]  # fmt: skip

    every = parse_csv(await http.get("/reports/export/journeys.csv?from=2027-03-01&to=2027-03-28"))
    assert sorted(r["patient_id"] for r in every) == ["p_a", "p_c", "p_d", "p_g", "p_i"]
    assert (await http.get(f"/reports/export/photos.csv?{QUERY}")).status_code == 404


async def test_filters_are_checked(pg_pool: asyncpg.Pool, app_for: Any) -> None:
    await seed(pg_pool)
    http = await app_for("admin")
    for query, message in [
        ("clinic=nowhere", "There is no such clinic."),
        ("from=2027-13-01", "Please give the start date as a date"),
        ("from=2027-03-10&to=2027-03-01", "The start date is after the end date."),
        ("from=2020-01-01&to=2027-01-01", "Please choose at most two years."),
    ]:
        page = await http.get(f"/reports?{query}")
        assert page.status_code == 422 and message in page.text, query
    default = await http.get("/reports")  # every clinic, the last 26 weeks
    assert default.status_code == 200 and "All clinics" in default.text


async def test_reception_is_refused_and_a_login_is_asked(
    pg_pool: asyncpg.Pool, app_for: Any
) -> None:
    await seed(pg_pool)
    http = await app_for("staff")
    page = await http.get(f"/reports?{QUERY}")  # refused by issue 16's reports.view first
    assert page.status_code == 403 and "Clinic reports" not in page.text
    assert (await http.get(f"/reports/outcomes.csv?{QUERY}")).status_code == 403
    assert (await http.get(f"/reports/export/journeys.csv?{QUERY}")).status_code == 403
    assert 'href="/reports"' not in (await http.get("/")).text
    anonymous = await app_for(None)
    r = await anonymous.get("/reports")
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")


async def test_a_manager_sees_the_reports_of_her_clinics(
    pg_pool: asyncpg.Pool, app_for: Any
) -> None:
    await seed(pg_pool)
    http = await app_for("manager")
    page = await http.get(f"/reports?{QUERY}")
    assert page.status_code == 200 and "Clinic reports" in page.text
    assert parse_csv(await http.get(f"/reports/export/outcomes.csv?{QUERY}"))
    # Scoped to Berlin (issue 16): "every clinic" is every clinic she sees, others are refused.
    await pg_pool.execute("UPDATE staff_users SET clinics = ARRAY['berlin'] WHERE role = 'manager'")
    every = "from=2027-03-01&to=2027-03-28"
    journeys = parse_csv(await http.get(f"/reports/export/journeys.csv?{every}"))
    assert sorted(r["patient_id"] for r in journeys) == ["p_a", "p_c", "p_d", "p_i"]
    page = await http.get(f"/reports?{every}")
    assert page.status_code == 200 and 'value="default"' not in page.text
    sessions = parse_csv(await http.get(f"/reports/sessions-per-week.csv?{every}"))
    assert [r["completed"] for r in sessions] == ["1", "1", "0", "1"]  # no G (default clinic)
    refused = await http.get("/reports?clinic=default")
    assert refused.status_code == 422 and "There is no such clinic." in refused.text


def test_weeks_cover_the_range() -> None:
    assert ReportFilter(None, date(2027, 3, 3), date(2027, 3, 15)).weeks() == [
        date(2027, 3, 1),
        date(2027, 3, 8),
        date(2027, 3, 15),
    ]
    assert json.dumps(BERLIN.bounds()[0].isoformat()) == '"2027-03-01T00:00:00+01:00"'


async def test_a_long_range_is_counted_by_month(pg_pool: asyncpg.Pool) -> None:
    await seed(pg_pool)
    long = ReportFilter(None, date(2026, 9, 1), date(2027, 3, 31), "UTC")
    assert long.bucket == "month" and BERLIN.bucket == "week"
    reports = by_name(await report_data.build_reports(pg_pool, long))
    sessions = reports["sessions-per-week"]
    assert sessions.title == "Sessions per month" and sessions.columns[0] == "month"
    assert column(sessions, "month") == [
        "2026-09", "2026-10", "2026-11", "2026-12", "2027-01", "2027-02", "2027-03",
    ]  # fmt: skip
    assert column(sessions, "completed") == [0, 1, 0, 0, 0, 0, 4]  # E; H, G, A, B
    enrolled = column(reports["journeys-by-stage"], "enrolled")
    assert enrolled == [1, 1, 0, 0, 0, 2, 5]  # F; E; H, B (UTC); A, C, D, G, I
