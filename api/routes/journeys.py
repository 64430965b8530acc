"""Staff: enrol, list, read and steer journeys (``/api/journeys``).

Every route needs a staff bearer token; recording the review needs a clinician or an admin.
An optional ``Idempotency-Key`` header on the POSTs that call an update makes a retry safe
(Temporal runs one update per id).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status

from activities import replies
from activities.repository import JourneyOrder, StaffRow
from api import schemas
from api.access.enforce import ClinicScopeDep
from api.deps import (
    ERROR_RESPONSES,
    IdempotencyKeyHeader,
    PatientIdPath,
    QueryDateTime,
    QueryText,
    ServiceDep,
    StaffDep,
    require_role,
)
from api.service import JourneyService, actor_for, staff_ref
from workflows.messages import ResolveAnomalyRequest, ReviewRequest, Stage
from workflows.replies import ReplyAnsweredRequest

router = APIRouter(prefix="/api/journeys", tags=["journeys"])

ERRORS: dict[int | str, dict[str, object]] = {
    **ERROR_RESPONSES,
    401: {"model": schemas.ErrorBody, "description": "Missing or bad staff token."},
    403: {"model": schemas.ErrorBody, "description": "Token outside its scope or role."},
    404: {"model": schemas.ErrorBody, "description": "Unknown journey."},
    409: {"model": schemas.ErrorBody, "description": "Refused, with every reason."},
    422: {"model": schemas.ErrorBody, "description": "A field breaks a rule."},
    503: {"model": schemas.ErrorBody, "description": "Temporal or PostgreSQL down; retry."},
}
MAX_OFFSET = 1_000_000


def _check_answers(
    service: JourneyService, staff: StaffRow, answers: schemas.ScreeningAnswersIn
) -> None:
    # The latest "today" anywhere on Earth (UTC+14): no patient's today is refused.
    today = (datetime.now(UTC) + timedelta(hours=14)).date()
    service.check_answers(answers, today, role=staff.role, field="body.answers")


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=schemas.EnrolResponse, responses=ERRORS
)
async def enrol(
    body: schemas.EnrolRequest,
    service: ServiceDep,
    staff: StaffDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> schemas.EnrolResponse:
    """Enrol a patient and start their journey; answers with the patient link.

    With an ``Idempotency-Key`` (scoped to the staff member) a retry answers the same patient
    and journey (with a fresh link). Clinician-only screening answers need the clinician role
    (403); the simulation clock needs development or a sandbox clinic (422).
    """
    return await service.enrol(
        body, caller=f"staff:{staff.id}", idempotency_key=idempotency_key, staff=staff
    )


@router.get("", response_model=schemas.JourneyList, responses=ERRORS)
async def list_journeys(
    service: ServiceDep,
    staff: StaffDep,
    scope: ClinicScopeDep,
    stage: Stage | None = None,
    clinic: QueryText(64) = None,  # type: ignore[valid-type]
    flag: QueryText(64) = None,  # type: ignore[valid-type]
    next_action_before: QueryDateTime = None,
    q: QueryText(200, "Part of the name.") = None,  # type: ignore[valid-type]
    order: JourneyOrder = "next_action_at",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> schemas.JourneyList:
    """A page of journeys from the read model, filtered; ``count`` is the total matching."""
    rows, total = await service.list(
        stage=stage,
        clinic_id=clinic,
        flag=flag,
        next_action_before=next_action_before,
        name_query=q,
        order=order,
        limit=limit,
        offset=offset,
        clinics=scope,
    )
    return schemas.JourneyList(
        data=[schemas.JourneySummary.model_validate(r) for r in rows], count=total
    )


@router.get("/{patient_id}", response_model=schemas.JourneyDetail, responses=ERRORS)
async def get_journey(
    patient_id: PatientIdPath, service: ServiceDep, staff: StaffDep
) -> schemas.JourneyDetail:
    """The journey's live status (workflow query), the patient record and the timeline."""
    st = await service.status(patient_id)
    patient = await service.patient(patient_id)
    timeline = await service.timeline(patient_id)
    return schemas.JourneyDetail(
        patient=schemas.PatientPublic.model_validate(patient) if patient else None,
        status=st.model_dump(mode="json"),
        stage=st.stage,
        sessions=[schemas.SessionOut.model_validate(s.model_dump()) for s in st.sessions],
        timeline=[schemas.TimelineEvent.model_validate(e) for e in timeline],
    )


@router.post("/{patient_id}/pause", response_model=schemas.ControlOut, responses=ERRORS)
async def pause(
    patient_id: PatientIdPath,
    body: schemas.ReasonBody,
    service: ServiceDep,
    staff: StaffDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> schemas.ControlOut:
    """Hold every timer-driven step until resumed."""
    r = await service.pause(
        patient_id, body.reason, actor=actor_for(staff), request_id=idempotency_key
    )
    return schemas.ControlOut.model_validate(r.model_dump())


@router.post("/{patient_id}/resume", response_model=schemas.ControlOut, responses=ERRORS)
async def resume(
    patient_id: PatientIdPath,
    body: schemas.ReasonBody,
    service: ServiceDep,
    staff: StaffDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> schemas.ControlOut:
    """Resume where the journey left off (dates that passed are replanned)."""
    r = await service.resume(
        patient_id, body.reason, actor=actor_for(staff), request_id=idempotency_key
    )
    return schemas.ControlOut.model_validate(r.model_dump())


@router.post("/{patient_id}/withdraw", response_model=schemas.ControlOut, responses=ERRORS)
async def withdraw(
    patient_id: PatientIdPath,
    body: schemas.ReasonBody,
    service: ServiceDep,
    staff: StaffDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> schemas.ControlOut:
    """End the journey for good."""
    r = await service.withdraw(
        patient_id, body.reason, actor=actor_for(staff), request_id=idempotency_key
    )
    return schemas.ControlOut.model_validate(r.model_dump())


@router.post("/{patient_id}/review", response_model=schemas.ReviewOut, responses=ERRORS)
async def review(
    patient_id: PatientIdPath,
    body: schemas.ReviewBody,
    service: ServiceDep,
    staff: Annotated[StaffRow, Depends(require_role("clinician", "admin"))],
    idempotency_key: IdempotencyKeyHeader = None,
) -> schemas.ReviewOut:
    """The 3-month review outcome (clinician or admin)."""
    r = await service.review(
        patient_id,
        ReviewRequest(
            outcome=body.outcome,
            further_sessions=body.further_sessions,
            note_ref=body.note_ref or None,  # an empty reference is no reference
            reviewed_by=actor_for(staff),
            staff_ref=staff_ref(staff),
            global_improvement=body.global_improvement,
            pore_visibility=body.pore_visibility,
            adverse_events_summary=body.adverse_events_summary or None,
        ),
        request_id=idempotency_key,
    )
    return schemas.ReviewOut.model_validate(r.model_dump())


@router.post("/{patient_id}/screening", response_model=schemas.ScreeningOut, responses=ERRORS)
async def screening(
    patient_id: PatientIdPath,
    body: schemas.ScreeningBody,
    service: ServiceDep,
    staff: StaffDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> schemas.ScreeningOut:
    """Re-screen answers (in screening or deferred)."""
    _check_answers(service, staff, body.answers)
    r = await service.screening(
        patient_id,
        body.answers.to_answers(),
        actor=actor_for(staff),
        request_id=idempotency_key,
        staff_ref=staff_ref(staff),
    )
    if body.answers.needs_clinician:
        await service.record_clinician(patient_id, staff, body.answers.needs_clinician)
    return schemas.ScreeningOut.model_validate(r.model_dump())


@router.post(
    "/{patient_id}/pre-session-check",
    response_model=schemas.PreSessionCheckOut,
    responses=ERRORS,
)
async def pre_session_check(
    patient_id: PatientIdPath,
    body: schemas.PreSessionCheckBody,
    service: ServiceDep,
    staff: StaffDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> schemas.PreSessionCheckOut:
    """The check on the day of a session; a new contraindication defers it."""
    _check_answers(service, staff, body.answers)
    r = await service.pre_session_check(
        patient_id,
        body.session_number,
        body.answers.to_answers(),
        actor=actor_for(staff),
        request_id=idempotency_key,
        staff_ref=staff_ref(staff),
    )
    if body.answers.needs_clinician:
        await service.record_clinician(patient_id, staff, body.answers.needs_clinician)
    return schemas.PreSessionCheckOut.model_validate(r.model_dump())


@router.post("/{patient_id}/reschedule", response_model=schemas.RescheduleOut, responses=ERRORS)
async def reschedule(
    patient_id: PatientIdPath,
    body: schemas.RescheduleBody,
    service: ServiceDep,
    staff: StaffDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> schemas.RescheduleOut:
    """Move a session; later ones shift only as needed to keep the interval."""
    r = await service.reschedule(
        patient_id, body.session_number, body.new_date, body.new_time, request_id=idempotency_key
    )
    return schemas.RescheduleOut.model_validate(r.model_dump())


@router.post(
    "/{patient_id}/replies/{reply_id}/answered",
    response_model=schemas.ReplyAnsweredOut,
    responses=ERRORS,
)
async def answer_reply(
    patient_id: PatientIdPath,
    reply_id: Annotated[int, Path(ge=1, le=2**62)],
    body: schemas.ReplyAnsweredBody,
    service: ServiceDep,
    staff: StaffDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> schemas.ReplyAnsweredOut:
    """Close the task a patient's reply became (the staff member answered it), with a note for
    the timeline; refused (409) when the journey has no open task for that reply."""
    r = await service.answer_reply(
        patient_id,
        ReplyAnsweredRequest(
            reply_id=reply_id,
            note=body.note,
            requested_by="clinician" if actor_for(staff) == "clinician" else "staff",
            staff_ref=staff_ref(staff),
        ),
        request_id=idempotency_key,
    )
    await service.db(
        replies.mark_answered(service.pool, patient_id, reply_id, staff_ref(staff) or "staff")
    )
    return schemas.ReplyAnsweredOut.model_validate(r.model_dump())


@router.post(
    "/{patient_id}/anomalies/{anomaly_id}/resolve",
    response_model=schemas.ResolveAnomalyOut,
    responses=ERRORS,
)
async def resolve_anomaly(
    patient_id: PatientIdPath,
    anomaly_id: Annotated[int, Path(ge=1, le=1_000_000)],
    body: schemas.ResolveAnomalyBody,
    service: ServiceDep,
    staff: StaffDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> schemas.ResolveAnomalyOut:
    """Apply a fact the journey kept for staff (refused, 409, with the reasons while the
    journey still cannot take it) or dismiss it; the note and the staff member go to the
    timeline. Open anomalies are in the journey's ``status.anomalies``."""
    r = await service.resolve_anomaly(
        patient_id,
        ResolveAnomalyRequest(
            anomaly_id=anomaly_id,
            action=body.action,
            note=body.note,
            requested_by=actor_for(staff),
            staff_ref=staff_ref(staff),
        ),
        request_id=idempotency_key,
    )
    return schemas.ResolveAnomalyOut.model_validate(r.model_dump())
