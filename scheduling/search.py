"""The slot search: pure (no I/O, no clock), deterministic, bounded.

Given a clinic's capacity (resources with their working hours, closures, slot rules), the
intervals its resources are already busy, and a session's allowed days, list the candidate
slots in order of preference:

1. slots matching the patient's preferences (weekday, part of the day or time range) before
   those that do not (preferences order, never exclude);
2. then the day nearest the preferred day (the planner's day first; an earlier day before a
   later one at the same distance);
3. then the earlier start in the day.

A slot is a start on the clinic's grid (``step_minutes`` from the start of each working range,
local time) where, for each resource kind the session needs, enough resources of that kind:

* work then: the session ``[start, start + duration)`` lies inside one of their working ranges
  for that weekday (turnover may run past the end of the range);
* are not closed that day (clinic-wide or their own closure);
* are free: ``[start, start + duration + turnover)`` overlaps none of their busy intervals (a
  busy interval already holds the other session's turnover).

DST-safe: local wall times become aware datetimes with :mod:`zoneinfo`; a wall time that does
not exist that day (spring forward) is skipped, an ambiguous one (fall back) is its first
occurrence, and durations are absolute (a 30-minute session across a change lasts 30 minutes).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from scheduling.preferences import NO_PREFERENCES, SlotPreferences
from scheduling.resources import Closure, Resource, SlotRules, TimeRange, WeekHours
from workflows.booking import SlotResource

__all__ = [
    "MAX_CANDIDATES",
    "MAX_DAYS",
    "Busy",
    "Candidate",
    "Capacity",
    "first_free_day",
    "local_start",
    "search",
]

MAX_DAYS: Final = 500
"""At most this many days are examined per search (allowed days plus the days after them)."""
MAX_CANDIDATES: Final = 500
"""At most this many candidates are returned."""


@dataclass(frozen=True)
class Capacity:
    """What a clinic can offer: active resources (each with its hours resolved), closures and
    rules."""

    timezone: str
    resources: tuple[Resource, ...]
    hours: Mapping[str, WeekHours]
    """Working hours by resource id (the clinic's default already applied)."""
    closures: tuple[Closure, ...] = ()
    rules: SlotRules = field(default_factory=SlotRules)

    @property
    def known(self) -> bool:
        """False for a clinic without resources on file (no capacity to search)."""
        return bool(self.resources)


class Busy:
    """Busy intervals per resource, ``[start, end)`` aware datetimes, for fast overlap checks
    (sorted starts with a running maximum of the ends: one binary search per check)."""

    def __init__(self, intervals: Mapping[str, Iterable[tuple[datetime, datetime]]] = {}) -> None:
        self._items: dict[str, list[tuple[datetime, datetime]]] = {}
        self._index: dict[str, tuple[list[datetime], list[datetime]]] = {}
        for resource_id, items in intervals.items():
            for start, end in items:
                self.add(resource_id, start, end)

    def add(self, resource_id: str, start: datetime, end: datetime) -> None:
        self._items.setdefault(resource_id, []).append((start, end))
        self._index.pop(resource_id, None)

    def _sorted(self, resource_id: str) -> tuple[list[datetime], list[datetime]]:
        index = self._index.get(resource_id)
        if index is None:
            items = sorted(self._items.get(resource_id, []))
            starts = [s for s, _ in items]
            running: list[datetime] = []
            for _, e in items:
                running.append(e if not running or e > running[-1] else running[-1])
            index = self._index[resource_id] = (starts, running)
        return index

    def free(self, resource_id: str, start: datetime, end: datetime) -> bool:
        """True when ``[start, end)`` overlaps no busy interval of the resource."""
        if resource_id not in self._items:
            return True
        starts, max_end = self._sorted(resource_id)
        i = bisect.bisect_left(starts, end)  # intervals [0, i) start before ``end``
        return i == 0 or max_end[i - 1] <= start

    def intervals(self, resource_id: str) -> list[tuple[datetime, datetime]]:
        return sorted(self._items.get(resource_id, []))

    def minutes(self, resource_id: str, lo: datetime, hi: datetime) -> float:
        """Busy minutes of the resource inside ``[lo, hi)`` (to balance the load)."""
        total = 0.0
        for s, e in self._items.get(resource_id, []):
            overlap = (min(e, hi) - max(s, lo)).total_seconds()
            if overlap > 0:
                total += overlap / 60
        return total


@dataclass(frozen=True)
class Candidate:
    """A free slot: the session's start and end (UTC) and the resources it holds."""

    starts_at: datetime
    ends_at: datetime
    resources: tuple[SlotResource, ...]
    on: date
    local_time: time
    matches: bool
    """True when it matches the patient's preferences."""


def local_start(day: date, at: time, zone: ZoneInfo) -> datetime | None:
    """The aware datetime of wall time ``at`` on ``day`` in ``zone``; None when that wall time
    does not exist that day (skipped by a DST change). An ambiguous one is its first occurrence."""
    naive = datetime.combine(day, at)
    aware = naive.replace(tzinfo=zone, fold=0)
    back = aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    if back != naive:
        return None
    return aware.astimezone(UTC)


def _range_bounds(day: date, r: TimeRange, zone: ZoneInfo) -> tuple[datetime, datetime]:
    start = datetime.combine(day, r.start).replace(tzinfo=zone).astimezone(UTC)
    end = datetime.combine(day, r.end).replace(tzinfo=zone).astimezone(UTC)
    return start, end


def _starts(day: date, ranges: Sequence[TimeRange], step: int) -> list[time]:
    """Local wall times on the grid of each range (the range's start, then every ``step``)."""
    out: set[time] = set()
    for r in ranges:
        minute = r.start.hour * 60 + r.start.minute
        end = r.end.hour * 60 + r.end.minute + (1 if r.end.second else 0)
        while minute < end:
            out.add(time(minute // 60, minute % 60))
            minute += step
    return sorted(out)


def _day_candidates(
    cap: Capacity,
    busy: Busy,
    day: date,
    zone: ZoneInfo,
    duration: timedelta,
    turnover: timedelta,
    preferences: SlotPreferences,
    exact_time: time | None,
    not_before: datetime | None,
    limit: int,
) -> list[Candidate]:
    weekday = day.weekday()
    if any(c.covers(day) and c.resource_id is None for c in cap.closures):
        return []
    working: list[tuple[Resource, list[tuple[datetime, datetime]]]] = []
    for res in cap.resources:
        if not res.active or any(c.covers(day, res.resource_id) for c in cap.closures):
            continue
        ranges = cap.hours[res.resource_id].on(weekday)
        if ranges:
            working.append((res, [_range_bounds(day, r, zone) for r in ranges]))
    needs = {k: n for k, n in cap.rules.needs.items() if n > 0}
    if not needs or not working:
        return []
    for kind, count in needs.items():
        if sum(1 for res, _ in working if res.kind == kind) < count:
            return []
    # The grid: every resource's ranges (resources with their own hours add their own starts).
    grid_ranges: list[TimeRange] = []
    for res, _ in working:
        grid_ranges.extend(cap.hours[res.resource_id].on(weekday))
    starts = (
        [exact_time]
        if exact_time is not None
        else _starts(day, grid_ranges, cap.rules.step_minutes)
    )
    day_lo = datetime.combine(day, time(0)).replace(tzinfo=zone).astimezone(UTC)
    day_hi = day_lo + timedelta(days=1)
    load = {res.resource_id: busy.minutes(res.resource_id, day_lo, day_hi) for res, _ in working}
    out: list[Candidate] = []
    for wall in starts:
        start = local_start(day, wall, zone)
        if start is None or (not_before is not None and start < not_before):
            continue
        end = start + duration
        held_until = end + turnover
        chosen: list[Resource] = []
        for kind, count in needs.items():
            free = [
                res
                for res, bounds in working
                if res.kind == kind
                and any(lo <= start and end <= hi for lo, hi in bounds)
                and busy.free(res.resource_id, start, held_until)
            ]
            if len(free) < count:
                break
            # The least-loaded resources that day first (spreads sessions over the lasers).
            free.sort(key=lambda r: (load[r.resource_id], r.resource_id))
            chosen.extend(free[:count])
        else:
            out.append(
                Candidate(
                    starts_at=start,
                    ends_at=end,
                    resources=tuple(
                        SlotResource(resource_id=r.resource_id, kind=r.kind, label=r.label)
                        for r in chosen
                    ),
                    on=day,
                    local_time=wall,
                    matches=preferences.day_matches(weekday) and preferences.time_matches(wall),
                )
            )
            if len(out) >= limit:
                break
    return out


def search(
    cap: Capacity,
    busy: Busy,
    days: Sequence[date],
    *,
    duration_minutes: int,
    preferred_on: date | None = None,
    preferences: SlotPreferences = NO_PREFERENCES,
    exact_time: time | None = None,
    turnover_minutes: int | None = None,
    not_before: datetime | None = None,
    limit: int = 50,
    per_day: int | None = None,
) -> list[Candidate]:
    """The free slots on ``days``, best first (see the module docstring for the order).

    Args:
        cap: The clinic's capacity.
        busy: What is already reserved (with turnover).
        days: The allowed days (at most :data:`MAX_DAYS` are examined).
        duration_minutes: The session's length.
        preferred_on: The planner's day (None: the first allowed day).
        preferences: The patient's preferences.
        exact_time: Only this local start counts.
        turnover_minutes: Held after the session (None: the clinic's rule).
        not_before: No slot starts before this instant.
        limit: At most this many candidates (capped at :data:`MAX_CANDIDATES`).
        per_day: At most this many candidates per day (None: no cap per day).
    """
    if not days or not cap.known:
        return []
    zone = ZoneInfo(cap.timezone)
    limit = max(0, min(limit, MAX_CANDIDATES))
    duration = timedelta(minutes=duration_minutes)
    turnover = timedelta(
        minutes=cap.rules.turnover_minutes if turnover_minutes is None else turnover_minutes
    )
    unique_days = sorted(set(days))[:MAX_DAYS]
    anchor = preferred_on if preferred_on is not None else unique_days[0]
    # Per day, matches first then by start; collect enough of each day to fill the limit.
    per_day_cap = limit if per_day is None else min(per_day, limit)
    found: list[Candidate] = []
    for day in unique_days:
        # A day's candidates are in start order; take all (bounded by the grid) so that the
        # preferred times of a day can come before its earlier ones.
        day_found = _day_candidates(
            cap, busy, day, zone, duration, turnover, preferences, exact_time, not_before, 10_000
        )
        day_found.sort(key=lambda c: (not c.matches, c.starts_at))
        found.extend(day_found[:per_day_cap])
    found.sort(
        key=lambda c: (
            not c.matches,
            abs((c.on - anchor).days),
            c.on,
            c.starts_at,
        )
    )
    return found[:limit]


def first_free_day(
    cap: Capacity,
    busy: Busy,
    after: date,
    *,
    duration_minutes: int,
    days: int = 60,
    turnover_minutes: int | None = None,
    not_before: datetime | None = None,
) -> date | None:
    """The first day after ``after`` (up to ``days`` days) with any free slot: hours, closures
    and capacity only (no clinical rule, no preference)."""
    if not cap.known:
        return None
    zone = ZoneInfo(cap.timezone)
    duration = timedelta(minutes=duration_minutes)
    turnover = timedelta(
        minutes=cap.rules.turnover_minutes if turnover_minutes is None else turnover_minutes
    )
    for offset in range(1, min(days, MAX_DAYS) + 1):
        day = after + timedelta(days=offset)
        if _day_candidates(
            cap, busy, day, zone, duration, turnover, NO_PREFERENCES, None, not_before, 1
        ):
            return day
    return None
