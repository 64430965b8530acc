"""Patients: their own journey, through the signed link token (``/api/me``).

The token (``Authorization: Bearer <token>`` or ``?token=``) names one patient; every route
acts on that patient's journey only. Facts the patient reports carry a natural idempotency key
(one SPF attestation per day, one check-in per session and day), so a double tap counts once;
an ``Idempotency-Key`` header overrides it. Every answer's words are in the patient's language
(``patients.language``; docs/languages.md).
"""

from __future__ import annotations

from typing import Annotated, Final
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Header, status

from activities.i18n import Translator, translator
from api import schemas
from api.deps import PatientDep, ServiceDep
from api.service import JourneyService
from workflows.messages import JourneyStatus, SessionStatus

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

STAGES_WITH_HEADLINE: Final = frozenset(
    {
        "screening",
        "deferred",
        "excluded",
        "awaiting_season",
        "scheduled",
        "session_due",
        "recovery",
        "spf_window",
        "awaiting_review",
        "completed",
        "paused",
        "withdrawn",
    }
)


def headline(t: Translator, stage: str, spf_factor: int | str) -> str:
    """The stage in one plain sentence, in the patient's language (``page.headline.*``)."""
    if stage not in STAGES_WITH_HEADLINE:
        return stage.replace("_", " ")
    return t(f"page.headline.{stage}", factor=spf_factor)


def session_state(t: Translator, state: str) -> str:
    """A session's state in words (``state.*``)."""
    key = f"state.{state}"
    return t(key) if t.has(key) else state


def plain_plan(
    st: JourneyStatus, language: str | None = None, *, spf_factor: int | str = 50
) -> schemas.MyJourney:
    """The patient's plan in plain words in the patient's language (no staff notes, no
    clinician tasks), with dates for the language's locale and times in the clinic's zone.

    Args:
        st: The journey's status.
        language: The patient's language (``patients.language``); English when unknown.
        spf_factor: The clinic protocol's sun-protection factor.
    """
    t = translator(language)
    zone = ZoneInfo(st.timezone)

    def session_text(s: SessionStatus) -> str:
        when = t.when_with_year(s.starts_at, zone) if s.starts_at else t.weekday_date(s.planned_on)
        words = {"number": s.number, "when": when, "state": session_state(t, s.state)}
        if s.arrive_by and s.state in ("planned", "booked"):
            return t("plan.session_arrive", **words, arrive=t.time(s.arrive_by, zone))
        return t("plan.session", **words)

    sessions = [
        schemas.MySession(
            number=s.number,
            date=s.planned_on,
            starts_at=s.starts_at,
            arrive_by=s.arrive_by,
            state=s.state,
            text=session_text(s),
        )
        for s in st.sessions
    ]
    lines = [s.text for s in sessions]
    if st.waiting_reason:
        lines.append(st.waiting_reason)
    if st.spf_until:
        lines.append(t("plan.spf_until", factor=spf_factor, date=t.long_date(st.spf_until)))
    if st.review_on:
        lines.append(t("plan.review_on", date=t.long_date(st.review_on)))
    return schemas.MyJourney(
        patient_id=st.patient_id,
        stage=st.stage,
        headline=headline(t, st.stage, spf_factor),
        next_step=st.next_action,
        sessions=sessions,
        spf_until=st.spf_until,
        review_on=st.review_on,
        lines=lines,
    )


async def _language(service: JourneyService, patient_id: str) -> str | None:
    patient = await service.patient(patient_id)
    return patient.language if patient is not None else None


@router.get("/journey", response_model=schemas.MyJourney, responses=ERRORS)
async def my_journey(patient_id: PatientDep, service: ServiceDep) -> schemas.MyJourney:
    """My plan in plain words, in my language."""
    st = await service.status(patient_id)
    cp = await service.clinic(st.clinic_id)
    return plain_plan(st, await _language(service, patient_id), spf_factor=cp.protocol.spf_factor)


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
    t = translator(await _language(service, patient_id))
    return schemas.Accepted(
        outcome=result.outcome,
        duplicate=result.outcome == "duplicate",
        message=t("me.spf_noted", date=t.long_date(body.on)),
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
    t = translator(await _language(service, patient_id))
    if body.severity is not None:
        return schemas.Accepted(**answer, message=t("me.reaction_alerted"))
    return schemas.Accepted(**answer, message=t("me.reaction_recorded"))
