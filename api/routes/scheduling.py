"""Built-in scheduling (docs/scheduling.md): a clinic's resources, hours, closures and slot
rules (``/api/clinics/{clinic_id}/scheduling``), the free times of one session for staff and
for the patient, and a patient's scheduling preferences.

Free times are the clinic's free slots on the days the clinical rules allow for the session
(:func:`workflows.booking_window.allowed_days`, the same rule set the journey books with),
ordered by the patient's preferences; the reschedule request takes one as ``new_date`` +
``new_time``. A clinic without resources on file has no free times to offer
(``capacity_known`` false): the allowed days are still listed.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Final

from fastapi import APIRouter, HTTPException, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field

from api import schemas
from api.deps import ERROR_RESPONSES, PatientDep, PatientIdPath, ServiceDep
from api.service import InvalidRequest, JourneyService
from scheduling import store as slots
from scheduling.preferences import SlotPreferences
from scheduling.resources import (
    RESOURCE_ID_PATTERN,
    Closure,
    Label,
    LocalTime,
    Resource,
    SchedulingSetup,
    SlotRules,
    WeekHours,
)
from workflows.booking import FreeTime, ResourceKind, SlotRelease, SlotResource
from workflows.booking_window import allowed_days
from workflows.bounds import ClinicDate, Int64, safe_text
from workflows.calendar import clinic_today
from workflows.changes import SessionSlot
from workflows.ids import workflow_id
from workflows.messages import JourneyStatus
from workflows.protocol import ClinicProtocol

router = APIRouter(tags=["scheduling"])

ERRORS: dict[int | str, dict[str, object]] = {
    **ERROR_RESPONSES,
    401: {"model": schemas.ErrorBody, "description": "Missing or bad credential."},
    403: {"model": schemas.ErrorBody, "description": "Outside the credential's role or scope."},
    404: {
        "model": schemas.ErrorBody,
        "description": "Unknown clinic, resource, closure or journey.",
    },
    422: {"model": schemas.ErrorBody, "description": "A field breaks a rule."},
    503: {"model": schemas.ErrorBody, "description": "PostgreSQL or Temporal down; retry."},
}
MAX_FREE_TIMES: Final = 20
PER_DAY: Final = 3

ClinicIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
ResourceIdPath = Annotated[str, Path(pattern=RESOURCE_ID_PATTERN)]
SessionPath = Annotated[int, Path(ge=1, le=100)]
LimitQuery = Annotated[int, Query(ge=1, le=MAX_FREE_TIMES)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResourceIn(_In):
    """A device, room or practitioner (ids and display labels only, never a person's name)."""

    kind: ResourceKind
    label: Label = ""
    hours: WeekHours | None = Field(
        default=None, description="Its own working hours; none: the clinic's default hours."
    )
    active: bool = True


class ClosureIn(_In):
    """Whole days (inclusive), clinic-wide or for one resource."""

    starts_on: ClinicDate
    ends_on: ClinicDate
    reason: safe_text(200, min_length=1)  # type: ignore[valid-type]
    resource_id: str | None = Field(default=None, pattern=RESOURCE_ID_PATTERN)


class FreeTimeOut(BaseModel):
    """A free start: ``on`` + ``local_time`` go to the reschedule request as ``new_date`` +
    ``new_time``."""

    on: date
    starts_at: datetime
    local_time: LocalTime
    resources: list[SlotResource] = []

    @classmethod
    def of(cls, f: FreeTime) -> FreeTimeOut:
        return cls(on=f.on, starts_at=f.starts_at, local_time=f.local_time, resources=f.resources)


class FreeTimesOut(BaseModel):
    """The free start times of one session inside its allowed window."""

    session: int
    capacity_known: bool
    """False: the clinic has no resources on file; only the allowed days are known."""
    allowed_days: list[date]
    free_times: list[FreeTimeOut]


def _not_found(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_404_NOT_FOUND, detail=[{"rule": "not_found", "message": message}]
    )


async def _known_clinic(service: JourneyService, clinic_id: str) -> None:
    found = await service.db(
        service.pool.fetchval("SELECT 1 FROM clinics WHERE clinic_id = $1", clinic_id)
    )
    if not found:
        raise _not_found(f"No clinic {clinic_id!r}.")


# ---------------------------------------------------------------- the clinic's resources


@router.get("/api/clinics/{clinic_id}/scheduling", response_model=SchedulingSetup, responses=ERRORS)
async def get_scheduling(clinic_id: ClinicIdPath, service: ServiceDep) -> SchedulingSetup:
    """The clinic's resources (inactive ones too), default hours, closures and slot rules."""
    await _known_clinic(service, clinic_id)
    return await service.db(slots.get_scheduling(service.pool, clinic_id))


@router.put("/api/clinics/{clinic_id}/scheduling/rules", response_model=SlotRules, responses=ERRORS)
async def put_rules(clinic_id: ClinicIdPath, body: SlotRules, service: ServiceDep) -> SlotRules:
    """Replace the slot rules: length by pore grade, turnover, start grid, what a session needs."""
    await _known_clinic(service, clinic_id)
    await service.db(slots.set_rules(service.pool, clinic_id, body))
    return body


@router.put("/api/clinics/{clinic_id}/scheduling/hours", response_model=WeekHours, responses=ERRORS)
async def put_hours(clinic_id: ClinicIdPath, body: WeekHours, service: ServiceDep) -> WeekHours:
    """Replace the clinic's default working hours (local time; a weekday left out is closed)."""
    await _known_clinic(service, clinic_id)
    await service.db(slots.set_default_hours(service.pool, clinic_id, body))
    return body


@router.put(
    "/api/clinics/{clinic_id}/scheduling/resources/{resource_id}",
    response_model=Resource,
    responses=ERRORS,
)
async def put_resource(
    clinic_id: ClinicIdPath, resource_id: ResourceIdPath, body: ResourceIn, service: ServiceDep
) -> Resource:
    """Create or replace a resource (its own hours replaced; none: the clinic's hours)."""
    await _known_clinic(service, clinic_id)
    resource = Resource(resource_id=resource_id, **body.model_dump())
    try:
        await service.db(slots.upsert_resource(service.pool, clinic_id, resource))
    except slots.SchedulingLimitError as error:
        raise InvalidRequest("path.resource_id", "too_many_resources", str(error)) from None
    return resource


@router.delete(
    "/api/clinics/{clinic_id}/scheduling/resources/{resource_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=ERRORS,
)
async def delete_resource(
    clinic_id: ClinicIdPath, resource_id: ResourceIdPath, service: ServiceDep
) -> None:
    """Take a resource out of scheduling (deactivated: its reservations are kept)."""
    if not await service.db(slots.deactivate_resource(service.pool, clinic_id, resource_id)):
        raise _not_found(f"No resource {resource_id!r} in clinic {clinic_id!r}.")


class HeldSession(BaseModel):
    """A booked session that still holds a slot on a closure's days."""

    patient_id: str
    course_number: int
    session_number: int
    starts_at: datetime
    resources: list[str]


class ClosureOut(Closure):
    """The closure as stored, and the booked sessions on its days: a closure does not move
    them, staff reschedule each one (the free times of ``/sessions/{n}/free-times``)."""

    held_sessions: list[HeldSession] = Field(default_factory=list)


@router.post(
    "/api/clinics/{clinic_id}/scheduling/closures",
    status_code=status.HTTP_201_CREATED,
    response_model=ClosureOut,
    responses=ERRORS,
)
async def post_closure(clinic_id: ClinicIdPath, body: ClosureIn, service: ServiceDep) -> ClosureOut:
    """Add a closure or holiday. Sessions already booked on its days are not moved: the answer
    lists them (``held_sessions``) so staff can reschedule each one."""
    await _known_clinic(service, clinic_id)
    try:
        closure = Closure(**body.model_dump())
    except ValueError as error:
        raise InvalidRequest("body", "closure", str(error).splitlines()[-1]) from None
    try:
        stored = await service.db(slots.add_closure(service.pool, clinic_id, closure))
    except LookupError as error:
        raise InvalidRequest("body.resource_id", "unknown_resource", str(error)) from None
    except slots.SchedulingLimitError as error:
        raise InvalidRequest("body", "too_many_closures", str(error)) from None
    async with service.pool.acquire() as conn:
        held = await service.db(slots.held_during(conn, clinic_id, stored))
    return ClosureOut(
        **stored.model_dump(),
        held_sessions=[HeldSession(**dict(r)) for r in held],
    )


@router.delete(
    "/api/clinics/{clinic_id}/scheduling/closures/{closure_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=ERRORS,
)
async def delete_closure(
    clinic_id: ClinicIdPath,
    closure_id: Annotated[Int64, Path(ge=1)],
    service: ServiceDep,
) -> None:
    """Remove a closure."""
    if not await service.db(slots.delete_closure(service.pool, clinic_id, closure_id)):
        raise _not_found(f"No closure {closure_id} in clinic {clinic_id!r}.")


# ---------------------------------------------------------------- free times, preferences


def _journey_now(st: JourneyStatus) -> datetime:
    """The journey's clock (the simulation clock of a sandbox journey, else real time)."""
    if st.time_scale != 1 and st.journey_now is not None:
        return st.journey_now
    return datetime.now(UTC)


def _duration(st: JourneyStatus, cp: ClinicProtocol) -> int:
    # As the journey asks for it (workflows/journey/slots.py): the protocol's session length.
    p = cp.protocol
    return p.session_minutes_max if st.pore_grade == "large" else p.session_minutes_min


async def session_free_times(
    service: JourneyService, patient_id: str, session: int, limit: int = MAX_FREE_TIMES
) -> FreeTimesOut:
    """The free times of session ``session`` of the patient's journey (staff and patient).

    Raises:
        InvalidRequest: the journey has no such session, or it is done.
        JourneyNotFound: no such journey.
    """
    return await free_times_for(service, await service.status(patient_id), session, limit)


async def free_times_for(
    service: JourneyService, st: JourneyStatus, session: int, limit: int = MAX_FREE_TIMES
) -> FreeTimesOut:
    """:func:`session_free_times` for a status already at hand (the patient page reads it from
    the read model).

    Raises:
        InvalidRequest: the journey has no such session, or it is done.
    """
    patient_id = st.patient_id
    current = next((s for s in st.sessions if s.number == session), None)
    if current is None or current.state in ("done", "cancelled"):
        raise InvalidRequest(
            "path.session",
            "no_such_session",
            f"The journey has no session {session} to book"
            + (" (it is done)." if current is not None and current.state == "done" else "."),
        )
    cp = await service.clinic(st.clinic_id)
    now = _journey_now(st)
    course = [
        SessionSlot(number=s.number, on=s.planned_on, done=s.state == "done")
        for s in st.sessions
        if s.state != "cancelled"
    ]
    days = allowed_days(
        session,
        course,
        cp,
        today=clinic_today(now, cp.clinic.timezone),
        trips=st.trips,
        conservative="conservative_settings" in st.flags,
    )
    known = await service.db(slots.has_resources(service.pool, st.clinic_id))
    if not known or not days:
        return FreeTimesOut(session=session, capacity_known=known, allowed_days=days, free_times=[])
    prefs = await service.db(slots.get_preferences(service.pool, patient_id))
    times = await service.db(
        slots.free_times(
            service.pool,
            st.clinic_id,
            days,
            st.pore_grade,
            limit,
            prefs,
            per_day=PER_DAY,
            duration_minutes=_duration(st, cp),
            preferred_on=current.planned_on,
            not_before=now,
            ignore=SlotRelease(
                workflow_id=workflow_id(patient_id),
                course_number=st.course_number,
                session_number=session,
            ),
        )
    )
    return FreeTimesOut(
        session=session,
        capacity_known=known,
        allowed_days=days,
        free_times=[FreeTimeOut.of(f) for f in times],
    )


@router.get(
    "/api/journeys/{patient_id}/sessions/{session}/free-times",
    response_model=FreeTimesOut,
    responses=ERRORS,
)
async def staff_free_times(
    patient_id: PatientIdPath,
    session: SessionPath,
    service: ServiceDep,
    limit: LimitQuery = MAX_FREE_TIMES,
) -> FreeTimesOut:
    """Free start times for moving one session, inside its allowed window (up to 3 a day)."""
    return await session_free_times(service, patient_id, session, limit)


@router.get("/api/me/sessions/{session}/free-times", response_model=FreeTimesOut, responses=ERRORS)
async def my_free_times(
    patient_id: PatientDep,
    session: SessionPath,
    service: ServiceDep,
    limit: LimitQuery = MAX_FREE_TIMES,
) -> FreeTimesOut:
    """Free start times for moving one of my sessions (pass one to ``/api/me/reschedule``)."""
    return await session_free_times(service, patient_id, session, limit)


@router.get(
    "/api/journeys/{patient_id}/scheduling-preferences",
    response_model=SlotPreferences,
    responses=ERRORS,
)
async def get_preferences(patient_id: PatientIdPath, service: ServiceDep) -> SlotPreferences:
    """The patient's preferred weekdays and times (empty: none)."""
    return await service.db(slots.get_preferences(service.pool, patient_id))


@router.put(
    "/api/journeys/{patient_id}/scheduling-preferences",
    response_model=SlotPreferences,
    responses=ERRORS,
)
async def put_preferences(
    patient_id: PatientIdPath, body: SlotPreferences, service: ServiceDep
) -> SlotPreferences:
    """Replace the patient's preferences (they order the offered slots, never exclude one)."""
    if await service.patient(patient_id) is None:
        raise _not_found(f"No patient {patient_id!r}.")
    await service.db(slots.set_preferences(service.pool, patient_id, body))
    return body


__all__ = ["FreeTimesOut", "free_times_for", "router", "session_free_times"]
