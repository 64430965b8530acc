"""Patients: their own journey, through the signed link token (``/api/me``).

The token (``Authorization: Bearer <token>`` or ``?token=``) names one patient; every route
acts on that patient's journey only. Facts the patient reports carry a natural idempotency key
(one SPF attestation per day, one check-in per session and day), so a double tap counts once;
an ``Idempotency-Key`` header overrides it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Header, status

from api import schemas
from api.deps import PatientDep, ServiceDep
from workflows.messages import JourneyStatus
from workflows.reasons import format_date, format_weekday_date

router = APIRouter(prefix="/api/me", tags=["patients"])

ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": schemas.ErrorBody, "description": "Missing, bad or expired link."},
    403: {"model": schemas.ErrorBody, "description": "Another patient's journey."},
    404: {"model": schemas.ErrorBody, "description": "No journey for this link."},
    409: {"model": schemas.ErrorBody, "description": "Refused, with every reason."},
    422: {"model": schemas.ErrorBody, "description": "A field breaks a rule."},
    503: {"model": schemas.ErrorBody, "description": "Temporarily unavailable; retry."},
}
# A reported fact: its 409 may also say it was kept for the clinic's staff.
FACT_ERRORS: dict[int | str, dict[str, object]] = {
    **ERRORS,
    409: {
        "model": schemas.FactKeptBody,
        "description": "Not applied: kept for the clinic's staff (error FactKeptForStaff, "
        "with the reasons), or refused (a closed journey).",
    },
}
IdempotencyKeyHeader = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
]

HEADLINES: dict[str, str] = {
    "screening": "We are checking that the treatment is right for you.",
    "deferred": "Your treatment is on hold for now; the clinic will check again.",
    "excluded": "This treatment is not suitable for you; the clinic will explain why.",
    "awaiting_season": "Your course starts when the season allows it.",
    "scheduled": "Your next session is booked.",
    "session_due": "Your session is today.",
    "recovery": "Your skin is recovering from your last session.",
    "spf_window": "Your sessions are done; protect your skin with SPF 50 every day.",
    "awaiting_review": "Your review with the clinic is due.",
    "completed": "Your course is complete.",
    "paused": "Your journey is paused; the clinic will contact you.",
    "withdrawn": "Your journey has ended.",
}
SESSION_WORDS: dict[str, str] = {
    "planned": "planned",
    "booked": "booked",
    "done": "done",
    "no_show": "missed (we will book a new date)",
    "deferred": "postponed",
    "cancelled": "cancelled",
}


def plain_plan(st: JourneyStatus) -> schemas.MyJourney:
    """The patient's plan in plain words (no staff notes, no clinician tasks), with times in
    the clinic's zone."""
    zone = ZoneInfo(st.timezone)

    def hhmm(at: datetime) -> str:
        return at.astimezone(zone).strftime("%H:%M")

    sessions = [
        schemas.MySession(
            number=s.number,
            date=s.planned_on,
            starts_at=s.starts_at,
            arrive_by=s.arrive_by,
            state=s.state,
            text=f"Session {s.number}: {format_weekday_date(s.planned_on)}"
            + (f" at {hhmm(s.starts_at)}" if s.starts_at else "")
            + f", {SESSION_WORDS.get(s.state, s.state)}"
            + (
                f"; please arrive by {hhmm(s.arrive_by)} for the numbing cream"
                if s.arrive_by and s.state in ("planned", "booked")
                else ""
            )
            + ".",
        )
        for s in st.sessions
    ]
    lines = [s.text for s in sessions]
    if st.waiting_reason:
        lines.append(st.waiting_reason)
    if st.spf_until:
        lines.append(f"Use SPF 50 every day until {format_date(st.spf_until)}.")
    if st.review_on:
        lines.append(f"Your review is planned for {format_date(st.review_on)}.")
    return schemas.MyJourney(
        patient_id=st.patient_id,
        stage=st.stage,
        headline=HEADLINES.get(st.stage, st.stage.replace("_", " ")),
        next_step=st.next_action,
        sessions=sessions,
        spf_until=st.spf_until,
        review_on=st.review_on,
        lines=lines,
    )


@router.get("/journey", response_model=schemas.MyJourney, responses=ERRORS)
async def my_journey(patient_id: PatientDep, service: ServiceDep) -> schemas.MyJourney:
    """My plan in plain words."""
    return plain_plan(await service.status(patient_id))


@router.post("/reschedule", response_model=schemas.RescheduleOut, responses=ERRORS)
async def my_reschedule(
    body: schemas.MyReschedule,
    patient_id: PatientDep,
    service: ServiceDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> schemas.RescheduleOut:
    """Ask to move one of my sessions; refused (409) with every rule it breaks."""
    r = await service.reschedule(
        patient_id,
        body.session_number,
        body.new_date,
        body.new_time,
        by_patient=True,
        request_id=idempotency_key,
    )
    return schemas.RescheduleOut.model_validate(r.model_dump())


@router.post(
    "/spf-attestation",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=schemas.Accepted,
    responses=FACT_ERRORS,
)
async def my_spf_attestation(
    body: schemas.MySpfAttestation,
    patient_id: PatientDep,
    service: ServiceDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> schemas.Accepted:
    """I used sun protection on this date (counted once per date).

    202 once the journey applied it (``duplicate``: it had already); 409 ``FactKeptForStaff``
    when it cannot apply it now (kept for the clinic's staff, with the reasons).
    """
    result = await service.spf_attested(patient_id, body.on, idempotency_key=idempotency_key)
    return schemas.Accepted(
        outcome=result.outcome,
        duplicate=result.outcome == "duplicate",
        message=f"Thank you: sun protection on {format_date(body.on)} noted.",
    )


@router.post(
    "/reaction",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=schemas.Accepted,
    responses=FACT_ERRORS,
)
async def my_reaction(
    body: schemas.MyReaction,
    patient_id: PatientDep,
    service: ServiceDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> schemas.Accepted:
    """How my skin is after a session; with ``severity`` the clinic is alerted at once.

    202 once the journey applied it (``duplicate``: it had already); 409 ``FactKeptForStaff``
    when it cannot apply it now (kept for the clinic's staff, with the reasons).
    """
    result = await service.report_reaction(
        patient_id,
        body.session_number,
        body.day,
        body.reaction,
        severity=body.severity,
        idempotency_key=idempotency_key,
    )
    answer = {"outcome": result.outcome, "duplicate": result.outcome == "duplicate"}
    if body.severity is not None:
        return schemas.Accepted(
            **answer,
            message="Thank you. The clinic has been alerted and will contact you; "
            "if it is urgent, call the clinic or emergency services.",
        )
    return schemas.Accepted(**answer, message="Thank you: your check-in is recorded.")
