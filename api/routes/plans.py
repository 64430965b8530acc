"""Staff: the planner's answer for a prospective patient (``/api/plans``)."""

from __future__ import annotations

from fastapi import APIRouter

from api import schemas
from api.deps import ServiceDep, StaffDep

router = APIRouter(prefix="/api/plans", tags=["plans"])


@router.post(
    "/preview",
    response_model=schemas.PlanPreviewOut,
    responses={
        401: {"model": schemas.ErrorBody, "description": "Missing or bad staff token."},
        422: {"model": schemas.ErrorBody, "description": "A field breaks a rule."},
        503: {"model": schemas.ErrorBody, "description": "PostgreSQL down; retry."},
    },
)
async def preview(
    body: schemas.PlanPreviewRequest, service: ServiceDep, staff: StaffDep
) -> schemas.PlanPreviewOut:
    """Plan a course (and screen, if answers are given) without enrolling anyone."""
    return await service.preview_plan(body)
