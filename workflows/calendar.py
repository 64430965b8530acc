"""Pure date helpers: month arithmetic, the clinic's local day, open days.

Guarantees: pure and deterministic (no clock: the caller passes ``now``), correct across
daylight-saving changes (offsets come from the clinic's zone on the date in question), safe in
the Temporal workflow sandbox provided ``zoneinfo`` is passed through (as
``worker/registry.py`` does): the default sandbox hands out a restricted ``ZoneInfo`` proxy that
``datetime.astimezone`` refuses ("tzinfo argument must be ... tzinfo subclass").
"""

from __future__ import annotations

import calendar as _stdlib_calendar
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from workflows.protocol import ClinicSettings

__all__ = [
    "add_months",
    "clinic_today",
    "end_of_local_day",
    "is_open_day",
    "local_datetime",
    "next_open_day",
]


def add_months(d: date, months: int) -> date:
    """Add (or, if negative, subtract) calendar months, clamping to the month's last day.

    Examples: 30 Nov 2026 + 3 → 28 Feb 2027; 30 Nov 2027 + 3 → 29 Feb 2028;
    29 Feb 2028 + 12 → 28 Feb 2029; 31 Jan + 1 → 28/29 Feb.

    Returns:
        The same day-of-month ``months`` later, or the last day of that month if shorter.
    """
    index = d.year * 12 + (d.month - 1) + months
    year, month0 = divmod(index, 12)
    last_day = _stdlib_calendar.monthrange(year, month0 + 1)[1]
    return date(year, month0 + 1, min(d.day, last_day))


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime (e.g. workflow.now(), in UTC)")


def clinic_today(now: datetime, tz: str) -> date:
    """The clinic's local calendar date at the instant ``now``.

    Args:
        now: An aware datetime (normally UTC from ``workflow.now()``).
        tz: IANA zone of the clinic.

    Raises:
        ValueError: If ``now`` is naive.
    """
    _require_aware(now)
    return now.astimezone(ZoneInfo(tz)).date()


def local_datetime(d: date, t: time, tz: str) -> datetime:
    """The UTC instant of local wall time ``t`` on local date ``d`` in zone ``tz``.

    Uses the zone's offset on that date (so 09:00 in Berlin is 08:00 UTC in winter and
    07:00 UTC in summer). A wall time that does not exist (skipped by a spring-forward gap)
    is read with the offset before the change (02:30 on the Berlin spring-forward day is 01:30
    UTC, i.e. 03:30 local); an ambiguous one (autumn fold) is its first occurrence.

    Returns:
        An aware datetime in UTC.
    """
    local = datetime.combine(d, t.replace(tzinfo=None), tzinfo=ZoneInfo(tz))
    return local.astimezone(UTC)


def local_time(instant: datetime, tz: str) -> time:
    """The wall-clock time of ``instant`` in zone ``tz`` (e.g. a slot's start as the clinic
    reads it)."""
    _require_aware(instant)
    return instant.astimezone(ZoneInfo(tz)).time().replace(tzinfo=None)


def end_of_local_day(d: date, tz: str) -> datetime:
    """The UTC instant at which local date ``d`` ends (the next local midnight).

    Returns:
        An aware UTC datetime; e.g. in Berlin the day of the spring-forward change is 23 hours
        long and the autumn one 25 hours long.
    """
    return local_datetime(d + timedelta(days=1), time(0, 0), tz)


def is_open_day(d: date, clinic: ClinicSettings) -> bool:
    """True if the clinic books sessions on ``d``'s weekday (``clinic.open_weekdays``)."""
    return d.weekday() in clinic.open_weekdays


def next_open_day(d: date, clinic: ClinicSettings) -> date:
    """The first open day on or after ``d`` (``d`` itself if open); at most 6 days later."""
    for offset in range(7):
        candidate = d + timedelta(days=offset)
        if is_open_day(candidate, clinic):
            return candidate
    raise ValueError("the clinic has no open weekday")  # unreachable: validated non-empty
