"""Pure presentation helpers for the web pages: dates in the clinic's zone, the plan picture,
the patient's allowed dates, and the overview's buckets.

Nothing here does I/O: the routes read the read model and pass rows in, so every rule about
what a page shows can be tested without a browser. The clinical rules themselves stay in
``workflows`` (``check_session_change``, the planner's SPF and review dates); this module only
arranges their answers for people.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from activities.repository import JourneyRow
from workflows.calendar import add_months, clinic_today
from workflows.changes import SessionSlot, check_session_change
from workflows.messages import JourneyStatus, SessionStatus
from workflows.planner import review_date, spf_window_end
from workflows.protocol import ClinicProtocol, DateRange
from workflows.reasons import Reason, format_date, format_weekday_date, month_name, weekday_name
from workflows.season import in_summer

__all__ = [
    "FLAG_LABELS",
    "STAGE_LABELS",
    "DayOption",
    "PlanPicture",
    "RuleGroup",
    "current_session",
    "date_options",
    "format_local_datetime",
    "format_local_time",
    "group_refusals",
    "journey_now",
    "journey_status",
    "plan_picture",
]

# Stage names are fixed (DESIGN.md); these are the words staff and patients read.
STAGE_LABELS: dict[str, str] = {
    "screening": "Screening",
    "deferred": "Deferred",
    "excluded": "Excluded",
    "awaiting_season": "Waiting for the season",
    "scheduled": "Scheduled",
    "session_due": "Session due",
    "recovery": "Recovery",
    "spf_window": "SPF-50 window",
    "awaiting_review": "Awaiting review",
    "completed": "Completed",
    "paused": "Paused",
    "withdrawn": "Withdrawn",
}
STAGE_ORDER: tuple[str, ...] = tuple(STAGE_LABELS)

FLAG_LABELS: dict[str, str] = {
    "prolonged_reaction": "Prolonged reaction",
    "adverse_event": "Adverse event",
    "course_split": "Course split by summer",
    "no_pre_session_check": "Completed without pre-session check",
    "no_show": "No-show",
    "checkin_overdue": "Check-in overdue",
    "review_overdue": "Review overdue",
    "conservative_settings": "Conservative settings",
    "consent_needed": "Consent needed",  # issue 19: no booking until consent is valid
}
# The flags the overview lists as needing a clinician's or a manager's eye.
ATTENTION_FLAGS: tuple[str, ...] = (
    "prolonged_reaction",
    "adverse_event",
    "course_split",
    "no_pre_session_check",
)

RULE_TITLES: dict[str, str] = {
    "closed_day": "The clinic is closed",
    "in_summer": "Summer: no treatment",
    "too_soon_after_previous": "Too soon after the previous session",
    "during_trip": "During your trip",
    "too_close_to_trip": "Too close to your trip",
    "after_season_cutoff": "Too close to summer",
    "in_past": "In the past",
    "session_done": "Already done",
    "no_such_session": "No such session",
}


# ---------------------------------------------------------------- time


def journey_status(row: JourneyRow) -> JourneyStatus | None:
    """The status the workflow wrote with its last step, or ``None`` if unreadable."""
    try:
        return JourneyStatus.model_validate(row.status)
    except ValueError:
        return None


def journey_now(row: JourneyRow, status: JourneyStatus | None, real_now: datetime) -> datetime:
    """The journey's clock now: real time, or the simulation clock of a sandbox journey.

    A sandbox journey (``time_scale`` > 1) advances ``time_scale`` seconds per real second from
    the ``journey_now`` it wrote with its last step; without that every sandbox date would look
    far in the future to the dashboard.
    """
    if status is None or status.time_scale == 1 or status.journey_now is None:
        return real_now
    elapsed = max(real_now - row.updated_at, timedelta(0))
    return status.journey_now + elapsed * status.time_scale


def format_local_datetime(at: datetime | None, tz: str) -> str:
    """``"Tuesday 20 April 2027, 09:00"`` in the clinic's zone; ``""`` for ``None``."""
    if at is None:
        return ""
    local = at.astimezone(ZoneInfo(tz))
    return f"{format_weekday_date(local.date())}, {local:%H:%M}"


def format_local_time(at: datetime | None, tz: str) -> str:
    """``"09:00"`` in the clinic's zone; ``""`` for ``None``."""
    if at is None:
        return ""
    return f"{at.astimezone(ZoneInfo(tz)):%H:%M}"


def current_session(status: JourneyStatus) -> SessionStatus | None:
    """The first session not done (the one a reschedule or a check is usually about)."""
    return next(
        (s for s in status.sessions if s.state not in ("done", "cancelled")),
        None,
    )


# ---------------------------------------------------------------- the plan picture


@dataclass(frozen=True)
class Bar:
    """A horizontal span on the picture (x and width in viewBox units)."""

    x: float
    width: float
    label: str


@dataclass(frozen=True)
class Mark:
    """A point on the picture."""

    x: float
    label: str
    text: str = ""
    state: str = ""


@dataclass(frozen=True)
class PlanPicture:
    """The geometry of the plan's SVG timeline (the template draws it).

    Attributes:
        width: The viewBox width; the SVG scales to its container.
        months: A tick at the first of each month, labelled with the month (and the year in
            January and on the first tick).
        summers: Shaded summer spans.
        sessions: One mark per session, with its state.
        recoveries: The expected recovery after each session (done or planned).
        spf: The SPF-50 window after the last session.
        review: The review date.
        today: The journey's today, when it is on the axis.
        description: A sentence for screen readers saying what the picture shows.
    """

    width: int
    months: list[Mark]
    summers: list[Bar]
    sessions: list[Mark]
    recoveries: list[Bar]
    spf: Bar | None
    review: Mark | None
    today: Mark | None
    description: str


def spf_and_review(status: JourneyStatus, cp: ClinicProtocol) -> tuple[date | None, date | None]:
    """The SPF end and review date: the workflow's once known, else from the planned last
    session (the same planner functions the workflow uses)."""
    if status.spf_until is not None and status.review_on is not None:
        return status.spf_until, status.review_on
    live = [s for s in status.sessions if s.state != "cancelled"]
    if not live:
        return status.spf_until, status.review_on
    last = max(s.planned_on for s in live)
    return (
        status.spf_until or spf_window_end(last, cp.protocol),
        status.review_on or review_date(last, cp.protocol),
    )


def plan_picture(status: JourneyStatus, cp: ClinicProtocol, today: date) -> PlanPicture | None:
    """Lay out the sessions, recovery periods, SPF window and review against a calendar axis
    with summer shaded. ``None`` when there is no plan yet (screening, deferred)."""
    sessions = [s for s in status.sessions if s.state != "cancelled"]
    if not sessions:
        return None
    spf_until, review_on = spf_and_review(status, cp)
    first = min(s.planned_on for s in sessions)
    last = max(s.planned_on for s in sessions)
    start = min(first, today) - timedelta(days=10)
    end = max(d for d in (review_on, spf_until, last, today) if d is not None) + timedelta(days=14)
    start = start.replace(day=1)
    total = max((end - start).days, 1)
    width = 1000
    left, right = 10.0, width - 10.0

    def x(d: date) -> float:
        return round(left + (right - left) * (d - start).days / total, 1)

    months: list[Mark] = []
    m = start
    while m <= end:
        label = month_name(m.month)[:3]
        if m.month == 1 or not months:
            label += f" {m.year}"
        months.append(Mark(x=x(m), label=label))
        m = add_months(m, 1)

    summers: list[Bar] = []
    d = start
    while d <= end:
        if in_summer(d, cp.clinic):
            s0 = d
            while d <= end and in_summer(d, cp.clinic):
                d += timedelta(days=1)
            summers.append(Bar(x=x(s0), width=x(d) - x(s0), label="Summer: no treatment"))
        d += timedelta(days=1)

    p = cp.protocol
    marks = [
        Mark(
            x=x(s.planned_on),
            label=f"Session {s.number}: {format_date(s.planned_on)} ({s.state.replace('_', ' ')})",
            text=str(s.number),
            state=s.state,
        )
        for s in sessions
    ]
    recoveries = [
        Bar(
            x=x(s.planned_on),
            width=max(x(s.planned_on + timedelta(days=p.recovery_days_max)) - x(s.planned_on), 2),
            label=f"Recovery after session {s.number}: {p.recovery_days_min}–{p.recovery_days_max} days",
        )
        for s in sessions
        if s.state in ("planned", "booked", "done")
    ]
    spf = (
        Bar(
            x=x(last),
            width=x(spf_until) - x(last),
            label=f"SPF 50 every day until {format_date(spf_until)}",
        )
        if spf_until is not None
        else None
    )
    review = (
        Mark(x=x(review_on), label=f"Review on {format_date(review_on)}", text="Review")
        if review_on is not None
        else None
    )
    today_mark = (
        Mark(x=x(today), label=f"Today, {format_date(today)}", text="Today")
        if start <= today <= end
        else None
    )
    description = (
        f"{len(sessions)} sessions from {format_date(first)} to {format_date(last)}"
        + (f"; SPF 50 until {format_date(spf_until)}" if spf_until else "")
        + (f"; review on {format_date(review_on)}" if review_on else "")
        + "."
    )
    return PlanPicture(
        width=width,
        months=months,
        summers=summers,
        sessions=marks,
        recoveries=recoveries,
        spf=spf,
        review=review,
        today=today_mark,
        description=description,
    )


# ---------------------------------------------------------------- allowed dates


@dataclass(frozen=True)
class DayOption:
    """One day of the reschedule calendar.

    Attributes:
        on: The date.
        allowed: True if the journey would accept the session on that date.
        reasons: Why not, when refused (every rule broken).
        current: True if the session is on that date now.
    """

    on: date
    allowed: bool
    reasons: list[Reason] = field(default_factory=list)
    current: bool = False

    @property
    def label(self) -> str:
        """The day in words with its answer, for screen readers and tooltips."""
        if self.current:
            return f"{format_weekday_date(self.on)}: your session is on this day now"
        if self.allowed:
            return f"{format_weekday_date(self.on)}: available"
        return f"{format_weekday_date(self.on)}: not available. " + " ".join(
            r.message for r in self.reasons
        )


@dataclass(frozen=True)
class RuleGroup:
    """The days one rule rules out, with a plain explanation (the first day's message)."""

    rule: str
    title: str
    message: str
    ranges: list[str]


def date_options(
    status: JourneyStatus,
    cp: ClinicProtocol,
    session_number: int,
    *,
    today: date,
    trips: Sequence[DateRange] = (),
    days: int = 56,
) -> list[DayOption]:
    """Every day from ``today`` for ``days`` days, checked with ``check_session_change`` exactly
    as the workflow's validator checks a reschedule (same sessions, trips and settings)."""
    slots = [
        SessionSlot(number=s.number, on=s.planned_on, done=s.state == "done")
        for s in status.sessions
        if s.state != "cancelled"
    ]
    current = next((s.planned_on for s in status.sessions if s.number == session_number), None)
    conservative = "conservative_settings" in status.flags
    options: list[DayOption] = []
    for offset in range(days):
        d = today + timedelta(days=offset)
        if d == current:
            options.append(DayOption(on=d, allowed=False, current=True))
            continue
        check = check_session_change(
            session_number, d, slots, cp, today=today, trips=trips, conservative=conservative
        )
        options.append(DayOption(on=d, allowed=check.accepted, reasons=list(check.reasons)))
    return options


def _ranges(days: Iterable[date], date_text: Callable[[date], str] = format_date) -> list[str]:
    """Consecutive days as ``"3–7 June 2027"`` runs (weekends of closed days stay apart); with
    another ``date_text`` (a language's), ``"3. Juni 2027 – 7. Juni 2027"``."""
    out: list[str] = []
    run: list[date] = []
    for d in sorted(days):
        if run and d == run[-1] + timedelta(days=1):
            run.append(d)
            continue
        if run:
            out.append(_range_text(run[0], run[-1], date_text))
        run = [d]
    if run:
        out.append(_range_text(run[0], run[-1], date_text))
    return out


def _range_text(a: date, b: date, date_text: Callable[[date], str] = format_date) -> str:
    if a == b:
        return date_text(a)
    if date_text is not format_date:  # a language's dates: whole dates at both ends
        return f"{date_text(a)} – {date_text(b)}"
    if a.year == b.year and a.month == b.month:
        return f"{a.day}–{format_date(b)}"
    return f"{format_date(a)} – {format_date(b)}"


def group_refusals(
    options: Sequence[DayOption], *, date_text: Callable[[date], str] = format_date
) -> list[RuleGroup]:
    """The refused days grouped by rule: one explanation per rule and the days it covers.

    Closed days are summarised as weekdays rather than listed one by one. ``date_text``
    writes the ranges' dates (the patient's language on the patient's page).
    """
    by_rule: dict[str, list[tuple[date, Reason]]] = {}
    for o in options:
        for r in o.reasons:
            by_rule.setdefault(r.rule, []).append((o.on, r))
    groups: list[RuleGroup] = []
    for rule, hits in by_rule.items():
        days = [d for d, _ in hits]
        message = hits[0][1].message
        if rule == "closed_day":
            weekdays = sorted({d.weekday() for d in days})
            names = " and ".join(weekday_name(w) + "s" for w in weekdays)
            tail = message.split("; ", 1)[1] if "; " in message else ""
            message = f"The clinic is closed on {names}" + (f"; {tail}" if tail else ".")
            ranges: list[str] = []
        else:
            ranges = _ranges(days, date_text)
        groups.append(
            RuleGroup(
                rule=rule,
                title=RULE_TITLES.get(rule, rule.replace("_", " ").capitalize()),
                message=message,
                ranges=ranges,
            )
        )
    return groups


def calendar_weeks(
    options: Sequence[DayOption], *, first_weekday: int = 0
) -> list[list[DayOption | None]]:
    """The options as weeks starting on ``first_weekday`` (Monday=0, the default; Sunday=6 for
    a US locale), padded with ``None`` before the first day."""
    if not options:
        return []
    weeks: list[list[DayOption | None]] = []
    week: list[DayOption | None] = [None] * ((options[0].on.weekday() - first_weekday) % 7)
    for o in options:
        week.append(o)
        if len(week) == 7:
            weeks.append(week)
            week = []
    if week:
        weeks.append(week + [None] * (7 - len(week)))
    return weeks


def local_today(row: JourneyRow, status: JourneyStatus | None, tz: str) -> date:
    """The journey's today in the clinic's zone (simulated for a sandbox journey)."""
    return clinic_today(journey_now(row, status, datetime.now(UTC)), tz)
