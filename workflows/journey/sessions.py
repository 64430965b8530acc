"""Stage: the sessions of a course: book (with its reminder scheduled), due, completed or a
no-show that is rebooked; the pre-session check and reschedules that change them.

A session's life: ``planned`` → ``booked`` (one write: the appointment, the confirmation and
the reminder with its send time) → due on its day (no write, a search attribute only) →
``done`` (the completion fact) or ``no_show`` (no completion by the end of the day plus the
grace period) → replanned.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows import calendar
    from workflows.booking import AppointmentReport, SlotResult
    from workflows.changes import ChangeCheck
    from workflows.guards import refusal, stage_words
    from workflows.journey import consent, planning, recovery, slots
    from workflows.journey.effects import Effects, JourneyClosed, Write
    from workflows.journey.screening import apply_answers, screen_until_eligible
    from workflows.messages import (
        PreSessionCheckRequest,
        RescheduleRequest,
        SessionCompletedSignal,
        SessionStatus,
    )
    from workflows.reasons import Reason, format_date
    from workflows.records import NotificationRecord


def min_interval(fx: Effects) -> int:
    p = fx.cp.protocol
    return p.conservative_interval_min_days if fx.state.conservative() else p.min_interval_days


def settled(fx: Effects, number: int) -> bool:
    return fx.state.session(number).state in ("done", "no_show", "deferred", "cancelled")


def needs_replan(fx: Effects, s: SessionStatus) -> bool:
    """Missed or deferred, a replan asked for (a resume), a planned date inside the booking
    notice, or a date that breaks the interval after a late completion. A booked session whose
    day passed is a no-show instead."""
    st = fx.state
    if s.state in ("no_show", "deferred") or st.replan_requested:
        return True
    notice = timedelta(days=fx.cp.protocol.booking_notice_days)
    if s.state == "planned" and s.planned_on < fx.today() + notice:
        # The clinic's booking system may book any day of the published window.
        return not slots.window_still_open(fx, s.number, fx.today() + notice)
    last = st.last_done_on()
    return last is not None and (s.planned_on - last).days < min_interval(fx)


def session_params(fx: Effects, s: SessionStatus) -> dict[str, str]:
    assert s.starts_at is not None
    params = {
        "session": str(s.number),
        "starts_at": s.starts_at.isoformat(),
        "timezone": fx.cp.clinic.timezone,
    }
    if s.arrive_by is not None:
        params["arrive_by"] = s.arrive_by.isoformat()
        params["arrive_early_minutes"] = str(fx.cp.protocol.numbing_lead_minutes)
    return params


def booking_messages(fx: Effects, s: SessionStatus, kind: str) -> list[NotificationRecord]:
    """The confirmation now and the reminder at its send time (if that is still ahead)."""
    st = fx.state
    assert s.starts_at is not None
    st.booking_counter += 1
    tag = f"s{s.number}-{st.booking_counter}"
    messages = [fx.notify_params(kind, f"{tag}-booked", session_params(fx, s))]
    reminder_at = s.starts_at - timedelta(hours=fx.cp.protocol.reminder_lead_hours)
    if reminder_at > fx.now():
        reminder = fx.notify_params(
            "session_reminder", f"{tag}-reminder", session_params(fx, s), send_at=reminder_at
        )
        st.pending_messages.append(reminder.key)
        messages.append(reminder)
    return messages


async def run_sessions(fx: Effects, continue_as_new: Callable[[], Awaitable[None]]) -> bool:
    """Run the course's sessions and their recoveries. False: the journey closed."""
    st = fx.state
    while (s := st.current_session()) is not None:
        await fx.hold_while_paused()
        if workflow.info().is_continue_as_new_suggested():
            await continue_as_new()
        s = st.current_session()
        if s is None:
            break
        if s.state == "deferred":
            if not await screen_until_eligible(fx):
                return False
            st.replan_requested = True
        if needs_replan(fx, s):
            await planning.plan_and_wait_for_season(fx)
            continue
        await run_session(fx, s.number)
        if st.session(s.number).state == "done":
            await recovery.run_recovery(fx, s.number)
    return True


async def run_session(fx: Effects, number: int) -> None:
    """Book, wait for the day, then for the completion; none by the end of the day plus the
    grace period is a no-show (the caller replans)."""
    st = fx.state
    p = fx.cp.protocol
    tz = fx.cp.clinic.timezone
    while True:
        await fx.hold_while_paused()
        s = st.session(number)
        if settled(fx, number) or needs_replan(fx, s):
            return
        assert s.starts_at is not None
        if s.state == "planned":
            if consent.gate_closed(fx):
                await consent.wait_for_consent(fx, number)
                continue
            if fx.cp.clinic.booking == "external" or workflow.patched(slots.SLOT_BOOKING):
                await _book_into_slot(fx, number)
                continue
            await fx.advance(lambda: _book(fx, number))
            continue
        day_start = fx.day_start(s.planned_on)
        deadline = calendar.end_of_local_day(s.planned_on, tz) + timedelta(
            hours=p.no_show_grace_hours
        )
        now = fx.now()
        if now < day_start:
            fx.set_stage("scheduled", f"Session {number}", s.starts_at)
            await fx.wait(day_start, lambda: settled(fx, number), "scheduled")
            continue
        if workflow.patched(DUE_WINDOW_FROM_START):
            deadline = _due_deadline(fx, s.planned_on, day_start, deadline, now)
        if now < deadline:
            if st.stage != "session_due":
                fx.set_stage("session_due", f"Report session {number} as completed", deadline)
            await fx.wait(deadline, lambda: settled(fx, number), "session_due")
            continue
        await fx.advance(lambda: _no_show(fx, number))
        return


# Patches (docs/versioning.md): each guards a change to code that running journeys execute.
DUE_WINDOW_FROM_START = "202612-due-window-from-start"

# How late (journey time) a step may start before the journey says its clock is lagging: on
# the simulation clock a busy machine can fall days behind; in real time this is an outage.
CLOCK_LAG_WARNING = timedelta(hours=1)


def _due_deadline(
    fx: Effects, day: date, day_start: datetime, deadline: datetime, now: datetime
) -> datetime:
    """The no-show deadline, measured from when the due step really started: a step that
    starts late (a lagging simulation clock, a worker outage) keeps its whole window."""
    st = fx.state
    if st.due_for != day or st.due_since is None:
        st.due_for = day
        st.due_since = now
        lag = now - day_start
        if lag > CLOCK_LAG_WARNING:
            workflow.logger.warning(
                "journey step started late", extra={"lag_seconds": lag.total_seconds()}
            )
            workflow.metric_meter().create_counter(
                "journey_clock_lag", "Journey steps that started late on the journey clock"
            ).add(1, {"time_scale": str(st.time_scale)})
    return max(deadline, st.due_since + (deadline - day_start))


def _book(fx: Effects, number: int, slot: SlotResult | None = None) -> Write | None:
    st = fx.state
    s = st.session(number)
    if s.state != "planned":
        return None
    moved: list[int] = []
    data: dict[str, object] = {}
    if slot is not None and slot.slot is not None:
        labels = [r.label or r.resource_id for r in slot.slot.resources]
        s, moved = slots.place_at(fx, number, slot.slot.starts_at, labels)
        slots.slot_found(fx)
        data = {
            "resources": [r.model_dump() for r in slot.slot.resources],
            "capacity_known": slot.capacity_known,
            "ends_at": slot.slot.ends_at.isoformat(),
        }
    s = st.replace_session(number, state="booked")
    fx.set_stage("scheduled", f"Session {number}", s.starts_at)
    assert s.starts_at is not None
    where = f" ({', '.join(s.resources)})" if s.resources else ""
    return Write(
        events=[
            fx.event(
                "session_booked",
                "system",
                f"Session {number} booked for {format_date(s.planned_on)}{where}.",
                {"session": number, "starts_at": s.starts_at.isoformat(), **data},
            )
        ],
        appointments=[fx.appointment(n) for n in (number, *moved)],
        notifications=booking_messages(fx, s, "booking_confirmation"),
    )


async def _book_into_slot(fx: Effects, number: int) -> None:
    """Built-in scheduling: reserve a slot inside the allowed window and book it, or wait for
    one; the clinic's booking system: publish the window and wait for its appointment. A window
    with no day left replans."""
    st = fx.state
    s = st.session(number)
    # The planner's day always counts (it applied the same rules when it planned): a window
    # it cannot widen is that one day, never a replan loop.
    days = slots.window(fx, number) or [s.planned_on]
    if fx.cp.clinic.booking == "external":
        await fx.advance(lambda: slots.window_write(fx, number, days))
        await fx.wait(
            fx.day_start(days[-1]),
            lambda: st.session(number).state != "planned",
            "awaiting appointment",
        )
        if st.session(number).state == "planned" and fx.today() >= days[-1]:
            st.replan_requested = True
        return
    preferred = s.planned_on if s.planned_on in days else days[0]
    result = await slots.reserve(fx, number, days, preferred)
    if result.slot is None:
        retry = slots.retry_at(fx)

        def waiting() -> Write | None:
            fx.set_stage("scheduled", f"Session {number}: waiting for a free slot", retry)
            return slots.no_slot_write(fx, number, result, days)

        await fx.advance(waiting)
        await fx.wait(retry, lambda: st.session(number).state != "planned", "waiting for a slot")
        return
    try:
        await fx.advance(lambda: _book(fx, number, result))
    except JourneyClosed:
        await slots.release(fx, number)
        raise
    if st.session(number).state != "booked" or st.session(number).starts_at != (
        result.slot.starts_at
    ):
        # A handler changed the session while the slot was being reserved: give it back.
        await slots.release(fx, number)


def _no_show(fx: Effects, number: int) -> Write | None:
    st = fx.state
    s = st.session(number)
    if s.state != "booked":
        return None
    s = st.replace_session(number, state="no_show")
    st.flag("no_show")
    st.pending_messages = []
    return Write(
        events=[
            fx.event(
                "no_show",
                "system",
                f"No completion reported for session {number} on {format_date(s.planned_on)}: "
                "no-show; rebooking.",
                {"session": number},
            )
        ],
        appointments=[fx.appointment(number)],
        notifications=[
            fx.notify(
                "staff_alert",
                f"s{number}-noshow-{s.planned_on.isoformat()}",
                "staff",
                alert="no_show",
                session=str(number),
            )
        ],
    )


# ----------------------------------------------------------------- the completion fact


def completion_problems(fx: Effects, fact: SessionCompletedSignal) -> list[Reason]:
    """Why the completion cannot be applied now (empty: it can)."""
    st = fx.state
    if st.has_session(fact.session_number) and st.session(fact.session_number).state == "done":
        return [
            Reason(
                rule="already_completed",
                message=f"Session {fact.session_number} was already reported as completed.",
            )
        ]
    stage_refusal = refusal("session_completed", st.stage)
    if stage_refusal is not None:
        return [stage_refusal]
    current = st.current_session()
    if not st.has_session(fact.session_number):
        return [
            Reason(
                rule="no_such_session",
                message=f"This course has no session {fact.session_number}.",
            )
        ]
    if current is None or fact.session_number != current.number:
        expected = current.number if current else "none"
        return [
            Reason(
                rule="out_of_order",
                message=f"Session {expected} comes next, not session {fact.session_number}.",
            )
        ]
    reasons: list[Reason] = []
    p = fx.cp.protocol
    on = calendar.clinic_today(fact.completed_at, fx.cp.clinic.timezone)
    last = st.last_done_on()
    if last is not None and (on - last).days < p.min_interval_days:
        reasons.append(
            Reason(
                rule="too_soon_after_previous",
                message=f"Session {fact.session_number} on {format_date(on)} is less than "
                f"{p.min_interval_days} days after the previous one on {format_date(last)}.",
            )
        )
    if fact.completed_at > fx.now() + timedelta(minutes=p.completion_clock_skew_minutes):
        reasons.append(
            Reason(
                rule="in_future",
                message=f"The completion time {fact.completed_at.isoformat()} is in the future "
                "of the journey's clock.",
            )
        )
    return reasons


def apply_completion(fx: Effects, fact: SessionCompletedSignal) -> Write:
    """Session done: aftercare now, the recovery check-in message scheduled for its day."""
    st = fx.state
    checked = st.session(fact.session_number).pre_session_checked
    st.replace_session(
        fact.session_number, state="done", completed_at=fact.completed_at, source=fact.source
    )
    if not checked:
        st.flag("no_pre_session_check")
    cancelled = fx.state.take_pending_messages()
    nxt = st.current_session()
    if nxt is not None and needs_replan(fx, nxt):
        # A completion dated earlier than planned: the rest of the plan moves now, so the
        # status never shows sessions closer than the minimum interval.
        plan = planning.plan_remaining(fx, planning.earliest_booking_day(fx))
        if plan.sessions:
            planning.apply_plan(fx, plan)
    planning.refresh_dates(fx)
    notifications = recovery.start(fx, fact.session_number)
    return Write(
        events=[
            fx.event(
                "session_completed",
                "integration",
                f"Session {fact.session_number} completed ({fact.source})"
                + ("" if checked else "; no pre-session check was recorded")
                + ".",
                {
                    "session": fact.session_number,
                    "completed_at": fact.completed_at.isoformat(),
                    "source": fact.source,
                    "idempotency_key": fact.idempotency_key,
                },
            )
        ],
        appointments=[fx.appointment(fact.session_number)],
        notifications=notifications,
        cancel=cancelled,
    )


# ----------------------------------------------------------------- the booking system's events


def _as_completion(fact: AppointmentReport) -> SessionCompletedSignal:
    assert fact.starts_at is not None
    return SessionCompletedSignal(
        idempotency_key=fact.idempotency_key,
        session_number=fact.session_number,
        completed_at=fact.starts_at,
        source=fact.source[:64],
    )


def appointment_problems(fx: Effects, fact: AppointmentReport) -> list[Reason]:
    """Why an appointment event from the clinic's booking system cannot be applied now."""
    reasons = slots.appointment_problems(fx, fact)
    if reasons or fact.event != "completed":
        return reasons
    if fact.starts_at is None:
        return [Reason(rule="no_time", message="A completed appointment needs its time.")]
    return completion_problems(fx, _as_completion(fact))


def apply_appointment(fx: Effects, fact: AppointmentReport) -> Write:
    """Book, move, cancel, mark a no-show or complete the session as the booking system says
    (the caller checked :func:`appointment_problems`)."""
    st = fx.state
    number = fact.session_number
    if fact.event == "completed":
        return apply_completion(fx, _as_completion(fact))
    if fact.event == "cancelled":
        return slots.cancel_appointment(fx, fact)
    if fact.event == "no_show":
        return _no_show(fx, number) or Write()
    assert fact.starts_at is not None
    rebooked = st.session(number).state == "booked"
    cancelled = st.take_pending_messages()
    s, moved = slots.place_at(fx, number, fact.starts_at, [])
    s = st.replace_session(
        number,
        state="booked",
        external_appointment_id=fact.external_appointment_id,
        confirmed_at=None,  # a confirmation was for the old time
    )
    st.window_until = None
    fx.set_stage("scheduled", f"Session {number}", s.starts_at)
    verb = "moved to" if rebooked else "booked for"
    return Write(
        events=[
            fx.event(
                "session_booked" if not rebooked else "rescheduled",
                "integration",
                f"Session {number} {verb} {format_date(s.planned_on)} by the booking system.",
                {
                    "session": number,
                    "starts_at": fact.starts_at.isoformat(),
                    "external_appointment_id": fact.external_appointment_id,
                    "new_dates": [st.session(n).planned_on.isoformat() for n in (number, *moved)],
                },
            )
        ],
        appointments=[fx.appointment(n) for n in (number, *moved)],
        notifications=booking_messages(
            fx, s, "session_rebooked" if rebooked else "booking_confirmation"
        ),
        cancel=cancelled,
    )


# ----------------------------------------------------------------- requests


def pre_session_check_problems(fx: Effects, request: PreSessionCheckRequest) -> list[Reason]:
    st = fx.state
    stage_refusal = refusal("pre_session_check", st.stage)
    if stage_refusal is not None:
        return [stage_refusal]
    current = st.current_session()
    if current is None or request.session_number != current.number:
        expected = current.number if current else "none"
        return [
            Reason(
                rule="not_next_session",
                message=f"The next session is session {expected}, not session "
                f"{request.session_number}.",
            )
        ]
    return []


def apply_pre_session_check(fx: Effects, request: PreSessionCheckRequest) -> Write:
    """Cleared, or the session is deferred (the main loop then screens again and replans)."""
    st = fx.state
    number = request.session_number
    by = request.staff_ref or request.checked_by
    result = apply_answers(fx, request.answers, request.checked_by == "clinician")
    if result.outcome == "eligible":
        st.replace_session(number, pre_session_checked=True)
        return Write(
            events=[
                fx.event(
                    "pre_session_check",
                    request.checked_by,
                    f"Pre-session check for session {number} by {by}: cleared.",
                    {"session": number, "by": by},
                )
            ]
        )
    st.replace_session(number, state="deferred", pre_session_checked=True)
    return Write(
        events=[
            fx.event(
                "pre_session_check",
                request.checked_by,
                f"Pre-session check for session {number} by {by}: {result.outcome}. "
                + "; ".join(r.message for r in result.reasons),
                {
                    "session": number,
                    "by": by,
                    "outcome": result.outcome,
                    "reasons": [r.model_dump() for r in result.reasons],
                },
            )
        ],
        appointments=[fx.appointment(number)],
        cancel=fx.state.take_pending_messages(),
    )


def check_reschedule(fx: Effects, request: RescheduleRequest) -> ChangeCheck:
    return slots.check_day(fx, request.session_number, request.new_date)


def reschedule_problems(fx: Effects, request: RescheduleRequest) -> list[Reason]:
    st = fx.state
    # While paused, the stage the pause holds must accept a move too.
    held = st.paused_from if st.stage == "paused" else None
    stage_refusal = refusal("reschedule", st.stage) or (
        refusal("reschedule", held) if held else None
    )
    if stage_refusal or not st.sessions or st.current_session() is None:
        return [
            Reason(
                rule="nothing_to_reschedule",
                message=f"There is no session to move while the journey is "
                f"{stage_words(st.stage)}.",
            )
        ]
    if fx.cp.clinic.booking == "external":
        return [
            Reason(
                rule="booked_in_clinic_system",
                message="This clinic books its sessions in its own booking system: please "
                "move the appointment there (the journey follows it).",
            )
        ]
    check = check_reschedule(fx, request)
    return [] if check.accepted else list(check.reasons)


def slot_for_reschedule(fx: Effects, request: RescheduleRequest) -> bool:
    """True when moving this session needs a new slot first (built-in scheduling, booked)."""
    st = fx.state
    return (
        fx.cp.clinic.booking == "builtin"
        and st.session(request.session_number).state == "booked"
        and workflow.patched(slots.SLOT_BOOKING)
    )


def no_free_time(request: RescheduleRequest) -> list[Reason]:
    at = f" at {request.new_time.strftime('%H:%M')}" if request.new_time else ""
    return [
        Reason(
            rule="no_free_time",
            message=f"There is no free time for session {request.session_number} on "
            f"{format_date(request.new_date)}{at}; ask for the free times and pick one.",
        )
    ]


def apply_reschedule(
    fx: Effects, request: RescheduleRequest, check: ChangeCheck, slot: SlotResult | None = None
) -> Write:
    """Move the session (and later ones as needed); a booked one gets a new confirmation and
    reminder, its old reminder is cancelled. ``slot``: the slot reserved for it first."""
    st = fx.state
    cancelled: list[str] = []
    notifications: list[NotificationRecord] = []
    for offset, new_on in enumerate(check.new_dates):
        number = request.session_number + offset
        fresh = planning.session_at(fx, number, new_on, request.new_time if offset == 0 else None)
        booked = st.session(number).state == "booked"
        extra: dict[str, object] = {}
        if offset == 0 and slot is not None and slot.slot is not None:
            starts_at = slot.slot.starts_at
            lead = (
                (fresh.starts_at - fresh.arrive_by) if fresh.arrive_by and fresh.starts_at else None
            )
            extra = {
                "starts_at": starts_at,
                "arrive_by": starts_at - lead if lead is not None else None,
                "resources": [r.label or r.resource_id for r in slot.slot.resources],
            }
        changes: dict[str, object] = {
            "planned_on": new_on,
            "starts_at": fresh.starts_at,
            "arrive_by": fresh.arrive_by,
            "state": "booked" if booked else "planned",
            # A patient's confirmation was for the old time.
            "confirmed_at": None,
            **extra,
        }
        moved = st.replace_session(number, **changes)
        if booked:
            cancelled.extend(fx.state.take_pending_messages())
            notifications.extend(booking_messages(fx, moved, "session_rebooked"))
        elif offset == 0:
            # Not booked yet: the patient still hears of the new date they asked for.
            fx.state.booking_counter += 1
            notifications.append(
                fx.notify_params(
                    "session_rebooked",
                    f"s{number}-{fx.state.booking_counter}-moved",
                    session_params(fx, moved),
                )
            )
    if st.stage == "session_due":
        first = st.session(request.session_number)
        fx.set_stage("scheduled", f"Session {request.session_number}", first.starts_at)
    planning.refresh_dates(fx)
    later = check.new_dates[1:]
    return Write(
        events=[
            fx.event(
                "rescheduled",
                request.requested_by,
                f"Session {request.session_number} moved to {format_date(check.new_dates[0])}"
                + (f"; later sessions: {', '.join(format_date(d) for d in later)}" if later else "")
                + ".",
                {
                    "session": request.session_number,
                    "new_dates": [d.isoformat() for d in check.new_dates],
                },
            )
        ],
        appointments=[
            fx.appointment(request.session_number + i) for i in range(len(check.new_dates))
        ],
        notifications=notifications,
        cancel=cancelled,
    )
