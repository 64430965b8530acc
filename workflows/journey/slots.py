"""Booking a session into a concrete slot (docs/scheduling.md, ``workflows/booking.py``).

Built-in scheduling: the journey computes the session's allowed days (the clinical rules, one
rule set: :mod:`workflows.booking_window`) and asks the ``reserve_slot`` activity for a free
slot on them. PostgreSQL holds the reservation under an exclusion constraint, so no two journeys
hold a laser or a practitioner at once; the activity is idempotent per (journey, course,
session), so a retry or a replay gets the same slot. No free slot: the session waits, staff
are told once with the reason and the first free day after the window, and the journey asks
again every ``slot_retry_hours``; once the window has passed the session is replanned (to the
next season when the cutoff has passed too). Never an overbooking.

A clinic with its own booking system (``booking = "external"``): the journey publishes the
window (a ``session_window`` event the outbound webhooks deliver) and waits for the booking
system's appointment (``report_appointment``); the window's end passing replans.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows import calendar
    from workflows.booking import (
        AppointmentReport,
        BookedSlot,
        SlotRelease,
        SlotRequest,
        SlotResult,
    )
    from workflows.booking_window import allowed_days
    from workflows.changes import ChangeCheck, SessionSlot, check_session_change
    from workflows.journey import planning
    from workflows.journey.effects import Effects, Write
    from workflows.messages import SessionStatus
    from workflows.reasons import Reason, format_date

# Patches (docs/versioning.md).
SLOT_BOOKING = "202612-slot-booking"

# Activity plumbing, not clinical numbers: a reservation is one short transaction, so a local
# activity (one marker in history instead of three events and a workflow task, like the
# journey's writes); retried without limit (a database outage delays the booking, never loses
# it).
SLOT_TIMEOUT = timedelta(seconds=30)
SLOT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
)


def course_slots(fx: Effects) -> list[SessionSlot]:
    """The course as the rules see it (cancelled sessions left out)."""
    return [
        SessionSlot(number=s.number, on=s.planned_on, done=s.state == "done")
        for s in fx.state.sessions
        if s.state != "cancelled"
    ]


def check_day(fx: Effects, number: int, on: date) -> ChangeCheck:
    """The rules' answer to session ``number`` on ``on`` (and the later sessions' new dates)."""
    st = fx.state
    return check_session_change(
        number,
        on,
        course_slots(fx),
        fx.cp,
        today=fx.today(),
        trips=st.trips,
        conservative=st.conservative(),
    )


def window(fx: Effects, number: int) -> list[date]:
    """The days session ``number`` may take place now (empty: replan)."""
    st = fx.state
    return allowed_days(
        number,
        course_slots(fx),
        fx.cp,
        today=fx.today(),
        trips=st.trips,
        conservative=st.conservative(),
        earliest=st.earliest_start,
    )


def _duration(fx: Effects) -> int:
    p = fx.cp.protocol
    return p.session_minutes_max if fx.state.pore_grade == "large" else p.session_minutes_min


async def reserve(
    fx: Effects,
    number: int,
    days: list[date],
    preferred_on: date,
    exact_time: time | None = None,
) -> SlotResult:
    """Ask PostgreSQL for a slot of session ``number`` on ``days`` (idempotent per session)."""
    st = fx.state
    request = SlotRequest(
        clinic_id=st.clinic_id,
        patient_id=st.patient_id,
        workflow_id=workflow.info().workflow_id,
        course_number=st.course_number,
        session_number=number,
        pore_grade=st.pore_grade,
        allowed_days=days,
        preferred_on=preferred_on,
        exact_time=exact_time,
        timezone=fx.cp.clinic.timezone,
        default_start=fx.cp.clinic.session_start,
        duration_minutes=_duration(fx),
        # Journey time: a slot earlier today that has passed is not free.
        not_before=fx.now(),
    )
    result: SlotResult = await workflow.execute_local_activity(
        "reserve_slot",
        request,
        result_type=SlotResult,
        start_to_close_timeout=SLOT_TIMEOUT,
        retry_policy=SLOT_RETRY,
        summary=f"reserve a slot for session {number}",
    )
    return result


async def release(fx: Effects, number: int) -> None:
    """Give back session ``number``'s reservation (a step that did not happen after all)."""
    st = fx.state
    await workflow.execute_local_activity(
        "release_slot",
        SlotRelease(
            workflow_id=workflow.info().workflow_id,
            course_number=st.course_number,
            session_number=number,
        ),
        start_to_close_timeout=SLOT_TIMEOUT,
        retry_policy=SLOT_RETRY,
        summary=f"release the slot of session {number}",
    )


def slot_day(fx: Effects, slot: BookedSlot) -> date:
    return calendar.clinic_today(slot.starts_at, fx.cp.clinic.timezone)


def place_at(
    fx: Effects, number: int, starts_at: datetime, resources: list[str]
) -> tuple[SessionStatus, list[int]]:
    """Put session ``number`` at ``starts_at``; later planned sessions shift only as far as the
    minimum interval needs (the rules already allowed the day). Returns the session and the
    numbers of the later sessions that moved."""
    st = fx.state
    on = calendar.clinic_today(starts_at, fx.cp.clinic.timezone)
    moved: list[int] = []
    check = check_day(fx, number, on)
    for offset, new_on in enumerate(check.new_dates[1:], start=1):
        later = st.session(number + offset)
        if later.planned_on != new_on and later.state == "planned":
            fresh = planning.session_at(fx, later.number, new_on)
            st.replace_session(
                later.number,
                planned_on=new_on,
                starts_at=fresh.starts_at,
                arrive_by=fresh.arrive_by,
            )
            moved.append(later.number)
    local = calendar.local_time(starts_at, fx.cp.clinic.timezone)
    fresh = planning.session_at(fx, number, on, local)
    session = st.replace_session(
        number,
        planned_on=on,
        starts_at=starts_at,
        arrive_by=fresh.arrive_by,
        resources=resources,
    )
    planning.refresh_dates(fx)
    return session, moved


def no_slot_write(fx: Effects, number: int, result: SlotResult, days: list[date]) -> Write | None:
    """Once per session and plan: the timeline line, a staff alert and the waiting reason."""
    st = fx.state
    option = result.next_option
    reason = option.reason if option else "No free slot."
    first_free = (
        f" The first free day after it is {format_date(option.first_free_on)}."
        if (option and option.first_free_on)
        else ""
    )
    st.waiting_reason = (
        f"No free slot for session {number} between {format_date(days[0])} and "
        f"{format_date(days[-1])}: waiting for one (a cancellation frees it).{first_free}"
    )
    marker = f"{st.course_number}:{number}"
    # One alert per session until it is booked (``slot_found``); the window in the key keeps a
    # later episode's alert distinct in the outbox.
    if st.no_slot_for is not None and st.no_slot_for.startswith(f"{marker}:"):
        return None
    st.no_slot_for = f"{marker}:{days[0].isoformat()}"
    st.flag("waiting_for_slot")
    return Write(
        events=[
            fx.event(
                "no_free_slot",
                "system",
                st.waiting_reason,
                {
                    "session": number,
                    "from": days[0].isoformat(),
                    "until": days[-1].isoformat(),
                    "reason": reason,
                    "next_option": option.model_dump(mode="json") if option else None,
                },
            )
        ],
        notifications=[
            fx.notify(
                "staff_alert",
                f"no-slot-{marker}-{days[0].isoformat()}",
                "staff",
                alert="no_free_slot",
                session=str(number),
            )
        ],
    )


def slot_found(fx: Effects) -> None:
    st = fx.state
    st.waiting_reason = None
    st.no_slot_for = None
    if "waiting_for_slot" in st.flags:
        st.flags.remove("waiting_for_slot")


def retry_at(fx: Effects) -> datetime:
    return fx.now() + timedelta(hours=fx.cp.protocol.slot_retry_hours)


# ----------------------------------------------------------------- the clinic's booking system


def window_write(fx: Effects, number: int, days: list[date]) -> Write | None:
    """Publish session ``number``'s allowed window to the booking system (once per window)."""
    st = fx.state
    s = st.session(number)
    st.window_until = days[-1]
    key = f"{st.course_number}:{number}:{days[0].isoformat()}:{days[-1].isoformat()}"
    if st.window_published == key:
        return None
    st.window_published = key
    fx.set_stage(
        "scheduled",
        f"Session {number}: waiting for the booking system's appointment",
        fx.day_start(days[-1]),
    )
    return Write(
        events=[
            fx.event(
                "session_window",
                "system",
                f"Session {number} may be booked from {format_date(days[0])} to "
                f"{format_date(days[-1])}; the booking system was asked for an appointment.",
                {
                    "session": number,
                    "course": st.course_number,
                    "allowed_days": [d.isoformat() for d in days],
                    "earliest": days[0].isoformat(),
                    "latest": days[-1].isoformat(),
                    "preferred_on": s.planned_on.isoformat(),
                    "duration_minutes": _duration(fx),
                },
            )
        ],
    )


def window_still_open(fx: Effects, number: int, day: date) -> bool:
    """True when the booking system was given a window for session ``number`` that still
    reaches ``day`` (``external`` clinics only)."""
    st = fx.state
    return (
        fx.cp.clinic.booking == "external"
        and st.window_until is not None
        and st.window_published is not None
        and st.window_published.startswith(f"{st.course_number}:{number}:")
        and st.window_until >= day
    )


def appointment_reasons(fx: Effects, number: int, starts_at: datetime) -> list[Reason]:
    """Why the booking system's appointment for session ``number`` cannot stand (empty: it can)."""
    on = calendar.clinic_today(starts_at, fx.cp.clinic.timezone)
    check = check_day(fx, number, on)
    if not check.accepted:
        return list(check.reasons)
    days = window(fx, number)
    if on not in days:
        span = (
            f"from {format_date(days[0])} to {format_date(days[-1])}"
            if days
            else "on no day now (the session is being replanned)"
        )
        return [
            Reason(
                rule="outside_window",
                message=f"Session {number} on {format_date(on)} is outside its allowed window: "
                f"it may be booked {span}.",
            )
        ]
    return []


# ----------------------------------------------------------------- appointment events

_BOOKING_STAGES = ("scheduled", "session_due")


def appointment_problems(fx: Effects, fact: AppointmentReport) -> list[Reason]:
    """Why the booking system's appointment event cannot be applied now (empty: it can)."""
    st = fx.state
    number = fact.session_number
    if fx.cp.clinic.booking != "external":
        return [
            Reason(
                rule="not_external_booking",
                message="This clinic books through the journey's own scheduling, not a "
                "booking system.",
            )
        ]
    if fact.event == "completed":
        return []  # judged as a completion (the caller)
    current = st.current_session()
    if current is None or current.number != number:
        expected = f"session {current.number}" if current else "no session"
        return [
            Reason(
                rule="not_current_session",
                message=f"The journey books {expected} now, not session {number}.",
            )
        ]
    if st.stage not in _BOOKING_STAGES:
        return [
            Reason(
                rule="window_not_open",
                message=f"Session {number} cannot be booked while the journey is "
                f"{st.stage.replace('_', ' ')}; its window is published when it opens.",
            )
        ]
    if fact.event in ("created", "rescheduled"):
        if fact.starts_at is None:
            return [Reason(rule="no_start", message="The appointment has no start time.")]
        return appointment_reasons(fx, number, fact.starts_at)
    if current.state != "booked":
        return [
            Reason(
                rule="not_booked",
                message=f"Session {number} has no appointment to {fact.event.replace('_', ' ')}.",
            )
        ]
    if fact.event == "no_show" and current.starts_at is not None and current.starts_at > fx.now():
        return [
            Reason(
                rule="not_started",
                message=f"Session {number} starts at {current.starts_at.isoformat()}: it cannot "
                "be a no-show before then.",
            )
        ]
    return []


def cancel_appointment(fx: Effects, fact: AppointmentReport) -> Write:
    """The booking system cancelled: the session is planned again and its window republished."""
    st = fx.state
    number = fact.session_number
    st.replace_session(number, state="planned", external_appointment_id=None)
    st.window_published = None
    fx.set_stage(
        "scheduled", f"Session {number}: waiting for the booking system's appointment", None
    )
    return Write(
        events=[
            fx.event(
                "appointment_cancelled",
                "integration",
                f"The booking system cancelled session {number}'s appointment; the journey asks "
                "it for a new one.",
                {"session": number, "external_appointment_id": fact.external_appointment_id},
            )
        ],
        appointments=[fx.appointment(number)],
        cancel=st.take_pending_messages(),
    )
