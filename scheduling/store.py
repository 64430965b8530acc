"""Built-in scheduling in PostgreSQL (migration 0026, docs/scheduling.md): a clinic's
resources, hours, closures and slot rules; the patients' preferences; slot reservations.

Double booking is impossible by construction: ``slot_reservations`` carries an exclusion
constraint (``EXCLUDE USING gist (clinic_id WITH =, resource_id WITH =, during WITH &&) WHERE
(status = 'active')``). :func:`reserve` searches candidates in Python and lets PostgreSQL
decide: a candidate a concurrent reservation took fails with ``ExclusionViolationError`` inside
its own savepoint, and the next candidate is tried.

Used by the ``reserve_slot`` / ``release_slot`` activities (``activities/store.py``), by
``record_step`` (releases), and by the API and the CLI (resources, free times). Never by
workflow code.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import asyncpg

from scheduling.preferences import NO_PREFERENCES, SlotPreferences
from scheduling.resources import (
    DEFAULT_HOURS,
    MAX_CLOSURES,
    MAX_RESOURCES,
    ClinicScheduling,
    Closure,
    Resource,
    SchedulingSetup,
    SlotRules,
    TimeRange,
    WeekHours,
)
from scheduling.search import Busy, Candidate, Capacity, first_free_day, search
from workflows.booking import (
    BookedSlot,
    FreeTime,
    NextOption,
    SlotRelease,
    SlotRequest,
    SlotResource,
    SlotResult,
    default_slot,
)
from workflows.reasons import format_date

__all__ = [
    "NEXT_OPTION_DAYS",
    "add_closure",
    "capacity",
    "deactivate_resource",
    "delete_closure",
    "free_times",
    "get_preferences",
    "get_rules",
    "get_scheduling",
    "has_resources",
    "list_closures",
    "list_resources",
    "release",
    "release_for_step",
    "reserve",
    "set_default_hours",
    "set_preferences",
    "set_rules",
    "sync_clinic",
    "upsert_resource",
]

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
Executor = asyncpg.Pool | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

NEXT_OPTION_DAYS: Final = 60
"""After a window without a free slot, this many further days are searched for the first free
day (hours, closures and capacity only)."""
CANDIDATES_PER_ROUND: Final = 25
ROUNDS: Final = 8
"""A reservation tries up to ``CANDIDATES_PER_ROUND`` candidates, then searches again with the
reservations committed meanwhile, at most ``ROUNDS`` times (bounded under heavy contention;
then the activity fails and Temporal retries it)."""


class SchedulingLimitError(ValueError):
    """A clinic already has the most resources or closures it may have."""


class ReservationContention(RuntimeError):
    """Every candidate of every round was taken concurrently; retry the activity."""


# ---------------------------------------------------------------- capacity


async def _clinic_timezone(conn: Executor, clinic_id: str) -> str | None:
    tz: str | None = await conn.fetchval(
        "SELECT timezone FROM clinics WHERE clinic_id = $1", clinic_id
    )
    return tz


async def get_rules(conn: Executor, clinic_id: str) -> SlotRules:
    """The clinic's slot rules (the defaults when none are stored)."""
    row = await conn.fetchrow(
        "SELECT slot_minutes, turnover_minutes, step_minutes, needs FROM scheduling_rules "
        "WHERE clinic_id = $1",
        clinic_id,
    )
    return SlotRules() if row is None else SlotRules.model_validate(dict(row))


async def _hours(conn: Executor, clinic_id: str) -> dict[str, WeekHours]:
    rows = await conn.fetch(
        "SELECT resource_id, weekday, starts, ends FROM scheduling_hours WHERE clinic_id = $1 "
        "ORDER BY resource_id, weekday, starts",
        clinic_id,
    )
    by: dict[str, list[tuple[int, time, time]]] = {}
    for r in rows:
        by.setdefault(r["resource_id"], []).append((r["weekday"], r["starts"], r["ends"]))
    return {rid: WeekHours.from_rows(items) for rid, items in by.items()}


async def list_resources(
    conn: Executor, clinic_id: str, *, include_inactive: bool = False
) -> list[Resource]:
    """The clinic's resources (``hours`` set only for a resource with hours of its own)."""
    rows = await conn.fetch(
        "SELECT resource_id, kind, label, active FROM scheduling_resources "
        "WHERE clinic_id = $1 AND (active OR $2) ORDER BY kind, resource_id",
        clinic_id,
        include_inactive,
    )
    hours = await _hours(conn, clinic_id)
    return [
        Resource(
            resource_id=r["resource_id"],
            kind=r["kind"],
            label=r["label"],
            active=r["active"],
            hours=hours.get(r["resource_id"]),
        )
        for r in rows
    ]


async def list_closures(
    conn: Executor, clinic_id: str, *, ending_from: date | None = None
) -> list[Closure]:
    """The clinic's closures (those ending on or after ``ending_from`` when given)."""
    rows = await conn.fetch(
        "SELECT id, resource_id, starts_on, ends_on, reason FROM scheduling_closures "
        "WHERE clinic_id = $1 AND ($2::date IS NULL OR ends_on >= $2) ORDER BY starts_on, id",
        clinic_id,
        ending_from,
    )
    return [Closure.model_validate(dict(r)) for r in rows]


async def has_resources(conn: Executor, clinic_id: str) -> bool:
    """True when the clinic has an active resource on file (built-in scheduling applies)."""
    found = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM scheduling_resources WHERE clinic_id = $1 AND active)",
        clinic_id,
    )
    return bool(found)


async def capacity(conn: Executor, clinic_id: str, timezone: str | None = None) -> Capacity:
    """Everything the search needs about a clinic (``known`` False: no active resource)."""
    tz = timezone or await _clinic_timezone(conn, clinic_id) or "UTC"
    resources = [r for r in await list_resources(conn, clinic_id) if r.active]
    if not resources:
        return Capacity(timezone=tz, resources=(), hours={})
    hours = await _hours(conn, clinic_id)
    default = hours.get("", DEFAULT_HOURS)
    return Capacity(
        timezone=tz,
        resources=tuple(resources),
        hours={r.resource_id: hours.get(r.resource_id, default) for r in resources},
        closures=tuple(await list_closures(conn, clinic_id)),
        rules=await get_rules(conn, clinic_id),
    )


async def _busy(
    conn: Executor,
    clinic_id: str,
    lo: datetime,
    hi: datetime,
    ignore: SlotRelease | None = None,
) -> Busy:
    rows = await conn.fetch(
        """
        SELECT resource_id, lower(during) AS s, upper(during) AS e FROM slot_reservations
        WHERE clinic_id = $1 AND status = 'active' AND during && tstzrange($2, $3, '[)')
          AND NOT ($4::text IS NOT NULL AND workflow_id = $4 AND course_number = $5
                   AND session_number = $6)
        """,
        clinic_id,
        lo,
        hi,
        ignore.workflow_id if ignore else None,
        ignore.course_number if ignore else 0,
        ignore.session_number if ignore else 0,
    )
    busy = Busy()
    for r in rows:
        busy.add(r["resource_id"], r["s"], r["e"])
    return busy


def _span(days: Sequence[date], timezone: str, extra_days: int = 0) -> tuple[datetime, datetime]:
    """Instants covering ``days`` (and ``extra_days`` after), with a day's margin each side."""
    zone = ZoneInfo(timezone)
    lo = datetime.combine(min(days) - timedelta(days=1), time(0)).replace(tzinfo=zone)
    hi = datetime.combine(max(days) + timedelta(days=2 + extra_days), time(0)).replace(tzinfo=zone)
    return lo.astimezone(UTC), hi.astimezone(UTC)


# ---------------------------------------------------------------- preferences


async def get_preferences(conn: Executor, patient_id: str) -> SlotPreferences:
    """The patient's scheduling preferences (none stored: no preference)."""
    row = await conn.fetchrow(
        "SELECT weekdays, day_parts, time_ranges FROM patient_scheduling_preferences "
        "WHERE patient_id = $1",
        patient_id,
    )
    if row is None:
        return NO_PREFERENCES
    return SlotPreferences(
        weekdays=list(row["weekdays"]),
        day_parts=list(row["day_parts"]),
        times=[TimeRange.model_validate(t) for t in row["time_ranges"]],
    )


async def set_preferences(conn: Executor, patient_id: str, prefs: SlotPreferences) -> None:
    """Store (replace) the patient's preferences."""
    await conn.execute(
        """
        INSERT INTO patient_scheduling_preferences AS p
            (patient_id, weekdays, day_parts, time_ranges)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (patient_id) DO UPDATE SET
            weekdays = EXCLUDED.weekdays, day_parts = EXCLUDED.day_parts,
            time_ranges = EXCLUDED.time_ranges, updated_at = now()
        """,
        patient_id,
        list(prefs.weekdays),
        list(prefs.day_parts),
        [t.model_dump(mode="json") for t in prefs.times],
    )


# ---------------------------------------------------------------- reservations


_INSERT_RESERVATION = """
INSERT INTO slot_reservations
    (clinic_id, resource_id, during, starts_at, ends_at, workflow_id, patient_id,
     course_number, session_number)
VALUES ($1, $2, tstzrange($3, $4, '[)'), $5, $6, $7, $8, $9, $10)
"""

_LIVE = """
SELECT r.resource_id, r.starts_at, r.ends_at, s.kind, s.label
FROM slot_reservations r
JOIN scheduling_resources s USING (clinic_id, resource_id)
WHERE r.workflow_id = $1 AND r.course_number = $2 AND r.session_number = $3
  AND r.status = 'active'
ORDER BY s.kind, r.resource_id
"""

_RELEASE_SESSION = """
UPDATE slot_reservations SET status = 'released', released_at = now()
WHERE workflow_id = $1 AND course_number = $2 AND session_number = $3 AND status = 'active'
"""


def _slot_of(rows: Sequence[asyncpg.Record]) -> BookedSlot:
    return BookedSlot(
        starts_at=rows[0]["starts_at"],
        ends_at=rows[0]["ends_at"],
        resources=[
            SlotResource(resource_id=r["resource_id"], kind=r["kind"], label=r["label"])
            for r in rows
        ],
    )


def _fits(slot: BookedSlot, request: SlotRequest) -> bool:
    local = slot.starts_at.astimezone(ZoneInfo(request.timezone))
    if local.date() not in set(request.allowed_days):
        return False
    if request.exact_time is not None:
        wanted = request.exact_time.replace(tzinfo=None)
        return local.time().replace(tzinfo=None, second=0, microsecond=0) == wanted.replace(
            second=0, microsecond=0
        )
    return True


class _NoSlot(Exception):
    """Rolls back the savepoint of a reservation attempt that found no slot."""


async def reserve(pool: asyncpg.Pool, request: SlotRequest) -> SlotResult:
    """Reserve a slot for one session; idempotent per (workflow, course, session).

    * A clinic without active resources: the default time (``capacity_known`` False); the
      table is not touched.
    * A live reservation of the session on one of ``allowed_days`` (at ``exact_time`` when
      given) is returned unchanged: a retry, a replay, a repeat.
    * Otherwise, in one transaction: release the live one, take the best free candidate (the
      patient's preferences first, then the day nearest ``preferred_on``). A candidate a
      concurrent reservation took fails on the exclusion constraint inside its savepoint; the
      next one is tried. ``exact_time``: only that start counts.
    * No free slot: nothing changes (a live reservation elsewhere is kept; release it with
      :func:`release` if the session no longer needs it) and the answer carries a
      :class:`NextOption` with the reason and the first free day after the window (within
      :data:`NEXT_OPTION_DAYS`).

    Raises:
        ReservationContention: every candidate was taken concurrently, :data:`ROUNDS` times
            over (retryable).
    """
    async with pool.acquire() as conn:
        if not await has_resources(conn, request.clinic_id):
            return default_slot(request)  # one query for a clinic without resources
        cap = await capacity(conn, request.clinic_id, request.timezone)
        if not cap.known:
            return default_slot(request)
        duration = cap.rules.minutes_for(request.pore_grade, request.duration_minutes)
        key = f"slot:{request.workflow_id}:{request.course_number}:{request.session_number}"
        async with conn.transaction():
            # One reserver per session at a time (a retry racing its own first attempt), then
            # one per clinic: reservers of a clinic take turns for the few milliseconds of a
            # search and an insert, so they do not race for the same slot and wait on each
            # other's exclusion checks (a deadlock the detector breaks after a second). The
            # constraint, not this lock, is what makes double booking impossible. Always in
            # this order: no cycle.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 17))", key)
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 17))",
                f"slots-clinic:{request.clinic_id}",
            )
            live = await conn.fetch(
                _LIVE, request.workflow_id, request.course_number, request.session_number
            )
            if live:
                slot = _slot_of(live)
                if _fits(slot, request):
                    return SlotResult(slot=slot)
            if request.allowed_days:
                prefs = await get_preferences(conn, request.patient_id)
                try:
                    async with conn.transaction():  # savepoint: kept only if a slot is taken
                        if live:
                            await conn.execute(
                                _RELEASE_SESSION,
                                request.workflow_id,
                                request.course_number,
                                request.session_number,
                            )
                        taken = await _take(conn, cap, request, duration, prefs)
                        if taken is None:
                            raise _NoSlot
                        return SlotResult(slot=taken)
                except _NoSlot:
                    pass
            return SlotResult(
                slot=None, next_option=await _next_option(conn, cap, request, duration)
            )


async def _take(
    conn: Conn, cap: Capacity, request: SlotRequest, duration: int, prefs: SlotPreferences
) -> BookedSlot | None:
    lo, hi = _span(request.allowed_days, cap.timezone)
    for _ in range(ROUNDS):
        busy = await _busy(conn, request.clinic_id, lo, hi)
        candidates = search(
            cap,
            busy,
            request.allowed_days,
            duration_minutes=duration,
            preferred_on=request.preferred_on,
            preferences=prefs,
            exact_time=request.exact_time,
            not_before=request.not_before,
            limit=CANDIDATES_PER_ROUND,
        )
        if not candidates:
            return None
        for c in candidates:
            if await _try_insert(conn, cap, request, c):
                return BookedSlot(
                    starts_at=c.starts_at, ends_at=c.ends_at, resources=list(c.resources)
                )
    raise ReservationContention(
        f"every free slot for {request.workflow_id} session {request.session_number} was taken "
        "concurrently; retry"
    )


async def _try_insert(conn: Conn, cap: Capacity, request: SlotRequest, c: Candidate) -> bool:
    held_until = c.ends_at + timedelta(minutes=cap.rules.turnover_minutes)
    try:
        async with conn.transaction():  # a savepoint per candidate
            await conn.executemany(
                _INSERT_RESERVATION,
                [
                    (
                        request.clinic_id,
                        r.resource_id,
                        c.starts_at,
                        held_until,
                        c.starts_at,
                        c.ends_at,
                        request.workflow_id,
                        request.patient_id,
                        request.course_number,
                        request.session_number,
                    )
                    # One global order (by resource id): two reservers never wait on each
                    # other in a cycle.
                    for r in sorted(c.resources, key=lambda r: r.resource_id)
                ],
            )
    except asyncpg.ExclusionViolationError:
        return False  # taken by a concurrent reservation since the search: the next one
    except asyncpg.DeadlockDetectedError:
        # Two reservers inserted overlapping rows at the same instant and each waited for the
        # other's check (execIndexing.c: exclusion constraints check after inserting); the
        # deadlock detector aborted this one's savepoint. The other wins; try the next one.
        return False
    return True


async def _next_option(
    conn: Conn, cap: Capacity, request: SlotRequest, duration: int
) -> NextOption:
    days = sorted(request.allowed_days)
    after = days[-1] if days else request.preferred_on - timedelta(days=1)
    lo, hi = _span([after], cap.timezone, NEXT_OPTION_DAYS)
    busy = await _busy(conn, request.clinic_id, lo, hi)
    first = first_free_day(
        cap,
        busy,
        after,
        duration_minutes=duration,
        days=NEXT_OPTION_DAYS,
        not_before=request.not_before,
    )
    if not days:
        reason = "No day is allowed for this session now."
    elif request.exact_time is not None:
        reason = (
            f"{request.exact_time:%H:%M} is not free on "
            + (
                format_date(days[0])
                if len(days) == 1
                else f"any allowed day from {format_date(days[0])} to {format_date(days[-1])}"
            )
            + "."
        )
    else:
        span = (
            format_date(days[0])
            if len(days) == 1
            else f"the {len(days)} allowed days from {format_date(days[0])} to "
            f"{format_date(days[-1])}"
        )
        reason = (
            f"No free slot on {span}: the clinic's devices and practitioners are fully booked "
            "or the clinic is closed then."
        )
    if first is None:
        reason += f" No day is free in the {NEXT_OPTION_DAYS} days after it either."
        return NextOption(kind="waiting_list", reason=reason)
    return NextOption(kind="later_day", reason=reason, first_free_on=first)


async def release(conn: Executor, request: SlotRelease) -> int:
    """Release the session's active reservations (idempotent); returns how many rows."""
    result: str = await conn.execute(
        _RELEASE_SESSION, request.workflow_id, request.course_number, request.session_number
    )
    return int(result.split()[-1])


async def release_for_step(
    conn: Conn,
    workflow_id: str,
    sessions: Sequence[tuple[int, int]],
    *,
    closing: bool,
) -> None:
    """The releases a journey step implies, in its transaction (``record_step``):

    * each ``(course, session)`` whose appointment now stands at a status other than
      ``booked``/``done`` (cancelled, deferred, no-show, planned again) gives its slot back;
      the appointment row is read after the step's upsert, so a late step that did not
      replace a newer appointment releases nothing;
    * ``closing`` (the step closes the journey): every active reservation of the journey for
      a session not done is released.
    """
    if sessions:
        await conn.execute(
            """
            UPDATE slot_reservations r SET status = 'released', released_at = now()
            FROM appointments a
            WHERE r.workflow_id = $1 AND r.status = 'active'
              AND a.workflow_id = r.workflow_id AND a.course_number = r.course_number
              AND a.session_number = r.session_number
              AND a.status NOT IN ('booked', 'done')
              AND (r.course_number, r.session_number) IN (
                  SELECT * FROM unnest($2::int[], $3::int[]))
            """,
            workflow_id,
            [c for c, _ in sessions],
            [s for _, s in sessions],
        )
    if closing:
        await conn.execute(
            """
            UPDATE slot_reservations r SET status = 'released', released_at = now()
            WHERE r.workflow_id = $1 AND r.status = 'active'
              AND NOT EXISTS (
                  SELECT 1 FROM appointments a
                  WHERE a.workflow_id = r.workflow_id AND a.course_number = r.course_number
                    AND a.session_number = r.session_number AND a.status = 'done')
            """,
            workflow_id,
        )


# ---------------------------------------------------------------- free times


async def free_times(
    pool: asyncpg.Pool,
    clinic_id: str,
    days: Sequence[date],
    pore_grade: str,
    limit: int = 20,
    preferences: SlotPreferences | None = None,
    *,
    per_day: int = 3,
    duration_minutes: int = 45,
    preferred_on: date | None = None,
    not_before: datetime | None = None,
    ignore: SlotRelease | None = None,
) -> list[FreeTime]:
    """Free start times on ``days`` for a session of ``pore_grade``, best first (at most
    ``limit``, ``per_day`` per day). Empty for a clinic without resources on file.

    ``ignore``: a session whose own reservation counts as free (the patient moving it).
    """
    days = sorted(set(days))
    if not days:
        return []
    async with pool.acquire() as conn:
        cap = await capacity(conn, clinic_id)
        if not cap.known:
            return []
        lo, hi = _span(days, cap.timezone)
        busy = await _busy(conn, clinic_id, lo, hi, ignore)
    found = search(
        cap,
        busy,
        days,
        duration_minutes=cap.rules.minutes_for(pore_grade, duration_minutes),
        preferred_on=preferred_on,
        preferences=preferences or NO_PREFERENCES,
        not_before=not_before,
        limit=min(max(limit, 0), 100),
        per_day=per_day,
    )
    zone = ZoneInfo(cap.timezone)
    return [
        FreeTime(
            on=c.on,
            starts_at=c.starts_at.astimezone(zone),
            local_time=c.local_time,
            resources=list(c.resources),
        )
        for c in found
    ]


# ---------------------------------------------------------------- resources (API, CLI)


async def get_scheduling(conn: Executor, clinic_id: str) -> SchedulingSetup:
    """The clinic's whole scheduling set-up, as the clinic file's section would say it."""
    rules = await get_rules(conn, clinic_id)
    hours = await _hours(conn, clinic_id)
    # Not ClinicScheduling: the whole may not pass the file's cross-checks (staff deactivated
    # the only laser, say), and is shown as it is.
    return SchedulingSetup(
        **rules.model_dump(),
        hours=hours.get("", DEFAULT_HOURS),
        resources=await list_resources(conn, clinic_id, include_inactive=True),
        closures=await list_closures(conn, clinic_id),
    )


async def set_rules(conn: Executor, clinic_id: str, rules: SlotRules) -> None:
    """Store (replace) the clinic's slot rules."""
    await conn.execute(
        """
        INSERT INTO scheduling_rules AS r
            (clinic_id, slot_minutes, turnover_minutes, step_minutes, needs)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (clinic_id) DO UPDATE SET
            slot_minutes = EXCLUDED.slot_minutes, turnover_minutes = EXCLUDED.turnover_minutes,
            step_minutes = EXCLUDED.step_minutes, needs = EXCLUDED.needs, updated_at = now()
        """,
        clinic_id,
        dict(rules.slot_minutes),
        rules.turnover_minutes,
        rules.step_minutes,
        dict(rules.needs),
    )


async def _replace_hours(
    conn: Executor, clinic_id: str, resource_id: str, hours: WeekHours | None
) -> None:
    await conn.execute(
        "DELETE FROM scheduling_hours WHERE clinic_id = $1 AND resource_id = $2",
        clinic_id,
        resource_id,
    )
    if hours is not None:
        await conn.executemany(
            "INSERT INTO scheduling_hours (clinic_id, resource_id, weekday, starts, ends) "
            "VALUES ($1, $2, $3, $4, $5)",
            [(clinic_id, resource_id, d, s, e) for d, s, e in hours.rows()],
        )


async def set_default_hours(conn: Executor, clinic_id: str, hours: WeekHours) -> None:
    """Store (replace) the clinic's default working hours."""
    await _replace_hours(conn, clinic_id, "", hours)


async def upsert_resource(conn: Executor, clinic_id: str, resource: Resource) -> None:
    """Create or replace a resource; its own hours are replaced (``hours`` None: the clinic's
    default hours).

    Raises:
        SchedulingLimitError: a new resource beyond :data:`MAX_RESOURCES` for the clinic.
    """
    count = await conn.fetchval(
        "SELECT count(*) FILTER (WHERE resource_id <> $2) FROM scheduling_resources "
        "WHERE clinic_id = $1",
        clinic_id,
        resource.resource_id,
    )
    if count >= MAX_RESOURCES:
        raise SchedulingLimitError(f"a clinic has at most {MAX_RESOURCES} resources")
    await conn.execute(
        """
        INSERT INTO scheduling_resources AS r (clinic_id, resource_id, kind, label, active)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (clinic_id, resource_id) DO UPDATE SET
            kind = EXCLUDED.kind, label = EXCLUDED.label, active = EXCLUDED.active,
            updated_at = now()
        """,
        clinic_id,
        resource.resource_id,
        resource.kind,
        resource.label,
        resource.active,
    )
    await _replace_hours(conn, clinic_id, resource.resource_id, resource.hours)


async def deactivate_resource(conn: Executor, clinic_id: str, resource_id: str) -> bool:
    """Take a resource out of the search (its reservations stay); False if unknown."""
    result: str = await conn.execute(
        "UPDATE scheduling_resources SET active = false, updated_at = now() "
        "WHERE clinic_id = $1 AND resource_id = $2",
        clinic_id,
        resource_id,
    )
    return result != "UPDATE 0"


async def held_during(conn: Executor, clinic_id: str, closure: Closure) -> list[asyncpg.Record]:
    """Sessions still holding a slot on a closure's days (a closure added after they were
    booked does not move them: staff reschedule them). One row per session: patient, course,
    session, start and the resources held."""
    timezone = await _clinic_timezone(conn, clinic_id) or "UTC"
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT patient_id, course_number, session_number, min(starts_at) AS starts_at,
               array_agg(resource_id ORDER BY resource_id) AS resources
        FROM slot_reservations
        WHERE clinic_id = $1 AND status = 'active'
          AND (starts_at AT TIME ZONE $2)::date BETWEEN $3 AND $4
          AND ($5::text IS NULL OR resource_id = $5)
        GROUP BY patient_id, course_number, session_number
        ORDER BY min(starts_at), patient_id
        LIMIT 1000
        """,
        clinic_id,
        timezone,
        closure.starts_on,
        closure.ends_on,
        closure.resource_id,
    )
    return rows


async def add_closure(
    conn: Executor, clinic_id: str, closure: Closure, *, source: str = "staff"
) -> Closure:
    """Add a closure; returns it with its id.

    Raises:
        LookupError: the closure names a resource the clinic does not have.
        SchedulingLimitError: the clinic has :data:`MAX_CLOSURES` closures already.
    """
    count = await conn.fetchval(
        "SELECT count(*) FROM scheduling_closures WHERE clinic_id = $1", clinic_id
    )
    if count >= MAX_CLOSURES:
        raise SchedulingLimitError(
            f"a clinic has at most {MAX_CLOSURES} closures; remove past ones first"
        )
    if closure.resource_id is not None:
        known = await conn.fetchval(
            "SELECT 1 FROM scheduling_resources WHERE clinic_id = $1 AND resource_id = $2",
            clinic_id,
            closure.resource_id,
        )
        if not known:
            raise LookupError(f"the clinic has no resource {closure.resource_id!r}")
    new_id = await conn.fetchval(
        "INSERT INTO scheduling_closures (clinic_id, resource_id, starts_on, ends_on, reason, "
        "source) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        clinic_id,
        closure.resource_id,
        closure.starts_on,
        closure.ends_on,
        closure.reason,
        source,
    )
    return closure.model_copy(update={"id": new_id})


async def delete_closure(conn: Executor, clinic_id: str, closure_id: int) -> bool:
    """Remove a closure; False if the clinic has none with this id."""
    result: str = await conn.execute(
        "DELETE FROM scheduling_closures WHERE clinic_id = $1 AND id = $2", clinic_id, closure_id
    )
    return result != "DELETE 0"


async def sync_clinic(pool: asyncpg.Pool, clinic_id: str, section: ClinicScheduling) -> None:
    """Load the clinic file's ``[scheduling]`` section into PostgreSQL, in one transaction:
    rules and default hours replaced; the file's resources created or replaced (a resource
    no longer in the file is deactivated, never deleted: reservations refer to it); the file's
    closures replaced (closures staff added through the API or CLI are kept)."""
    async with pool.acquire() as conn, conn.transaction():
        await set_rules(conn, clinic_id, section.rules())
        await set_default_hours(conn, clinic_id, section.hours)
        for resource in section.resources:
            await upsert_resource(conn, clinic_id, resource)
        await conn.execute(
            "UPDATE scheduling_resources SET active = false, updated_at = now() "
            "WHERE clinic_id = $1 AND active AND NOT (resource_id = ANY($2::text[]))",
            clinic_id,
            [r.resource_id for r in section.resources],
        )
        await conn.execute(
            "DELETE FROM scheduling_closures WHERE clinic_id = $1 AND source = 'file'", clinic_id
        )
        for closure in section.closures:
            await add_closure(conn, clinic_id, closure, source="file")


def as_json(value: Any) -> Any:
    """A model (or list of models) as JSON-ready data (for the CLI's --json)."""
    if isinstance(value, list):
        return [as_json(v) for v in value]
    return value.model_dump(mode="json")
