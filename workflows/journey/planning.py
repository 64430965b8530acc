"""Stage: planning the (rest of the) course and the seasonal gate.

A plan that cannot start now waits durably for its start (``awaiting_season``). A plan that is
impossible (a mistyped trip of ten years, say) never fails the workflow: the journey waits with
a clinician task until someone changes what made it impossible. ``course_split`` is raised
exactly when the course's sessions straddle a summer, whatever moved them there.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows import calendar
    from workflows.journey.effects import Effects, Write
    from workflows.messages import SessionStatus
    from workflows.planner import CoursePlan, plan_course, review_date, spf_window_end
    from workflows.reasons import format_date
    from workflows.season import course_straddles_summer

NO_PLAN_TASK = "No course fits the clinic's calendar: check the patient's trips and dates"


def session_at(fx: Effects, number: int, on: date, at: time | None = None) -> SessionStatus:
    """Session ``number`` on ``on`` at ``at`` (the clinic's default start time)."""
    cp = fx.cp
    starts_at = calendar.local_datetime(on, at or cp.clinic.session_start, cp.clinic.timezone)
    arrive_by = (
        starts_at - timedelta(minutes=cp.protocol.numbing_lead_minutes)
        if fx.state.numbing_cream
        else None
    )
    return SessionStatus(number=number, planned_on=on, starts_at=starts_at, arrive_by=arrive_by)


def sessions_in_course(fx: Effects) -> int:
    st = fx.state
    if st.course_sessions is not None:
        return st.course_sessions
    return fx.cp.protocol.sessions_for(st.pore_grade)


def plan_remaining(fx: Effects, earliest: date) -> CoursePlan:
    st = fx.state
    remaining = [s for s in st.sessions if s.state != "done"]
    return plan_course(
        earliest,
        len(remaining) if st.sessions else sessions_in_course(fx),
        fx.cp,
        trips=st.trips,
        previous_session_on=st.last_done_on(),
        conservative=st.conservative(),
    )


def refresh_dates(fx: Effects) -> None:
    """The SPF window end, the review date and ``course_split`` after the plan changed."""
    st = fx.state
    p = fx.cp.protocol
    if st.sessions:
        last = st.sessions[-1].planned_on
        st.spf_until = spf_window_end(last, p)
        st.review_on = review_date(last, p)
    dates = [
        st.last_done_on() if s.state == "done" and s.completed_at else s.planned_on
        for s in st.sessions
        if s.state != "cancelled"
    ]
    st.flag("course_split", course_straddles_summer([d for d in dates if d], fx.cp.clinic))


def apply_plan(fx: Effects, plan: CoursePlan) -> None:
    st = fx.state
    done = [s for s in st.sessions if s.state == "done"]
    first = len(done) + 1
    st.sessions = done + [session_at(fx, first + i, d) for i, d in enumerate(plan.sessions)]
    st.replan_requested = False
    refresh_dates(fx)


def earliest_booking_day(fx: Effects) -> date:
    st = fx.state
    earliest = fx.today() + timedelta(days=fx.cp.protocol.booking_notice_days)
    if st.earliest_start and st.earliest_start > earliest:
        earliest = st.earliest_start
    return earliest


def booking_time(fx: Effects) -> datetime:
    """When the next session is booked: its reminder lead before it starts."""
    s = fx.state.current_session()
    assert s is not None and s.starts_at is not None
    return s.starts_at - timedelta(hours=fx.cp.protocol.reminder_lead_hours)


async def plan_and_wait_for_season(fx: Effects) -> None:
    """Plan the rest of the course; when it cannot start now, wait for its start."""
    st = fx.state
    while True:
        plan = plan_remaining(fx, earliest_booking_day(fx))
        if plan.sessions:
            break
        await _wait_for_a_possible_plan(fx, plan)
    waits = plan.waiting_reason is not None

    replanning = bool(st.sessions)

    def planned() -> Write | None:
        apply_plan(fx, plan)
        dates = ", ".join(format_date(s.planned_on) for s in st.sessions if s.state != "done")
        event = fx.event(
            "awaiting_season" if waits else "replanned" if replanning else "planned",
            "system",
            plan.waiting_reason or f"Sessions planned for {dates}.",
            {"sessions": [d.isoformat() for d in plan.sessions]},
        )
        appointments = [fx.appointment(s.number) for s in st.sessions if s.state != "done"]
        if not waits or fx.now() >= booking_time(fx):
            st.waiting_reason = None
            st.season_opens_on = None
            fx.note(event, appointments=appointments)  # written with the booking
            return None
        st.waiting_reason = plan.waiting_reason
        st.season_opens_on = plan.starts_on
        fx.set_stage("awaiting_season", "Book the first session of the season", booking_time(fx))
        return Write(
            events=[event],
            appointments=appointments,
            notifications=[
                fx.notify(
                    "season_waiting",
                    f"season-{plan.sessions[0].isoformat()}",
                    starts_on=plan.sessions[0].isoformat(),
                )
            ],
        )

    await fx.advance(planned)
    if st.waiting_reason is None:
        return
    # The booking time moves if the first session is rescheduled while waiting.
    while st.current_session() is not None and (
        fx.now() < booking_time(fx) or st.stage == "paused"
    ):
        await fx.wait(booking_time(fx), lambda: False, "awaiting_season")
    st.waiting_reason = None
    st.season_opens_on = None


async def _wait_for_a_possible_plan(fx: Effects, plan: CoursePlan) -> None:
    st = fx.state
    reason = plan.waiting_reason or "no course fits within the planning horizon"

    def stuck() -> Write:
        st.add_task(NO_PLAN_TASK)
        st.waiting_reason = f"No course can be planned: {reason}"
        fx.set_stage("awaiting_season", "A clinician must review the plan", None)
        return Write(
            events=[fx.event("no_plan_possible", "system", st.waiting_reason)],
            notifications=[
                fx.notify(
                    "staff_alert",
                    f"no-plan-{st.changes}",
                    "staff",
                    alert="no_plan_possible",
                )
            ],
        )

    await fx.advance(stuck)
    seen = st.changes
    await fx.sleep_until(None, lambda: st.changes != seen, "no_plan")
