"""The clinic reports' numbers (issue 19 item 4), read from PostgreSQL only.

Every figure is computed in SQL from the read model (``journeys``) and the append-only timeline
(``journey_events``), in **journey time** (``occurred_at``: a sandbox journey's simulated dates),
bucketed by week (Monday; by month beyond about six months) in the clinic's time zone (UTC
when several clinics are shown). A journey belongs to the report by its clinic
(``journeys.clinic_id``, within the reader's clinics) and, for cohort figures, by its
enrolment: its ``journey_started`` event in the date range.

Each report is a :class:`ReportTable`: the numbers a chart draws and its CSV download gives,
so the picture, the table under it and the CSV can never disagree. The queries use the
partial ``journey_events (kind, occurred_at)`` index of migration 0022 (docs/reports.md has the
figures with 100,000 journeys).

Nothing here knows HTTP or templates: ``api.web.reports`` renders these tables.
"""

from __future__ import annotations

import asyncio
import csv
import io
import statistics
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import asyncpg

from api.web.views import STAGE_LABELS, STAGE_ORDER

__all__ = [
    "EXPORTS",
    "MAX_RANGE_DAYS",
    "REPORTS",
    "TIME_TO_FIRST_BUCKETS",
    "ReportFilter",
    "ReportTable",
    "build_report",
    "build_reports",
    "csv_text",
    "export_rows",
    "satisfaction_source",
]

MAX_RANGE_DAYS: Final = 2 * 366  # two years at most
WEEKLY_MAX_DAYS: Final = 190  # longer ranges are counted by month
GRADES: Final = (1, 2, 3, 4, 5)
SEVERITIES: Final = ("mild", "moderate", "severe")
# Time from enrolment to the first completed session, in days: (label, lowest day, next bucket).
TIME_TO_FIRST_BUCKETS: Final[tuple[tuple[str, int, int | None], ...]] = (
    ("under 2 weeks", 0, 14),
    ("2–4 weeks", 14, 28),
    ("4–6 weeks", 28, 42),
    ("6–8 weeks", 42, 56),
    ("8–12 weeks", 56, 84),
    ("12–26 weeks", 84, 182),
    ("26 weeks or more", 182, None),
)
# Patient satisfaction (migration 0019_clinical_record, the patient's page before the review):
# read when the table is there, with a 1–5 score and the journey's workflow_id (or patient_id);
# the reports say "no data yet" otherwise.
SATISFACTION_TABLES: Final = ("patient_satisfaction",)
SATISFACTION_SCORES: Final = ("score",)
SATISFACTION_TIMES: Final = ("created_at",)


@dataclass(frozen=True)
class ReportFilter:
    """Which journeys and dates a report covers: ``start``..``end`` inclusive, as calendar dates
    in ``timezone`` (the clinic's; UTC for every clinic); ``clinic_id`` None for every clinic
    the reader may see: ``scope``, the staff member's clinics (issue 16), None for all."""

    clinic_id: str | None
    start: date
    end: date
    timezone: str = "UTC"
    scope: tuple[str, ...] | None = None

    def bounds(self) -> tuple[datetime, datetime]:
        """``[start 00:00, end + 1 day 00:00)`` in the filter's zone, as aware datetimes."""
        tz = ZoneInfo(self.timezone)
        return (
            datetime.combine(self.start, time(), tz),
            datetime.combine(self.end + timedelta(days=1), time(), tz),
        )

    @property
    def bucket(self) -> str:
        """``week`` for up to about six months, ``month`` beyond (a readable chart, a light
        page: two years are 24 bars, not 105)."""
        return "week" if (self.end - self.start).days < WEEKLY_MAX_DAYS else "month"

    def weeks(self) -> list[date]:
        """The Mondays of every week the range touches."""
        first = self.start - timedelta(days=self.start.weekday())
        return [first + timedelta(weeks=i) for i in range((self.end - first).days // 7 + 1)]

    def periods(self) -> list[date]:
        """The first day of every bucket (week or month) the range touches."""
        if self.bucket == "week":
            return self.weeks()
        out: list[date] = []
        month = self.start.replace(day=1)
        while month <= self.end:
            out.append(month)
            month = (month + timedelta(days=32)).replace(day=1)
        return out

    def label(self, period: date) -> str:
        return period.isoformat() if self.bucket == "week" else f"{period:%Y-%m}"


Cell = str | int | float | None
Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy | asyncpg.Pool


@dataclass
class ReportTable:
    """One report: its numbers as a table (the chart's data and its CSV)."""

    name: str
    title: str
    description: str
    columns: list[str]
    rows: list[list[Cell]]
    kind: str = "bar"  # bar | stacked | line | grouped: how the chart draws the series
    series: list[str] = field(default_factory=list)  # columns drawn (after the label column)
    summary: str = ""
    has_data: bool = True


# ------------------------------------------------------------------ SQL helpers


def _clinic_sql(flt: ReportFilter, args: list[Any], alias: str = "j") -> str | None:
    """``<alias>.clinic_id = $n`` for one clinic, ``= ANY($n)`` for the reader's clinics, None
    for every clinic (no OR-NULL: each shape gets a plain plan)."""
    if flt.clinic_id is not None:
        args.append(flt.clinic_id)
        return f"{alias}.clinic_id = ${len(args)}"
    if flt.scope is not None:
        args.append(list(flt.scope))
        return f"{alias}.clinic_id = ANY(${len(args)}::text[])"
    return None


def _scope(flt: ReportFilter, args: list[Any], alias: str = "j") -> str:
    """``AND <clinic condition>``, or nothing for every clinic."""
    condition = _clinic_sql(flt, args, alias)
    return "" if condition is None else f" AND {condition}"


def _events(
    flt: ReportFilter, args: list[Any], kinds: Sequence[str], *, open_end: bool = False
) -> str:
    """``journey_events e [JOIN journeys j …] WHERE e.kind … AND <in range>``, the range's
    bounds appended to ``args``; ``open_end``: from the start on (the end still appended).

    The kinds are literals from this module (never input), so the planner can use the partial
    index of migration 0022; the journeys join is there only when clinics are chosen."""
    assert all(k.isidentifier() for k in kinds)
    args.extend(flt.bounds())
    lo_n, hi_n = len(args) - 1, len(args)
    kind = (
        f"e.kind = '{kinds[0]}'"
        if len(kinds) == 1
        else "e.kind IN (" + ", ".join(f"'{k}'" for k in kinds) + ")"
    )
    until = "" if open_end else f" AND e.occurred_at < ${hi_n}"
    join = ""
    condition = _clinic_sql(flt, args)
    if condition is not None:
        join = f" JOIN journeys j ON j.workflow_id = e.workflow_id AND {condition}"
    return f"journey_events e{join} WHERE {kind} AND e.occurred_at >= ${lo_n}{until}"


def _period_sql(flt: ReportFilter, column: str) -> str:
    """The first day of ``column``'s week or month in the zone ``$1``."""
    assert flt.bucket in ("week", "month")
    return f"date_trunc('{flt.bucket}', {column} AT TIME ZONE $1)::date"


async def _weekly(
    conn: Conn, flt: ReportFilter, kinds: Sequence[str], by: str
) -> dict[tuple[date, str], int]:
    """Events of ``kinds`` in the range, counted by (week, ``by`` expression)."""
    args: list[Any] = [flt.timezone]
    rows = await conn.fetch(
        f"""
        SELECT {_period_sql(flt, "e.occurred_at")} AS week, {by} AS key, count(*) AS n
        FROM {_events(flt, args, kinds)}
        GROUP BY 1, 2
        """,
        *args,
    )
    return {(r["week"], str(r["key"])): int(r["n"]) for r in rows}


# ------------------------------------------------------------------ the reports


async def enrolment_reports(conn: Conn, flt: ReportFilter) -> tuple[ReportTable, ReportTable]:
    """Journeys by enrolment week and stage, and the summer figures, from one pass over the
    journeys enrolled in the range (they share the join with ``journeys``)."""
    lo, hi = flt.bounds()
    args: list[Any] = [flt.timezone, lo, hi]
    scope = _scope(flt, args)
    rows = await conn.fetch(
        f"""
        SELECT {_period_sql(flt, "e.occurred_at")} AS week, j.stage, count(*) AS n,
               count(*) FILTER (WHERE 'course_split' = ANY (j.flags)) AS split,
               count(*) FILTER (WHERE e.workflow_id IN (
                   SELECT w.workflow_id FROM journey_events w
                   WHERE w.kind = 'awaiting_season' AND w.occurred_at >= $2)) AS waited
        FROM journey_events e JOIN journeys j ON j.workflow_id = e.workflow_id
        WHERE e.kind = 'journey_started' AND e.occurred_at >= $2 AND e.occurred_at < $3{scope}
        GROUP BY 1, 2
        """,
        *args,
    )
    return _stages_table(flt, rows), _summer_table(rows)


async def journeys_by_stage(conn: Conn, flt: ReportFilter) -> ReportTable:
    return (await enrolment_reports(conn, flt))[0]


async def summer(conn: Conn, flt: ReportFilter) -> ReportTable:
    return (await enrolment_reports(conn, flt))[1]


def _stages_table(flt: ReportFilter, rows: Sequence[asyncpg.Record]) -> ReportTable:
    counts = {(r["week"], r["stage"]): int(r["n"]) for r in rows}
    present: set[str] = {str(stage) for _, stage in counts}
    stages: list[str] = [s for s in STAGE_ORDER if s in present] + sorted(
        present - set(STAGE_ORDER)
    )
    table_rows: list[list[Cell]] = []
    for week in flt.periods():
        values = [counts.get((week, s), 0) for s in stages]
        table_rows.append([flt.label(week), *values, sum(values)])
    total = sum(counts.values())
    return ReportTable(
        name="journeys-by-stage",
        title=f"Journeys by enrolment {flt.bucket} and stage today",
        description=(
            f"Journeys enrolled each {flt.bucket} (their journey_started event), stacked by the "
            "stage each is in now."
        ),
        columns=[flt.bucket, *(STAGE_LABELS.get(s, s) for s in stages), "enrolled"],
        rows=table_rows,
        kind="stacked",
        series=[STAGE_LABELS.get(s, s) for s in stages],
        summary=f"{total} journeys enrolled",
        has_data=total > 0,
    )


async def sessions_and_no_shows(conn: Conn, flt: ReportFilter) -> tuple[ReportTable, ReportTable]:
    counts = await _weekly(conn, flt, ("session_completed", "no_show"), "e.kind")
    sessions_rows: list[list[Cell]] = []
    rate_rows: list[list[Cell]] = []
    done_total = no_show_total = 0
    for week in flt.periods():
        done = counts.get((week, "session_completed"), 0)
        missed = counts.get((week, "no_show"), 0)
        done_total += done
        no_show_total += missed
        sessions_rows.append([flt.label(week), done, missed])
        rate_rows.append([flt.label(week), done, missed, _percent(missed, done + missed)])
    overall = _percent(no_show_total, done_total + no_show_total)
    sessions = ReportTable(
        name="sessions-per-week",
        title=f"Sessions per {flt.bucket}",
        description=f"Sessions reported completed (session_completed) and no-shows each {flt.bucket}.",
        columns=[flt.bucket, "completed", "no-shows"],
        rows=sessions_rows,
        kind="stacked",
        series=["completed", "no-shows"],
        summary=f"{done_total} sessions completed, {no_show_total} no-shows",
        has_data=done_total + no_show_total > 0,
    )
    rate = ReportTable(
        name="no-show-rate",
        title="No-show rate",
        description=(
            "No-shows as a share of the sessions that were due (completed + no-shows), per "
            f"{flt.bucket}, in percent."
        ),
        columns=[flt.bucket, "completed", "no-shows", "no-show rate %"],
        rows=rate_rows,
        kind="line",
        series=["no-show rate %"],
        summary="no sessions due"
        if overall is None
        else f"{overall:.1f} % over the period ({no_show_total} of {done_total + no_show_total})",
        has_data=overall is not None,
    )
    return sessions, rate


def _percent(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(100 * part / whole, 1)


async def time_to_first_session(conn: Conn, flt: ReportFilter) -> ReportTable:
    # One pass over both kinds from the range's start on (a journey enrolled in the range has
    # its first session after that), grouped by journey: ~40 % faster than a semi-join.
    args: list[Any] = []
    events = _events(flt, args, ("journey_started", "session_completed"), open_end=True)
    lo, hi = "$1", "$2"  # _events appends the bounds first
    assert args[:2] == list(flt.bounds())
    rows = await conn.fetch(
        f"""
        SELECT floor(extract(epoch FROM first - enrolled) / 86400)::int AS days, count(*) AS n
        FROM (
            SELECT min(e.occurred_at) FILTER (WHERE e.kind = 'journey_started') AS enrolled,
                   min(e.occurred_at) FILTER (WHERE e.kind = 'session_completed') AS first
            FROM {events}
            GROUP BY e.workflow_id
        ) journeys
        WHERE enrolled >= {lo} AND enrolled < {hi}
        GROUP BY 1
        """,
        *args,
    )
    by_day = {r["days"]: int(r["n"]) for r in rows}
    waiting = by_day.pop(None, 0)
    table_rows: list[list[Cell]] = []
    for label, low, high in TIME_TO_FIRST_BUCKETS:
        n = sum(v for d, v in by_day.items() if d >= low and (high is None or d < high))
        table_rows.append([label, n])
    with_session = sum(by_day.values())
    median = _median_days(by_day)
    return ReportTable(
        name="time-to-first-session",
        title="Time from enrolment to the first session",
        description=(
            "Journeys enrolled in the period, by the time from enrolment (journey_started) to "
            "their first completed session; those without a session yet are counted apart."
        ),
        columns=["time to first session", "journeys"],
        rows=[*table_rows, ["no session yet", waiting]],
        kind="bar",
        series=["journeys"],
        summary=(
            f"median {median:g} days over {with_session} journeys; {waiting} without a session yet"
            if median is not None
            else f"no first session yet ({waiting} journeys enrolled)"
        ),
        has_data=with_session + waiting > 0,
    )


def _median_days(by_day: dict[int, int]) -> float | None:
    values = [d for d, n in sorted(by_day.items()) for _ in range(n)]
    return None if not values else float(statistics.median(values))


def _summer_table(rows: Sequence[asyncpg.Record]) -> ReportTable:
    enrolled = sum(int(r["n"]) for r in rows)
    table_rows: list[list[Cell]] = [
        [
            "waiting for the season now",
            sum(int(r["n"]) for r in rows if r["stage"] == "awaiting_season"),
        ],
        ["waited for a season at some point", sum(int(r["waited"]) for r in rows)],
        ["course split by the summer", sum(int(r["split"]) for r in rows)],
    ]
    return ReportTable(
        name="summer",
        title="Courses waiting for or split by the summer",
        description=(
            "Of the journeys enrolled in the period: waiting for the season now (stage "
            "awaiting_season), ever planned to wait (an awaiting_season event), and courses "
            "split by the summer (flag course_split)."
        ),
        columns=["courses", "journeys"],
        rows=table_rows,
        kind="bar",
        series=["journeys"],
        summary=f"of {enrolled} journeys enrolled",
        has_data=enrolled > 0,
    )


async def spf_attestations(conn: Conn, flt: ReportFilter) -> ReportTable:
    counts = await _weekly(conn, flt, ("spf_attested",), "''")
    table_rows: list[list[Cell]] = [[flt.label(w), counts.get((w, ""), 0)] for w in flt.periods()]
    total = sum(counts.values())
    return ReportTable(
        name="spf-attestations",
        title="SPF-50 attestations received",
        description=f"Sun-protection attestations received each {flt.bucket} (spf_attested).",
        columns=[flt.bucket, "attestations"],
        rows=table_rows,
        kind="bar",
        series=["attestations"],
        summary=f"{total} attestations",
        has_data=total > 0,
    )


async def adverse_events(conn: Conn, flt: ReportFilter) -> ReportTable:
    counts = await _weekly(conn, flt, ("adverse_event",), "coalesce(e.data->>'severity', '')")
    severities = list(SEVERITIES) + sorted({k for _, k in counts} - set(SEVERITIES))
    table_rows: list[list[Cell]] = []
    for week in flt.periods():
        values = [counts.get((week, s), 0) for s in severities]
        table_rows.append([flt.label(week), *values, sum(values)])
    by_severity = Counter[str]()
    for (_, s), n in counts.items():
        by_severity[s] += n
    total = sum(by_severity.values())
    return ReportTable(
        name="adverse-events",
        title="Adverse events",
        description=f"Adverse events reported each {flt.bucket} (adverse_event), by severity.",
        columns=[flt.bucket, *(s or "unknown" for s in severities), "total"],
        rows=table_rows,
        kind="stacked",
        series=[s or "unknown" for s in severities],
        summary=f"{total} adverse events"
        + (
            " ("
            + ", ".join(f"{by_severity[s]} {s or 'unknown'}" for s in severities if by_severity[s])
            + ")"
            if total
            else ""
        ),
        has_data=total > 0,
    )


def _grade(value: Any) -> int | None:
    try:
        grade = int(value)
    except (TypeError, ValueError):
        return None
    return grade if grade in GRADES else None


async def outcomes(conn: Conn, flt: ReportFilter) -> ReportTable:
    args: list[Any] = []
    rows = await conn.fetch(
        f"""
        SELECT e.data->>'global_improvement' AS gi, e.data->>'pore_visibility' AS pv,
               count(*) AS n
        FROM {_events(flt, args, ("completed", "further_course"))}
        GROUP BY 1, 2
        """,
        *args,
    )
    improvement = Counter[int]()
    visibility = Counter[int]()
    reviews = 0
    for r in rows:
        n = int(r["n"])
        reviews += n
        if (g := _grade(r["gi"])) is not None:
            improvement[g] += n
        if (g := _grade(r["pv"])) is not None:
            visibility[g] += n
    graded = sum(improvement.values()) + sum(visibility.values())
    return ReportTable(
        name="outcomes",
        title="Outcomes at the review",
        description=(
            "The clinician's grades at the review (completed or further course): global "
            "aesthetic improvement (1 = worse … 5 = very much improved) and pore visibility "
            "(1 = no visible pores … 5 = very visible)."
        ),
        columns=["grade", "global improvement", "pore visibility"],
        rows=[[g, improvement[g], visibility[g]] for g in GRADES],
        kind="grouped",
        series=["global improvement", "pore visibility"],
        summary=f"{reviews} reviews, {sum(improvement.values())} with an improvement grade, "
        f"{sum(visibility.values())} with a pore-visibility grade",
        has_data=graded > 0,
    )


@dataclass(frozen=True)
class SatisfactionSource:
    table: str
    score: str
    key: str  # patient_id or workflow_id
    at: str | None


async def satisfaction_source(conn: Conn) -> SatisfactionSource | None:
    """The patient-satisfaction table if another part of the product has added it."""
    rows = await conn.fetch(
        """
        SELECT table_name, column_name FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = ANY($1::text[])
        """,
        list(SATISFACTION_TABLES),
    )
    columns: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        columns[r["table_name"]].add(r["column_name"])
    for table in SATISFACTION_TABLES:
        have = columns.get(table, set())
        score = next((c for c in SATISFACTION_SCORES if c in have), None)
        key = next((c for c in ("workflow_id", "patient_id") if c in have), None)
        if score is not None and key is not None:
            at = next((c for c in SATISFACTION_TIMES if c in have), None)
            return SatisfactionSource(table, score, key, at)
    return None


def _satisfaction_join(source: SatisfactionSource, alias: str = "s") -> str:
    """``JOIN <table> s ON`` the journey (identifiers from the fixed lists above only)."""
    return f'JOIN "{source.table}" {alias} ON {alias}."{source.key}" = j.{source.key}'


async def satisfaction(conn: Conn, flt: ReportFilter) -> ReportTable:
    source = await satisfaction_source(conn)
    base = ReportTable(
        name="satisfaction",
        title="Patient satisfaction",
        description="Patients' satisfaction (1 = very unsatisfied … 5 = very satisfied), asked "
        "on their page before the review.",
        columns=["score", "answers"],
        rows=[[g, 0] for g in GRADES],
        kind="bar",
        series=["answers"],
        summary="no data yet",
        has_data=False,
    )
    if source is None:
        return base
    args: list[Any] = []
    when = ""
    if source.at is not None:
        args.extend(flt.bounds())
        when = f' AND s."{source.at}" >= $1 AND s."{source.at}" < $2'
    scope = _scope(flt, args)
    rows = await conn.fetch(
        f"""
        SELECT s."{source.score}"::text AS score, count(*) AS n
        FROM journeys j {_satisfaction_join(source)}
        WHERE true{when}{scope}
        GROUP BY 1
        """,
        *args,
    )
    counts = Counter[int]()
    for r in rows:
        if (g := _grade(r["score"])) is not None:
            counts[g] += int(r["n"])
    total = sum(counts.values())
    base.rows = [[g, counts[g]] for g in GRADES]
    base.summary = f"{total} answers" if total else "no data yet"
    base.has_data = total > 0
    return base


# ------------------------------------------------------------------ all of them

# asyncpg prepares every statement; after five runs PostgreSQL may switch a prepared statement
# to a generic plan, which cannot see the clinic or the range: measured with 100,000 journeys,
# time-to-first-session went from 0.3 s to 5 s. The reports' statements are planned each time.
CUSTOM_PLANS: Final = "SET LOCAL plan_cache_mode = force_custom_plan"

REPORTS: Final = (
    "journeys-by-stage",
    "sessions-per-week",
    "no-show-rate",
    "time-to-first-session",
    "summer",
    "spf-attestations",
    "adverse-events",
    "outcomes",
    "satisfaction",
)


async def build_reports(pool: asyncpg.Pool, flt: ReportFilter) -> list[ReportTable]:
    """Every report of the page, in :data:`REPORTS` order.

    The queries run in three groups on three pooled connections at once (PostgreSQL uses
    more than one core; a page holds at most three connections of the pool), each group in a
    read-only transaction.
    """

    async def group(*steps: Callable[[Conn], Awaitable[list[ReportTable]]]) -> list[ReportTable]:
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            await conn.execute(CUSTOM_PLANS)
            return [t for step in steps for t in await step(conn)]

    def one(
        report: Callable[[Conn, ReportFilter], Awaitable[ReportTable]],
    ) -> Callable[[Conn], Awaitable[list[ReportTable]]]:
        async def step(conn: Conn) -> list[ReportTable]:
            return [await report(conn, flt)]

        return step

    async def sessions(conn: Conn) -> list[ReportTable]:
        return list(await sessions_and_no_shows(conn, flt))

    async def enrolment(conn: Conn) -> list[ReportTable]:
        return list(await enrolment_reports(conn, flt))

    first, cohort, events = await asyncio.gather(
        group(one(time_to_first_session)),
        group(enrolment, one(outcomes), one(satisfaction)),
        group(sessions, one(spf_attestations), one(adverse_events)),
    )
    tables = {t.name: t for t in (*first, *cohort, *events)}
    return [tables[name] for name in REPORTS]


async def build_report(pool: asyncpg.Pool, flt: ReportFilter, name: str) -> ReportTable | None:
    """One report by name (a chart's CSV download), or None for an unknown name."""
    if name not in REPORTS:
        return None
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute(CUSTOM_PLANS)
        if name == "journeys-by-stage":
            return await journeys_by_stage(conn, flt)
        if name in ("sessions-per-week", "no-show-rate"):
            sessions, rate = await sessions_and_no_shows(conn, flt)
            return sessions if name == "sessions-per-week" else rate
        single = {
            "time-to-first-session": time_to_first_session,
            "summer": summer,
            "spf-attestations": spf_attestations,
            "adverse-events": adverse_events,
            "outcomes": outcomes,
            "satisfaction": satisfaction,
        }
        return await single[name](conn, flt)


# ------------------------------------------------------------------ CSV


def _safe_cell(value: Cell) -> Cell:
    """A spreadsheet never runs a cell as a formula (=, +, -, @ at the start of text)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_text(columns: Sequence[str] | None, rows: Iterable[Sequence[Cell]]) -> str:
    """CSV lines (RFC 4180, CRLF line ends), with a header row unless ``columns`` is None."""
    out = io.StringIO()
    writer = csv.writer(out)
    if columns is not None:
        writer.writerow(columns)
    for row in rows:
        writer.writerow([_safe_cell(v) for v in row])
    return out.getvalue()


# ------------------------------------------------------------------ exports (spreadsheets)

EXPORTS: Final[dict[str, str]] = {
    "journeys": "Journeys enrolled in the period: stage, course, sessions, flags, dates",
    "sessions": "Sessions (appointments) starting in the period: course, number, time, state",
    "outcomes": "Reviews in the period: outcome, grades, further sessions, satisfaction",
}

_LOCAL = "to_char({col} AT TIME ZONE coalesce(c.timezone, 'UTC'), 'YYYY-MM-DD HH24:MI')"


def _export_sql(
    name: str, flt: ReportFilter, source: SatisfactionSource | None
) -> tuple[str, list[Any], list[str]]:
    lo, hi = flt.bounds()
    args: list[Any] = [lo, hi]
    scope = _scope(flt, args)
    if name == "journeys":
        columns = [
            "patient_id", "clinic_id", "enrolled_at", "stage", "course_number",
            "sessions_planned", "sessions_done", "first_session_at", "flags",
            "protocol_version", "next_action", "next_action_at",
        ]  # fmt: skip
        sql = f"""
            SELECT j.patient_id, j.clinic_id, {_LOCAL.format(col="e.occurred_at")},
                   j.stage, j.course_number, j.sessions_planned, j.sessions_done,
                   (SELECT {_LOCAL.format(col="min(f.occurred_at)")}
                      FROM journey_events f
                      WHERE f.workflow_id = j.workflow_id AND f.kind = 'session_completed'),
                   array_to_string(j.flags, ';'), j.protocol_version, j.next_action,
                   {_LOCAL.format(col="j.next_action_at")}
            FROM journey_events e JOIN journeys j ON j.workflow_id = e.workflow_id
            LEFT JOIN clinics c ON c.clinic_id = j.clinic_id
            WHERE e.kind = 'journey_started' AND e.occurred_at >= $1 AND e.occurred_at < $2{scope}
            ORDER BY e.occurred_at, j.patient_id
        """
        return sql, args, columns
    if name == "sessions":
        columns = [
            "patient_id", "clinic_id", "course_number", "session_number", "starts_at",
            "arrive_by", "duration_minutes", "status",
        ]  # fmt: skip
        sql = f"""
            SELECT j.patient_id, j.clinic_id, a.course_number, a.session_number,
                   {_LOCAL.format(col="a.starts_at")}, {_LOCAL.format(col="a.arrive_by")},
                   a.duration_minutes, a.status
            FROM appointments a JOIN journeys j ON j.workflow_id = a.workflow_id
            LEFT JOIN clinics c ON c.clinic_id = j.clinic_id
            WHERE a.starts_at >= $1 AND a.starts_at < $2{scope}
            ORDER BY a.starts_at, j.patient_id, a.course_number, a.session_number
        """
        return sql, args, columns
    if name == "outcomes":
        columns = [
            "patient_id", "clinic_id", "reviewed_at", "outcome", "global_improvement",
            "pore_visibility", "further_sessions", "satisfaction",
        ]  # fmt: skip
        if source is not None:
            order = f's."{source.at}" DESC' if source.at else f's."{source.score}"'
            satisfied = (
                f'(SELECT s."{source.score}"::text FROM "{source.table}" s '
                f'WHERE s."{source.key}" = j.{source.key} ORDER BY {order} LIMIT 1)'
            )
        else:
            satisfied = "NULL::text"
        sql = f"""
            SELECT j.patient_id, j.clinic_id, {_LOCAL.format(col="e.occurred_at")},
                   e.kind, e.data->>'global_improvement', e.data->>'pore_visibility',
                   e.data->>'sessions', {satisfied}
            FROM journey_events e JOIN journeys j ON j.workflow_id = e.workflow_id
            LEFT JOIN clinics c ON c.clinic_id = j.clinic_id
            WHERE e.kind IN ('completed', 'further_course')
              AND e.occurred_at >= $1 AND e.occurred_at < $2{scope}
            ORDER BY e.occurred_at, j.patient_id
        """
        return sql, args, columns
    raise KeyError(name)


async def export_rows(
    pool: asyncpg.Pool, flt: ReportFilter, name: str, batch: int = 2000
) -> AsyncIterator[str]:
    """The export ``name`` as CSV text chunks (header first), streamed from a cursor so a
    100,000-row export never sits in memory whole.

    Raises:
        KeyError: no export of that name (the route answers 404 before calling this).
    """
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(CUSTOM_PLANS)
        source = await satisfaction_source(conn) if name == "outcomes" else None
        sql, args, columns = _export_sql(name, flt, source)
        yield csv_text(columns, [])
        chunk: list[list[Cell]] = []
        async for record in conn.cursor(sql, *args, prefetch=batch):
            chunk.append(list(record.values()))
            if len(chunk) >= batch:
                yield csv_text(None, chunk)
                chunk = []
        if chunk:
            yield csv_text(None, chunk)


def today_in(tz: str) -> date:
    return datetime.now(UTC).astimezone(ZoneInfo(tz)).date()
