"""Stage: recovery after a session, to the protocol's check-in day.

Recovery always runs to the check-in day: a check-in that arrives earlier is recorded but does
not end recovery. A reaction still present after ``recovery_days_max`` is a prolonged reaction,
whatever the reporter called it (the day is the journey's own count): the journey pauses and a
clinician is asked to see the patient. The check-in message is scheduled with the completion
and cancelled when a check-in arrives first; after a pause the overdue grace restarts from the
resume and no stale message goes out.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows import calendar
    from workflows.guards import refusal
    from workflows.journey.effects import Effects, Write
    from workflows.journey.state import CheckIn
    from workflows.messages import RecoveryCheckinSignal
    from workflows.reasons import Reason
    from workflows.records import NotificationRecord
    from workflows.screening import reaction_is_prolonged


# Patches (docs/versioning.md).
CHECKIN_OBSERVED_DAY = "202612-checkin-observed-day"


def checkin_at(fx: Effects, number: int) -> datetime:
    """The check-in time: the protocol's day after the session, at the clinic's start time."""
    clinic = fx.cp.clinic
    s = fx.state.session(number)
    assert s.completed_at is not None
    done_on = calendar.clinic_today(s.completed_at, clinic.timezone)
    day = done_on + timedelta(days=fx.cp.protocol.recovery_checkin_day)
    return calendar.local_datetime(day, clinic.session_start, clinic.timezone)


def _done_on(fx: Effects, number: int) -> date:
    s = fx.state.session(number)
    assert s.completed_at is not None
    return calendar.clinic_today(s.completed_at, fx.cp.clinic.timezone)


def _checkin_message(fx: Effects, number: int, at: datetime) -> NotificationRecord:
    message = fx.notify(
        "recovery_checkin",
        f"s{number}-checkin-{fx.state.booking_counter}",
        send_at=at,
        session=str(number),
    )
    fx.state.pending_messages.append(message.key)
    return message


def start(fx: Effects, number: int) -> list[NotificationRecord]:
    """Enter recovery after session ``number`` (called by the completion): aftercare now, the
    check-in message scheduled for its day."""
    p = fx.cp.protocol
    at = checkin_at(fx, number)
    fx.set_stage("recovery", f"Recovery check-in after session {number}", at)
    return [
        fx.notify(
            "aftercare",
            f"s{number}-aftercare",
            session=str(number),
            recovery_days_min=str(p.recovery_days_min),
            recovery_days_max=str(p.recovery_days_max),
            spf_factor=str(p.spf_factor),
        ),
        _checkin_message(fx, number, at),
    ]


def on_resume(fx: Effects) -> list[NotificationRecord]:
    """Messages a resume schedules again: the check-in, if its day is still ahead."""
    st = fx.state
    s = _recovering_session(fx)
    if s is None or s in st.checkins:
        return []
    at = checkin_at(fx, s)
    return [_checkin_message(fx, s, at)] if at > fx.now() else []


def _recovering_session(fx: Effects) -> int | None:
    st = fx.state
    stage = st.paused_from if st.stage == "paused" else st.stage
    if stage != "recovery":
        return None
    done = [s.number for s in st.sessions if s.state == "done"]
    return max(done) if done else None


async def run_recovery(fx: Effects, number: int) -> None:
    """Wait to the check-in day; chase a missing check-in; hold while a reaction is seen to."""
    st = fx.state
    p = fx.cp.protocol
    at = checkin_at(fx, number)
    if st.stage not in ("recovery", "paused"):
        fx.set_stage("recovery", f"Recovery check-in after session {number}", at)
    await fx.sleep_until(at, lambda: False, "recovery")

    def checked_in() -> bool:
        return number in st.checkins

    if not checked_in():
        # The grace restarts from a resume that came after the check-in time.
        since = max(at, st.resumed_at) if st.resumed_at else at
        overdue_at = since + timedelta(days=p.checkin_overdue_days)
        fx.set_stage("recovery", f"Recovery check-in after session {number}", overdue_at)
        if not await fx.sleep_until(overdue_at, checked_in, "recovery"):
            await fx.advance(lambda: _overdue(fx, number))
    await fx.hold_while_paused()


def _overdue(fx: Effects, number: int) -> Write | None:
    st = fx.state
    if number in st.checkins:
        return None
    st.flag("checkin_overdue")
    return Write(
        events=[
            fx.event(
                "checkin_overdue",
                "system",
                f"No recovery check-in for session {number}; the plan continues.",
            )
        ],
        notifications=[
            fx.notify(
                "staff_alert",
                f"s{number}-checkin-overdue",
                "staff",
                alert="checkin_overdue",
                session=str(number),
            )
        ],
    )


# ----------------------------------------------------------------- the check-in fact


def checkin_problems(fx: Effects, fact: RecoveryCheckinSignal) -> list[Reason]:
    st = fx.state
    stage_refusal = refusal("recovery_checkin", st.stage)
    if stage_refusal is not None:
        return [stage_refusal]
    if not st.has_session(fact.session_number) or (st.session(fact.session_number).state != "done"):
        return [
            Reason(
                rule="session_not_done",
                message=f"Session {fact.session_number} has not been completed, so there is no "
                "recovery to check.",
            )
        ]
    return []


def apply_checkin(fx: Effects, fact: RecoveryCheckinSignal) -> Write:
    """Record the check-in; a prolonged reaction pauses the journey for a clinician."""
    st = fx.state
    number = fact.session_number
    since = (fx.today() - _done_on(fx, number)).days
    if workflow.patched(CHECKIN_OBSERVED_DAY):
        # The reaction as observed on the reported day (a report delivered late is not a
        # later observation), never a day that has not come yet.
        day = min(fact.day, max(since, 0))
    else:
        day = max(fact.day, since)
    prolonged = reaction_is_prolonged(fact.reaction, day, fx.cp.protocol)
    st.checkins[number] = CheckIn(
        session_number=number, day=day, reaction=fact.reaction, prolonged=prolonged
    )
    st.replace_session(number, reaction="prolonged" if prolonged else fact.reaction)
    cancelled = [k for k in st.pending_messages if f"s{number}-checkin-" in k]
    st.pending_messages = [k for k in st.pending_messages if k not in cancelled]
    summary = f"Day {day} check-in after session {number}: reaction {fact.reaction}."
    notifications: list[NotificationRecord] = []
    if prolonged:
        st.flag("prolonged_reaction")
        st.add_task(f"See the patient: reaction still present on day {day} after session {number}")
        fx.pause("A prolonged reaction needs a clinician before the next session.")
        cancelled += st.take_pending_messages()
        notifications.append(
            fx.notify(
                "staff_alert",
                f"s{number}-prolonged",
                "staff",
                alert="prolonged_reaction",
                session=str(number),
            )
        )
        summary += " Prolonged: journey paused until a clinician has seen the patient."
    return Write(
        events=[
            fx.event(
                "recovery_checkin",
                fact.reported_by,
                summary,
                {
                    "session": number,
                    "day": day,
                    "reported_day": fact.day,
                    "reaction": fact.reaction,
                    "prolonged": prolonged,
                },
            )
        ],
        notifications=notifications,
        cancel=cancelled,
    )
