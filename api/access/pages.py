"""The access log for the clinic's privacy officer: ``/access-log`` (a page, newest first,
filtered by patient or staff member), ``/access-log.csv`` (the same lines as CSV) and
``GET /api/admin/access-log`` (JSON). Permission ``access_log.view``; a member scoped to some
clinics sees those clinics' lines only (in SQL)."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from api.access import store
from api.access.enforce import ClinicScopeDep, current_principal
from workflows.ids import PATIENT_ID_PATTERN

__all__ = ["api_router", "page_router"]

page_router = APIRouter(include_in_schema=False)
api_router = APIRouter(prefix="/api/admin", tags=["admin"])

PatientFilter = Annotated[
    str | None, Query(max_length=64, pattern=PATIENT_ID_PATTERN, description="One patient's id.")
]
StaffFilter = Annotated[int | None, Query(ge=1, le=2**62, description="One staff member's id.")]
BeforeFilter = Annotated[int | None, Query(ge=1, le=2**62, description="Lines older than this.")]
LimitParam = Annotated[int, Query(ge=1, le=5000)]


async def _entries(
    request: Request,
    scope: list[str] | None,
    patient_id: str | None,
    staff_id: int | None,
    before: int | None,
    limit: int,
) -> list[store.AccessEntry]:
    pool: asyncpg.Pool = request.app.state.pool
    return await store.list_access(
        pool,
        clinics=scope,
        patient_id=patient_id,
        staff_id=staff_id,
        before_id=before,
        limit=limit,
    )


@page_router.get("/access-log")
async def access_log_page(
    request: Request,
    scope: ClinicScopeDep,
    patient_id: PatientFilter = None,
    staff_id: StaffFilter = None,
    before: BeforeFilter = None,
) -> Response:
    """The newest 200 lines (a link pages on)."""
    from api.web.routes import render_page  # the pages import api.access

    entries = await _entries(request, scope, patient_id, staff_id, before, 200)
    return render_page(
        request,
        "access_log.html",
        {
            "staff": current_principal(request).staff,
            "page": "access_log",
            "entries": entries,
            "patient_id": patient_id or "",
            "staff_id": staff_id or "",
            "older": entries[-1].id if len(entries) == 200 else None,
            "scope": scope,
        },
    )


@page_router.get("/access-log.csv")
async def access_log_csv(
    request: Request,
    scope: ClinicScopeDep,
    patient_id: PatientFilter = None,
    staff_id: StaffFilter = None,
    limit: LimitParam = 5000,
) -> Response:
    """The same lines as CSV (ids only), newest first."""
    entries = await _entries(request, scope, patient_id, staff_id, None, limit)
    return Response(
        store.access_csv(entries),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="access-log.csv"',
            "Cache-Control": "no-store",
        },
    )


@api_router.get("/access-log", response_model=list[store.AccessEntry])
async def access_log(
    request: Request,
    scope: ClinicScopeDep,
    patient_id: PatientFilter = None,
    staff_id: StaffFilter = None,
    before: BeforeFilter = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[store.AccessEntry]:
    """Access log lines, newest first (``before``: an id, to page on)."""
    return await _entries(request, scope, patient_id, staff_id, before, limit)
