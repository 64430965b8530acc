"""A session's allowed window: the days on which the clinical rules let it take place.

Used by the journey before it asks for a slot (``workflows/booking.py``), by the API when it
offers free times for a reschedule, and by the booking-system event published for a clinic with
its own booking system. One rule set: every day is checked with
:func:`workflows.changes.check_session_change` (open day, summer, the hard minimum after the
previous session, trips and their buffer, the season cutoff, and for the later sessions the
shift a day forces on them: a day that would push them past the cutoff is not allowed).

The window's ends come from the interval: from the later of the booking notice and the hard
minimum after the previous session, to the end of the target interval after it (for a first
session, or one planned after a summer break, the planned day plus the target interval's
width). Pure and deterministic; safe in the workflow sandbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from workflows.changes import SessionSlot, check_session_change
from workflows.protocol import ClinicProtocol, DateRange

MAX_WINDOW_DAYS = 120
"""A bound on the days examined (a protocol with huge intervals must not make this unbounded)."""


def window_ends(
    number: int,
    planned_on: date,
    sessions: Sequence[SessionSlot],
    cp: ClinicProtocol,
    *,
    today: date,
    conservative: bool = False,
    earliest: date | None = None,
) -> tuple[date, date]:
    """The first and last day to examine for session ``number`` (inclusive)."""
    p = cp.protocol
    hard_min, target_min, target_max = p.interval_bounds(conservative)
    previous = max((s for s in sessions if s.number < number), key=lambda s: s.number, default=None)
    lo = today + timedelta(days=p.booking_notice_days)
    if earliest is not None:
        lo = max(lo, earliest)
    width = timedelta(days=target_max - target_min)
    if previous is not None:
        lo = max(lo, previous.on + timedelta(days=hard_min))
        hi = max(previous.on + timedelta(days=target_max), planned_on + width)
    else:
        hi = max(planned_on, lo) + width
    hi = min(hi, lo + timedelta(days=MAX_WINDOW_DAYS - 1))
    return lo, hi


def allowed_days(
    number: int,
    sessions: Sequence[SessionSlot],
    cp: ClinicProtocol,
    *,
    today: date,
    trips: Sequence[DateRange] = (),
    conservative: bool = False,
    earliest: date | None = None,
) -> list[date]:
    """The days session ``number`` may take place, ascending (a day after the planned one may
    shift later sessions; :func:`check_session_change` gives their new dates).

    Empty when no day in the window is allowed (e.g. the season cutoff passed): the caller
    replans.
    """
    slot = next((s for s in sessions if s.number == number), None)
    if slot is None or slot.done:
        return []
    lo, hi = window_ends(
        number,
        slot.on,
        sessions,
        cp,
        today=today,
        conservative=conservative,
        earliest=earliest,
    )
    days: list[date] = []
    day = lo
    while day <= hi:
        check = check_session_change(
            number, day, sessions, cp, today=today, trips=trips, conservative=conservative
        )
        if check.accepted:
            days.append(day)
        day += timedelta(days=1)
    return days
