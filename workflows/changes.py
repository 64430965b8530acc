"""Checking a request to move one session (reschedule): accepted, or refused with reasons.

Rules (all that apply are collected; ``hard minimum`` is ``min_interval_days``, or
``conservative_interval_min_days`` with conservative settings):
    * ``no_such_session``: the number is not in the course;
    * ``session_done``: the session is already done;
    * ``in_past``: the new date is before ``today`` (today itself is allowed);
    * ``closed_day``: the clinic is closed on that weekday (also for a later session kept or
      shifted onto a closed day);
    * ``in_summer``: the new date is in summer;
    * ``too_soon_after_previous``: fewer than the hard minimum days after the previous session
      (exactly the minimum is allowed); the message names the earliest allowed date;
    * ``during_trip``: the new date (or a later session, kept or shifted) falls inside a trip;
    * ``after_season_cutoff``: after later sessions are shifted, the last one is after the
      cutoff of the season of the new date (the cutoff day itself is allowed);
    * ``too_close_to_trip``: a trip starts on or after the first remaining session and less
      than ``trip_buffer_days`` after the last one (exactly ``trip_buffer_days`` is allowed).
Later not-done sessions keep their dates unless the hard minimum after the (new) session
before them requires a shift; then each moves to the first open day allowed.

Pure and deterministic; safe in the Temporal workflow sandbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from pydantic import BaseModel, ConfigDict, Field

from workflows.calendar import is_open_day, next_open_day
from workflows.protocol import ClinicProtocol, ClinicSettings, DateRange
from workflows.reasons import Reason, format_date, weekday_name
from workflows.season import (
    is_in_season,
    next_season_opening,
    season_cutoff,
    summer_start_after,
)

__all__ = ["ChangeCheck", "SessionSlot", "check_session_change"]


class SessionSlot(BaseModel):
    """One session of a course as the workflow knows it.

    Attributes:
        number: 1-based position in the course.
        on: Its (planned or actual) date.
        done: True once the session was completed.
    """

    model_config = ConfigDict(frozen=True)

    number: int = Field(ge=1)
    on: date
    done: bool = False


class ChangeCheck(BaseModel):
    """The answer to a reschedule request.

    Attributes:
        accepted: True if every rule holds.
        reasons: Every rule broken; empty if accepted.
        new_dates: When accepted, the new dates of session ``number`` and of every later
            not-done session, in order (later ones shifted only when the minimum interval needs
            it); empty when refused.
        shifted_sessions: Numbers of the later sessions whose dates moved.
        course_split: True when a summer lies between the previous session and the new date.
    """

    model_config = ConfigDict(frozen=True)

    accepted: bool
    reasons: list[Reason]
    new_dates: list[date]
    shifted_sessions: list[int] = Field(default_factory=list)
    course_split: bool = False


def _open_days_text(clinic: ClinicSettings) -> str:
    return ", ".join(weekday_name(d) for d in clinic.open_weekdays)


def _closed_reason(d: date, clinic: ClinicSettings, label: str) -> Reason:
    return Reason(
        rule="closed_day",
        message=(
            f"The clinic is closed on {weekday_name(d.weekday())}s, so {label} cannot be on "
            f"{format_date(d)}; open days are {_open_days_text(clinic)}."
        ),
    )


def check_session_change(
    number: int,
    new_date: date,
    sessions: Sequence[SessionSlot],
    clinic_protocol: ClinicProtocol,
    *,
    today: date,
    trips: Sequence[DateRange] = (),
    conservative: bool = False,
) -> ChangeCheck:
    """Check moving session ``number`` to ``new_date``; see the module docstring for the rules.

    Args:
        number: The session to move (1-based).
        new_date: The requested date (clinic-local).
        sessions: The course as it stands (done and planned sessions, any order).
        clinic_protocol: Clinic and protocol.
        today: The clinic's local date now (e.g. ``clinic_today(workflow.now(), tz)``).
        trips: Planned trips with sun exposure.
        conservative: Use the conservative minimum interval.

    Returns:
        A :class:`ChangeCheck` listing every rule broken, or the new dates when accepted.
    """
    protocol = clinic_protocol.protocol
    clinic = clinic_protocol.clinic
    hard_min, _, _ = protocol.interval_bounds(conservative)
    gap = timedelta(days=hard_min)
    slots = sorted(sessions, key=lambda s: s.number)
    slot = next((s for s in slots if s.number == number), None)
    reasons: list[Reason] = []

    if slot is None:
        known = ", ".join(str(s.number) for s in slots) or "none"
        reasons.append(
            Reason(
                rule="no_such_session",
                message=f"There is no session {number} in this course (sessions: {known}).",
            )
        )
    elif slot.done:
        reasons.append(
            Reason(
                rule="session_done",
                message=(
                    f"Session {number} on {format_date(slot.on)} is already done and cannot "
                    f"be moved."
                ),
            )
        )
    if new_date < today:
        reasons.append(
            Reason(
                rule="in_past",
                message=(
                    f"{format_date(new_date)} is in the past (today is {format_date(today)})."
                ),
            )
        )
    if not is_open_day(new_date, clinic):
        reasons.append(_closed_reason(new_date, clinic, f"session {number}"))
    season = is_in_season(new_date, clinic)
    if season.reason is not None:
        reasons.append(season.reason)
    previous = next((s for s in reversed(slots) if s.number < number), None)
    if previous is not None and new_date < previous.on + gap:
        earliest = previous.on + gap
        first_open = next_open_day(earliest, clinic)
        extra = (
            f" (the first open day from then is {format_date(first_open)})"
            if first_open != earliest
            else ""
        )
        reasons.append(
            Reason(
                rule="too_soon_after_previous",
                message=(
                    f"Session {number} must be at least {hard_min} days after session "
                    f"{previous.number} on {format_date(previous.on)}, so no earlier than "
                    f"{format_date(earliest)}{extra}."
                ),
            )
        )
    for trip in trips:
        if trip.contains(new_date):
            reasons.append(
                Reason(
                    rule="during_trip",
                    message=(
                        f"{format_date(new_date)} falls during the trip from "
                        f"{format_date(trip.start)} to {format_date(trip.end)}."
                    ),
                )
            )

    if slot is None or slot.done:
        return ChangeCheck(accepted=False, reasons=reasons, new_dates=[])

    # Shift later not-done sessions only as far as the hard minimum requires.
    later = [s for s in slots if s.number > number and not s.done]
    new_dates = [new_date]
    shifted: list[int] = []
    for s in later:
        earliest = new_dates[-1] + gap
        if s.on >= earliest:
            new_dates.append(s.on)
        else:
            new_dates.append(next_open_day(earliest, clinic))
            shifted.append(s.number)
    for s, d in zip(later, new_dates[1:], strict=True):
        label = f"session {s.number}" + (
            " (moved to keep the interval)" if s.number in shifted else ""
        )
        if not is_open_day(d, clinic):
            reasons.append(_closed_reason(d, clinic, label))
        for trip in trips:
            if trip.contains(d):
                reasons.append(
                    Reason(
                        rule="during_trip",
                        message=(
                            f"{label[0].upper()}{label[1:]} on {format_date(d)} would fall during "
                            f"the trip from {format_date(trip.start)} to {format_date(trip.end)}."
                        ),
                    )
                )

    last = new_dates[-1]
    cutoff = season_cutoff(new_date, clinic, protocol)
    if last > cutoff:
        summer_start = summer_start_after(cutoff, clinic)
        which = "session" if len(new_dates) == 1 else f"course (session {later[-1].number})"
        reasons.append(
            Reason(
                rule="after_season_cutoff",
                message=(
                    f"The {which} would end on {format_date(last)}, after {format_date(cutoff)}: "
                    f"the last session must be at least {protocol.summer_buffer_days} days before "
                    f"summer starts on {format_date(summer_start)}."
                ),
            )
        )

    pending = sorted([s.on for s in slots if s.number < number and not s.done] + new_dates)
    first = pending[0]
    buffer = timedelta(days=protocol.trip_buffer_days)
    for trip in trips:
        if any(trip.contains(d) for d in new_dates):
            continue  # already reported as during_trip
        if first <= trip.start < last + buffer:
            reasons.append(
                Reason(
                    rule="too_close_to_trip",
                    message=(
                        f"The course would end on {format_date(last)}, but the last session must "
                        f"be at least {protocol.trip_buffer_days} days before the trip from "
                        f"{format_date(trip.start)} to {format_date(trip.end)}, so on or before "
                        f"{format_date(trip.start - buffer)}."
                    ),
                )
            )

    if reasons:
        return ChangeCheck(accepted=False, reasons=reasons, new_dates=[])
    split = previous is not None and new_date >= summer_start_after(
        next_season_opening(previous.on, clinic), clinic
    )
    return ChangeCheck(
        accepted=True,
        reasons=[],
        new_dates=new_dates,
        shifted_sessions=shifted,
        course_split=split,
    )
