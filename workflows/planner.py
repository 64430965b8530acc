"""Course planning: the dates of a course's sessions under every rule of the protocol.

Guarantees of :func:`plan_course` (property-tested), for every planned date:
    * it is an open weekday of the clinic and on or after ``earliest``;
    * it is outside summer, and all sessions lie in one season window, so the last session is
      on or before the cutoff (``summer start − summer_buffer_days``, that day allowed);
    * it is at least the hard minimum interval (``min_interval_days``, or
      ``conservative_interval_min_days``) after ``previous_session_on`` and after the session
      before it; the planner steps by the target minimum and takes the first open day, so each
      interval is within the target range whenever an open day exists in that range;
    * it is not inside any trip, and no trip starts between the first session and
      ``trip_buffer_days`` after the last one (the last session is on or before
      ``trip start − trip_buffer_days``, that day allowed); otherwise the course moves to after
      the trip's end.
The plan is the earliest one that satisfies all rules: when the course cannot start from
``earliest`` it moves to the next candidate start (the next season opening, or the day after a
blocking trip), up to ``protocol.planning_horizon_years`` ahead, and says why in
``waiting_reason``.

Pure and deterministic; safe in the Temporal workflow sandbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from pydantic import BaseModel, ConfigDict, Field

from workflows.calendar import add_months, next_open_day
from workflows.protocol import ClinicProtocol, DateRange, Protocol
from workflows.reasons import Reason, format_date
from workflows.season import (
    course_straddles_summer,
    in_summer,
    is_in_season,
    season_cutoff,
    season_window,
    summer_start_after,
)

__all__ = [
    "CoursePlan",
    "greedy_dates",
    "plan_course",
    "plan_for_grade",
    "review_date",
    "spf_window_end",
    "trip_conflicts",
]

_MAX_ATTEMPTS = 10_000  # safety net; each attempt moves the start strictly later


class CoursePlan(BaseModel):
    """A planned course (or the remaining part of one).

    Attributes:
        requested_from: The ``earliest`` date asked for.
        sessions: Planned dates, ascending; empty only if no course fits within the planning
            horizon.
        starts_on: First session, or None if nothing could be planned.
        last_session_on: Last session, or None.
        spf_until: Last day sun protection (SPF ``spf_factor``) is required (inclusive), or
            None.
        review_on: Date of the review of the result, or None.
        waiting_reason: Plain words, why the course cannot start on ``requested_from`` (season
            or trip); None when it starts on the first open day allowed.
        reasons: One :class:`Reason` per move (``in_summer``, ``after_season_cutoff``,
            ``during_trip``, ``too_close_to_trip``, ``planning_horizon``).
        interval_days: The target interval ``(min, max)`` used, in days.
        conservative: Whether the conservative intervals were used.
        course_split: True when ``previous_session_on`` was given and a summer begins between
            it and the first planned session (staff are told the course is split); the same
            rule as :func:`~workflows.season.course_straddles_summer` on the previous session
            and the planned ones.
    """

    model_config = ConfigDict(frozen=True)

    requested_from: date
    sessions: list[date]
    starts_on: date | None
    last_session_on: date | None
    spf_until: date | None
    review_on: date | None
    waiting_reason: str | None
    reasons: list[Reason]
    interval_days: tuple[int, int]
    conservative: bool
    course_split: bool = False
    protocol_version: str = Field(default="")


def spf_window_end(last_session: date, protocol: Protocol) -> date:
    """Last day sun protection is required (inclusive): ``add_months(last_session, spf_months)``.

    Month-end clamping applies: a last session on 31 December gives 28/29 February.
    """
    return add_months(last_session, protocol.spf_months)


def review_date(last_session: date, protocol: Protocol) -> date:
    """Date of the review: ``add_months(last_session, review_months)`` (month-end clamped)."""
    return add_months(last_session, protocol.review_months)


def greedy_dates(
    first: date, sessions: int, step_days: int, clinic_protocol: ClinicProtocol
) -> list[date]:
    """``sessions`` dates: the first open day on/after ``first``, then each the first open day
    at least ``step_days`` after the previous one. No season or trip rule is applied here."""
    clinic = clinic_protocol.clinic
    dates = [next_open_day(first, clinic)]
    while len(dates) < sessions:
        dates.append(next_open_day(dates[-1] + timedelta(days=step_days), clinic))
    return dates


def trip_conflicts(
    dates: Sequence[date], trips: Sequence[DateRange], protocol: Protocol
) -> list[tuple[DateRange, Reason]]:
    """Trips that the course ``dates`` (ascending, non-empty) breaks, with the reason.

    A trip conflicts if a session falls inside it (``during_trip``) or if it starts on or after
    the first session and less than ``trip_buffer_days`` after the last session
    (``too_close_to_trip``): the last session must be on or before ``trip.start −
    trip_buffer_days`` (a trip starting exactly ``trip_buffer_days`` after it is fine).
    """
    first, last = dates[0], dates[-1]
    buffer = protocol.trip_buffer_days
    found: list[tuple[DateRange, Reason]] = []
    for trip in trips:
        inside = [d for d in dates if trip.contains(d)]
        if inside:
            found.append(
                (
                    trip,
                    Reason(
                        rule="during_trip",
                        message=(
                            f"The session on {format_date(inside[0])} would fall during the "
                            f"trip from {format_date(trip.start)} to {format_date(trip.end)}."
                        ),
                    ),
                )
            )
        elif first <= trip.start < last + timedelta(days=buffer):
            latest = trip.start - timedelta(days=buffer)
            if trip.start <= last:
                text = (
                    f"The trip from {format_date(trip.start)} to {format_date(trip.end)} would "
                    f"fall during the course ({format_date(first)} to {format_date(last)}); the "
                    f"last session must be at least {buffer} days before a trip, so on or "
                    f"before {format_date(latest)}."
                )
            else:
                text = (
                    f"The course would end on {format_date(last)}, less than {buffer} days "
                    f"before the trip starting on {format_date(trip.start)} (the last session "
                    f"must be on or before {format_date(latest)})."
                )
            found.append((trip, Reason(rule="too_close_to_trip", message=text)))
    return found


def _sentence(text: str) -> str:
    return text if text.endswith(".") else text + "."


def plan_course(
    earliest: date,
    sessions: int,
    clinic_protocol: ClinicProtocol,
    *,
    trips: Sequence[DateRange] = (),
    previous_session_on: date | None = None,
    conservative: bool = False,
) -> CoursePlan:
    """Plan the earliest course of ``sessions`` sessions that satisfies every rule.

    Args:
        earliest: No session before this date.
        sessions: Number of sessions still to plan (1 .. ``max_sessions_per_course``); after a
            deferral or a no-show the workflow passes the remaining number.
        clinic_protocol: Clinic (open days, summer) and protocol (intervals, buffers).
        trips: Planned trips with sun exposure (inclusive ranges).
        previous_session_on: The last session already done, if any: the first planned session
            is at least the target minimum interval after it.
        conservative: Use the conservative intervals (Fitzpatrick IV–VI).

    Returns:
        A :class:`CoursePlan`; see the module docstring for the guarantees.

    Raises:
        ValueError: If ``sessions`` is below 1 or above ``max_sessions_per_course``.
    """
    protocol = clinic_protocol.protocol
    clinic = clinic_protocol.clinic
    if not 1 <= sessions <= protocol.max_sessions_per_course:
        raise ValueError(
            f"sessions must be between 1 and {protocol.max_sessions_per_course} (got {sessions})"
        )
    _, target_min, target_max = protocol.interval_bounds(conservative)
    start = earliest
    if previous_session_on is not None:
        start = max(start, previous_session_on + timedelta(days=target_min))
    horizon = add_months(earliest, 12 * protocol.planning_horizon_years)
    moves: list[Reason] = []
    planned: list[date] = []

    for _ in range(_MAX_ATTEMPTS):
        if start > horizon:
            break
        opens, cutoff = season_window(start, clinic, protocol)
        if opens > start:
            if in_summer(start, clinic):
                check = is_in_season(start, clinic)
                assert check.reason is not None
                moves.append(check.reason)
            else:
                summer_start = summer_start_after(start, clinic)
                moves.append(
                    Reason(
                        rule="after_season_cutoff",
                        message=(
                            f"A course starting on {format_date(start)} would end after "
                            f"{format_date(season_cutoff(start, clinic, protocol))}, "
                            f"{protocol.summer_buffer_days} days before summer starts on "
                            f"{format_date(summer_start)}; the season opens again on "
                            f"{format_date(opens)}."
                        ),
                    )
                )
            start = opens
        dates = greedy_dates(start, sessions, target_min, clinic_protocol)
        next_start = start
        if dates[-1] > cutoff:
            summer_start = summer_start_after(cutoff, clinic)
            reopen = season_window(cutoff + timedelta(days=1), clinic, protocol)[0]
            moves.append(
                Reason(
                    rule="after_season_cutoff",
                    message=(
                        f"A course of {sessions} session{'s' if sessions != 1 else ''} starting "
                        f"on {format_date(dates[0])} would end on {format_date(dates[-1])}, after "
                        f"{format_date(cutoff)}, {protocol.summer_buffer_days} days before summer "
                        f"starts on {format_date(summer_start)}; the season opens again on "
                        f"{format_date(reopen)}."
                    ),
                )
            )
            next_start = reopen
        conflicts = trip_conflicts(dates, trips, protocol)
        if conflicts:
            after = max(trip.end for trip, _ in conflicts) + timedelta(days=1)
            for trip, reason in conflicts:
                moves.append(
                    Reason(
                        rule=reason.rule,
                        message=(
                            f"{reason.message[:-1]}; the course starts after the trip ends on "
                            f"{format_date(trip.end)}."
                        ),
                    )
                )
            next_start = max(next_start, after)
        if next_start == start:
            planned = dates
            break
        start = next_start

    waiting = " ".join(_sentence(m.message) for m in moves) or None
    if not planned:
        moves.append(
            Reason(
                rule="planning_horizon",
                message=(
                    f"No course of {sessions} sessions fits between {format_date(earliest)} and "
                    f"{format_date(horizon)} with this clinic's season, open days and the "
                    f"planned trips; a clinician must decide."
                ),
            )
        )
        waiting = moves[-1].message
        return CoursePlan(
            requested_from=earliest,
            sessions=[],
            starts_on=None,
            last_session_on=None,
            spf_until=None,
            review_on=None,
            waiting_reason=waiting,
            reasons=moves,
            interval_days=(target_min, target_max),
            conservative=conservative,
            protocol_version=protocol.version,
        )
    split = previous_session_on is not None and course_straddles_summer(
        [previous_session_on, *planned], clinic
    )
    return CoursePlan(
        requested_from=earliest,
        sessions=planned,
        starts_on=planned[0],
        last_session_on=planned[-1],
        spf_until=spf_window_end(planned[-1], protocol),
        review_on=review_date(planned[-1], protocol),
        waiting_reason=waiting,
        reasons=moves,
        interval_days=(target_min, target_max),
        conservative=conservative,
        course_split=split,
        protocol_version=protocol.version,
    )


def plan_for_grade(
    earliest: date,
    grade: str,
    clinic_protocol: ClinicProtocol,
    *,
    trips: Sequence[DateRange] = (),
    conservative: bool = False,
) -> CoursePlan:
    """Plan a whole new course for a pore-size grade (``protocol.sessions_for(grade)``).

    Raises:
        ValueError: If the grade is unknown (the message names the known grades).
    """
    count = clinic_protocol.protocol.sessions_for(grade)
    return plan_course(earliest, count, clinic_protocol, trips=trips, conservative=conservative)
