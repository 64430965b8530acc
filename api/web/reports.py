"""The clinic reports page and its CSV downloads (issue 19 item 4; docs/reports.md).

    GET /reports?clinic=&from=&to=          the page: nine charts with their numbers
    GET /reports/{report}.csv?…             one chart's numbers
    GET /reports/export/{export}.csv?…      journeys, sessions or outcomes for a spreadsheet

Who may: :data:`REPORT_ACCESS`, checked by :func:`require_role` in this one place (a manager or
an admin; others get a 403 page). Issue 16's permission table maps it to ``reports.view`` /
``export.read`` later without touching the routes. Everything is read from PostgreSQL
(:mod:`api.web.report_data`); the charts are drawn by :mod:`api.web.report_charts`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Coroutine
from datetime import date, timedelta
from typing import Annotated, Any, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse

from activities.repository import StaffRow
from api.access.enforce import principal_clinics
from api.web import report_charts, report_data
from api.web.report_data import ReportFilter
from api.web.routes import (
    _clinics,
    _error_page,
    _page_staff,
    _PageRoute,
    _pool,
    _render,
    _security_headers,
)

__all__ = ["REPORT_ACCESS", "require_role", "router"]

# The roles that may see reports and exports: the one place to map to issue 16's permission.
REPORT_ACCESS: Final = ("admin", "manager")
DEFAULT_WEEKS: Final = 26
_NAME = re.compile(r"^[a-z][a-z-]{0,40}$")


class _NotPermitted(Exception):
    """The staff member's role may not see this page (403)."""


class _ReportRoute(_PageRoute):
    """The dashboard's page route, plus a 403 page for a role that may not see reports."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except _NotPermitted:
                return _error_page(
                    request,
                    403,
                    "Not available for your role",
                    "Clinic reports and exports are for managers and administrators.",
                )

        return handler


router = APIRouter(route_class=_ReportRoute, include_in_schema=False)


def require_role(*roles: str) -> Callable[[Request], Awaitable[StaffRow]]:
    """A page dependency: the logged-in staff member (else the login page) with one of
    ``roles`` (else a 403 page)."""

    async def check(request: Request) -> StaffRow:
        staff = await _page_staff(request)
        if staff.role not in roles:
            raise _NotPermitted
        return staff

    return check


ReportStaff = Annotated[StaffRow, Depends(require_role(*REPORT_ACCESS))]


class _BadFilter(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _parse_date(value: str | None, label: str) -> date | None:
    if not value:
        return None
    try:
        parsed = date.fromisoformat(value)
    except ValueError:
        raise _BadFilter(f"Please give the {label} date as a date, e.g. 2027-01-31.") from None
    if not 1900 <= parsed.year <= 2100:
        raise _BadFilter(f"Please give the {label} date between 1900 and 2100.")
    return parsed


async def _filter(request: Request) -> tuple[ReportFilter, dict[str, tuple[str, str]]]:
    """The filter of the query string (``clinic``, ``from``, ``to``), with defaults: every
    clinic the staff member sees (issue 16's clinic scope), the last 26 weeks to today in the
    clinic's zone. Returns the filter and the clinics to offer.

    Raises:
        _BadFilter: an unknown or unseen clinic, a malformed date, a range backwards or too long.
    """
    clinics = await _clinics(_pool(request))
    seen = principal_clinics(request)
    if seen is not None:
        clinics = {cid: v for cid, v in clinics.items() if cid in seen}
    query = request.query_params
    clinic = query.get("clinic") or None
    if clinic is not None and clinic not in clinics:
        raise _BadFilter("There is no such clinic.")
    tz = clinics[clinic][1] if clinic is not None else "UTC"
    end = _parse_date(query.get("to"), "end") or report_data.today_in(tz)
    start = _parse_date(query.get("from"), "start") or end - timedelta(weeks=DEFAULT_WEEKS) + (
        timedelta(days=1)
    )
    if start > end:
        raise _BadFilter("The start date is after the end date.")
    if (end - start).days > report_data.MAX_RANGE_DAYS:
        raise _BadFilter("Please choose at most two years.")
    scope = None if seen is None else tuple(sorted(seen))
    return ReportFilter(clinic, start, end, tz, scope), clinics


def _query(flt: ReportFilter) -> str:
    return urlencode(
        {"clinic": flt.clinic_id or "", "from": flt.start.isoformat(), "to": flt.end.isoformat()}
    )


def _filename(stem: str, flt: ReportFilter) -> str:
    return f"{stem}_{flt.clinic_id or 'all-clinics'}_{flt.start}_{flt.end}.csv"


def _csv_headers(filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{filename}"'}


@router.get("/reports")
async def reports_page(request: Request, staff: ReportStaff) -> Response:
    """The clinic reports: charts with their numbers, filters, CSV downloads and exports."""
    try:
        flt, clinics = await _filter(request)
    except _BadFilter as bad:
        clinics = await _clinics(_pool(request))
        seen = principal_clinics(request)
        if seen is not None:
            clinics = {cid: v for cid, v in clinics.items() if cid in seen}
        return _render(
            request,
            "reports.html",
            {
                "staff": staff,
                "page": "reports",
                "error": bad.message,
                "clinics": clinics,
                "form": dict(request.query_params),
                "reports": [],
            },
            status_code=422,
        )
    tables = await report_data.build_reports(_pool(request), flt)
    reports = []
    for table in tables:
        svg = report_charts.chart_svg(table)
        reports.append(
            {
                "table": table,
                "image": None if svg is None else report_charts.chart_data_url(svg),
                "csv": f"/reports/{table.name}.csv?{_query(flt)}",
            }
        )
    clinic_name = clinics[flt.clinic_id][0] if flt.clinic_id else "All clinics"
    return _render(
        request,
        "reports.html",
        {
            "staff": staff,
            "page": "reports",
            "error": None,
            "clinics": clinics,
            "clinic_name": clinic_name,
            "flt": flt,
            "form": {
                "clinic": flt.clinic_id or "",
                "from": flt.start.isoformat(),
                "to": flt.end.isoformat(),
            },
            "reports": reports,
            "exports": [
                (name, label, f"/reports/export/{name}.csv?{_query(flt)}")
                for name, label in report_data.EXPORTS.items()
            ],
        },
    )


@router.get("/reports/export/{name}.csv")
async def export_csv(request: Request, name: str, staff: ReportStaff) -> Response:
    """Journeys, sessions or outcomes of the filter as CSV for a spreadsheet (streamed)."""
    if name not in report_data.EXPORTS:
        return _error_page(request, 404, "No such export", "There is no export of that name.")
    try:
        flt, _ = await _filter(request)
    except _BadFilter as bad:
        return _error_page(request, 422, "Cannot export", bad.message)
    response = StreamingResponse(
        report_data.export_rows(_pool(request), flt, name),
        media_type="text/csv; charset=utf-8",
        headers=_csv_headers(_filename(name, flt)),
    )
    _security_headers(response)
    return response


@router.get("/reports/{name}.csv")
async def report_csv(request: Request, name: str, staff: ReportStaff) -> Response:
    """One chart's numbers as CSV (the same table the page shows under the chart)."""
    if not _NAME.match(name) or name not in report_data.REPORTS:
        return _error_page(request, 404, "No such report", "There is no report of that name.")
    try:
        flt, _ = await _filter(request)
    except _BadFilter as bad:
        return _error_page(request, 422, "Cannot download", bad.message)
    table = await report_data.build_report(_pool(request), flt, name)
    assert table is not None
    response = Response(
        report_data.csv_text(table.columns, table.rows),
        media_type="text/csv; charset=utf-8",
        headers=_csv_headers(_filename(name, flt)),
    )
    _security_headers(response)
    return response
