"""The season simulation's report: ``report.md`` with SVG charts (pygal, the same style as the
clinic reports, ``api/web/report_charts.py``) and ``summary.json`` with the figures.

What it shows (docs/simulation.md):

* weekly utilisation against capacity: the device-minutes reserved in ``slot_reservations``
  (session plus turnover) over the device-minutes open that week (each active device's working
  hours, less closures), as a chart and a table; the practitioners' too;
* patients waiting for the season (the ``awaiting_season`` stage, sampled while the run goes,
  and every journey that ever waited), courses split by summer (the ``course_split`` flag);
* time to completion: from arrival to the course's last session, and to the review;
* no-shows: injected by the noise against those the journeys recorded (``no_show`` events;
  more recorded than injected would mean the driver or the clock were late);
* the audit's counts (``worker.simulation.audit``), and the run's wall time and CPU.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pygal

Executor = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

__all__ = ["ReportData", "WeekRow", "collect", "monday", "write_report"]

STAGE_GROUPS: dict[str, tuple[str, ...]] = {
    "screening/deferred": ("screening", "deferred"),
    "waiting for the season": ("awaiting_season",),
    "in treatment": ("scheduled", "session_due", "recovery"),
    "aftercare/review": ("spf_window", "awaiting_review"),
    "paused": ("paused",),
    "completed": ("completed",),
    "withdrawn/excluded": ("withdrawn", "excluded"),
}


def monday(d: date) -> date:
    """The Monday of ``d``'s week."""
    return d - timedelta(days=d.weekday())


@dataclass
class WeekRow:
    """One week of the utilisation table (minutes)."""

    week: date
    device_open: int
    device_reserved: int
    practitioner_open: int
    practitioner_reserved: int
    sessions: int
    waiting: int | None = None

    @property
    def utilisation(self) -> float | None:
        return 100.0 * self.device_reserved / self.device_open if self.device_open else None

    @property
    def practitioner_utilisation(self) -> float | None:
        if not self.practitioner_open:
            return None
        return 100.0 * self.practitioner_reserved / self.practitioner_open


@dataclass
class ReportData:
    """Everything the report prints (``summary.json`` holds it too)."""

    title: str
    command: str
    clinic_id: str
    clinic_name: str
    timezone: str
    start: date
    end: date
    patients: int
    seed: int
    time_scale: float
    devices: list[str]
    practitioners: list[str]
    stages: dict[str, int]
    weeks: list[WeekRow]
    stage_weeks: list[tuple[date, dict[str, int]]]
    audit: dict[str, int | None]
    audit_descriptions: dict[str, str]
    noise: dict[str, int]
    rates: dict[str, float]
    figures: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["weeks"] = [
            {
                **asdict(w),
                "utilisation": w.utilisation,
                "practitioner_utilisation": w.practitioner_utilisation,
            }
            for w in self.weeks
        ]
        data["stage_weeks"] = [{"week": w, **counts} for w, counts in self.stage_weeks]
        loaded: dict[str, Any] = json.loads(json.dumps(data, default=str))
        return loaded


# ---------------------------------------------------------------- capacity from PostgreSQL


async def _table_exists(conn: Executor, name: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name))


async def _open_minutes(
    conn: Executor, clinic_id: str, weeks: Sequence[date]
) -> tuple[dict[date, int], dict[date, int], list[str], list[str]]:
    """Open minutes per week of the active devices and practitioners (their own hours, else
    the clinic's default hours; closures of the clinic or of the resource taken out)."""
    resources = await conn.fetch(
        "SELECT resource_id, kind FROM scheduling_resources WHERE clinic_id = $1 AND active "
        "ORDER BY resource_id",
        clinic_id,
    )
    hours_rows = await conn.fetch(
        "SELECT resource_id, weekday, starts, ends FROM scheduling_hours WHERE clinic_id = $1",
        clinic_id,
    )
    closures = await conn.fetch(
        "SELECT resource_id, starts_on, ends_on FROM scheduling_closures WHERE clinic_id = $1",
        clinic_id,
    )
    hours: dict[str, dict[int, int]] = {}
    for r in hours_rows:
        minutes = (
            datetime.combine(date.min, r["ends"]) - datetime.combine(date.min, r["starts"])
        ).seconds // 60
        day = hours.setdefault(r["resource_id"], {})
        day[r["weekday"]] = day.get(r["weekday"], 0) + minutes

    def closed(resource_id: str, d: date) -> bool:
        return any(
            c["starts_on"] <= d <= c["ends_on"]
            and (c["resource_id"] is None or c["resource_id"] == resource_id)
            for c in closures
        )

    device_open: dict[date, int] = {}
    practitioner_open: dict[date, int] = {}
    devices = [r["resource_id"] for r in resources if r["kind"] == "device"]
    practitioners = [r["resource_id"] for r in resources if r["kind"] == "practitioner"]
    for week in weeks:
        for kind, ids, out in (
            ("device", devices, device_open),
            ("practitioner", practitioners, practitioner_open),
        ):
            total = 0
            for rid in ids:
                own = hours.get(rid) or hours.get("", {})
                for i in range(7):
                    d = week + timedelta(days=i)
                    if not closed(rid, d):
                        total += own.get(d.weekday(), 0)
            out[week] = total
            del kind
    return device_open, practitioner_open, devices, practitioners


async def _reserved_minutes(
    conn: Executor, clinic_id: str, timezone: str
) -> dict[tuple[date, str], int]:
    rows = await conn.fetch(
        """
        SELECT date_trunc('week', lower(r.during) AT TIME ZONE $2)::date AS week, s.kind,
               sum(extract(epoch FROM upper(r.during) - lower(r.during)))::bigint / 60 AS minutes
        FROM slot_reservations r
        JOIN scheduling_resources s ON s.clinic_id = r.clinic_id AND s.resource_id = r.resource_id
        WHERE r.clinic_id = $1 AND r.status = 'active'
        GROUP BY 1, 2
        """,
        clinic_id,
        timezone,
    )
    return {(r["week"], r["kind"]): int(r["minutes"]) for r in rows}


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.floor(q * len(ordered)))]


async def collect(
    pool: asyncpg.Pool,
    *,
    clinic_id: str,
    start: date,
    end: date,
    snapshots: dict[date, dict[str, int]],
) -> dict[str, Any]:
    """Read the figures of a finished run from PostgreSQL (``snapshots``: stage counts per
    simulated week, sampled while it ran).

    Returns:
        The keyword arguments of :class:`ReportData` that come from the database.
    """
    async with pool.acquire() as conn:
        clinic = await conn.fetchrow(
            "SELECT name, timezone FROM clinics WHERE clinic_id = $1", clinic_id
        )
        timezone = str(clinic["timezone"]) if clinic else "UTC"
        weeks = []
        week = monday(start)
        while week < end:
            weeks.append(week)
            week += timedelta(days=7)
        stages = {
            r["stage"]: int(r["n"])
            for r in await conn.fetch(
                "SELECT stage, count(*) AS n FROM journeys WHERE clinic_id = $1 GROUP BY stage",
                clinic_id,
            )
        }
        device_open: dict[date, int] = {}
        practitioner_open: dict[date, int] = {}
        devices: list[str] = []
        practitioners: list[str] = []
        reserved: dict[tuple[date, str], int] = {}
        if await _table_exists(conn, "slot_reservations"):
            device_open, practitioner_open, devices, practitioners = await _open_minutes(
                conn, clinic_id, weeks
            )
            reserved = await _reserved_minutes(conn, clinic_id, timezone)
        sessions_by_week = {
            r["week"]: int(r["n"])
            for r in await conn.fetch(
                """
                SELECT date_trunc('week', (e.data->>'completed_at')::timestamptz
                                          AT TIME ZONE $2)::date AS week, count(*) AS n
                FROM journey_events e JOIN journeys j ON j.workflow_id = e.workflow_id
                WHERE j.clinic_id = $1 AND e.kind = 'session_completed' GROUP BY 1
                """,
                clinic_id,
                timezone,
            )
        }
        kinds = {
            r["kind"]: (int(r["n"]), int(r["journeys"]))
            for r in await conn.fetch(
                """
                SELECT e.kind, count(*) AS n, count(DISTINCT e.workflow_id) AS journeys
                FROM journey_events e JOIN journeys j ON j.workflow_id = e.workflow_id
                WHERE j.clinic_id = $1 GROUP BY e.kind
                """,
                clinic_id,
            )
        }
        flagged = {
            r["flag"]: int(r["n"])
            for r in await conn.fetch(
                "SELECT flag, count(*) AS n FROM journeys, unnest(flags) AS flag "
                "WHERE clinic_id = $1 GROUP BY flag",
                clinic_id,
            )
        }
        split = flagged.get("course_split", 0)
        durations = await conn.fetch(
            """
            SELECT j.workflow_id, j.stage, j.sessions_done, j.sessions_planned,
                   (SELECT min(occurred_at) FROM journey_events e
                    WHERE e.workflow_id = j.workflow_id AND e.kind = 'journey_started') AS arrived,
                   (SELECT max((e.data->>'completed_at')::timestamptz) FROM journey_events e
                    WHERE e.workflow_id = j.workflow_id AND e.kind = 'session_completed')
                       AS last_session,
                   (SELECT min(occurred_at) FROM journey_events e
                    WHERE e.workflow_id = j.workflow_id AND e.kind = 'completed') AS completed
            FROM journeys j WHERE j.clinic_id = $1
            """,
            clinic_id,
        )
    course_days = [
        (r["last_session"] - r["arrived"]).total_seconds() / 86400
        for r in durations
        if r["arrived"] and r["last_session"] and r["sessions_done"] >= r["sessions_planned"] > 0
    ]
    review_days = [
        (r["completed"] - r["arrived"]).total_seconds() / 86400
        for r in durations
        if r["arrived"] and r["completed"]
    ]
    week_rows = [
        WeekRow(
            week=w,
            device_open=device_open.get(w, 0),
            device_reserved=reserved.get((w, "device"), 0),
            practitioner_open=practitioner_open.get(w, 0),
            practitioner_reserved=reserved.get((w, "practitioner"), 0),
            sessions=sessions_by_week.get(w, 0),
            waiting=snapshots.get(w, {}).get("awaiting_season"),
        )
        for w in weeks
    ]
    open_weeks = [w for w in week_rows if w.device_open and w.utilisation is not None]
    in_use = [w for w in open_weeks if w.device_reserved]
    waiting_peak = max(
        ((counts.get("awaiting_season", 0), w) for w, counts in snapshots.items()),
        default=(0, start),
    )

    def count(kind: str) -> int:
        return kinds.get(kind, (0, 0))[0]

    def journeys(kind: str) -> int:
        return kinds.get(kind, (0, 0))[1]

    figures: dict[str, Any] = {
        "sessions_completed": count("session_completed"),
        "no_shows_recorded": count("no_show"),
        "journeys_with_a_no_show": journeys("no_show"),
        "reschedules_recorded": count("rescheduled"),
        "no_free_slot": count("no_free_slot"),
        "journeys_waited_for_season": journeys("awaiting_season"),
        "waiting_for_season_peak": waiting_peak[0],
        "waiting_for_season_peak_week": waiting_peak[1].isoformat(),
        "courses_split_by_summer": split,
        "flagged_prolonged_reaction": flagged.get("prolonged_reaction", 0),
        "flagged_adverse_event": flagged.get("adverse_event", 0),
        "flagged_no_show": flagged.get("no_show", 0),
        "resumed": count("resumed"),
        "withdrawn": journeys("withdrawn"),
        "adverse_events": count("adverse_event"),
        "facts_kept_as_anomaly": count("fact_kept"),
        "simulation_clock_refused": count("simulation_clock_refused"),
        "courses_finished": len(course_days),
        "days_to_last_session_median": statistics.median(course_days) if course_days else None,
        "days_to_last_session_p90": _percentile(course_days, 0.9),
        "journeys_completed": len(review_days),
        "days_to_review_median": statistics.median(review_days) if review_days else None,
        "utilisation_mean_open_weeks": (
            100.0
            * sum(w.device_reserved for w in open_weeks)
            / sum(w.device_open for w in open_weeks)
            if open_weeks
            else None
        ),
        "utilisation_mean_weeks_in_use": (
            100.0 * sum(w.device_reserved for w in in_use) / sum(w.device_open for w in in_use)
            if in_use
            else None
        ),
        "utilisation_peak": max((w.utilisation or 0.0 for w in open_weeks), default=None),
        "utilisation_peak_week": (
            max(open_weeks, key=lambda w: w.utilisation or 0.0).week.isoformat()
            if open_weeks
            else None
        ),
        "practitioner_utilisation_peak": max(
            (w.practitioner_utilisation or 0.0 for w in open_weeks), default=None
        ),
    }
    return {
        "clinic_id": clinic_id,
        "clinic_name": str(clinic["name"]) if clinic else clinic_id,
        "timezone": timezone,
        "stages": stages,
        "weeks": week_rows,
        "stage_weeks": sorted(snapshots.items()),
        "devices": devices,
        "practitioners": practitioners,
        "figures": figures,
    }


# ---------------------------------------------------------------- charts


def _style() -> Any:
    from api.web.report_charts import STYLE

    return STYLE


def _config(title: str) -> pygal.Config:
    config = pygal.Config()
    config.style = _style()
    config.width = 860
    config.height = 360
    config.js = []
    config.disable_xml_declaration = True
    config.legend_at_bottom = True
    config.truncate_legend = -1
    config.margin = 12
    config.explicit_size = True
    config.title = title
    config.x_label_rotation = 30
    config.show_minor_x_labels = False
    return config


def utilisation_svg(data: ReportData) -> str:
    """Laser hours reserved against laser hours open, per week (and the practitioners' open
    hours: with one practitioner per session, they can be the tighter limit)."""
    config = _config(f"Hours per week: lasers reserved against open ({len(data.devices)} laser(s))")
    chart = pygal.Line(config)
    labels = [w.week.strftime("%d %b %y") for w in data.weeks]
    chart.x_labels = labels
    chart.x_labels_major_every = max(1, len(labels) // 10)
    chart.dots_size = 2
    chart.add("laser hours open (capacity)", [round(w.device_open / 60, 1) for w in data.weeks])
    if any(w.practitioner_open for w in data.weeks):
        chart.add(
            "practitioner hours open",
            [round(w.practitioner_open / 60, 1) for w in data.weeks],
            stroke_style={"dasharray": "6, 4"},
        )
    chart.add(
        "laser hours reserved (sessions + turnover)",
        [round(w.device_reserved / 60, 1) for w in data.weeks],
        fill=True,
    )
    return str(chart.render(is_unicode=True))


def stages_svg(data: ReportData) -> str:
    """Journeys by stage group at the end of each simulated week."""
    config = _config("Journeys by stage, end of each simulated week")
    chart = pygal.StackedBar(config)
    labels = [w.strftime("%d %b %y") for w, _ in data.stage_weeks]
    chart.x_labels = labels
    chart.x_labels_major_every = max(1, len(labels) // 10)
    for group, stages in STAGE_GROUPS.items():
        chart.add(group, [sum(c.get(s, 0) for s in stages) for _, c in data.stage_weeks])
    return str(chart.render(is_unicode=True))


# ---------------------------------------------------------------- Markdown


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} %"


def _num(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def markdown(data: ReportData, charts: dict[str, str]) -> str:
    f = data.figures
    run = data.run
    lines = [
        f"# {data.title}",
        "",
        f"`{data.command}`",
        "",
        f"Clinic **{data.clinic_name}** (`{data.clinic_id}`, {data.timezone}); "
        f"{data.patients} patients arriving {data.start} – {data.end - timedelta(days=1)} "
        f"(simulated), seed {data.seed}, time scale {data.time_scale:,.0f} "
        f"(one simulated day every {86400 / data.time_scale:.2f} s).",
        f"Devices: {', '.join(data.devices) or 'none (no [scheduling] section)'}; "
        f"practitioners: {', '.join(data.practitioners) or '—'}.",
        "",
        "## Audit of the clinical rules",
        "",
        "Counted in SQL over the event log, the appointments and the slot reservations "
        "(docs/simulation.md); every count must be 0.",
        "",
        "| rule | what | count |",
        "|---|---|---:|",
    ]
    for name, count in data.audit.items():
        shown = "n/a (no table)" if count is None else str(count)
        lines.append(f"| `{name}` | {data.audit_descriptions.get(name, '')} | {shown} |")
    total = sum(c or 0 for c in data.audit.values())
    lines += ["", f"**Audit: {'all 0' if total == 0 else f'{total} breach(es)'}.**", ""]
    lines += [
        "## Summary",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| mean laser utilisation, weeks open | {_pct(f.get('utilisation_mean_open_weeks'))} |",
        f"| mean laser utilisation, weeks with sessions | {_pct(f.get('utilisation_mean_weeks_in_use'))} |",
        f"| peak week laser utilisation | {_pct(f.get('utilisation_peak'))} ({f.get('utilisation_peak_week') or '—'}) |",
        f"| peak week practitioner utilisation | {_pct(f.get('practitioner_utilisation_peak'))} |",
        f"| sessions completed | {f['sessions_completed']} |",
        f"| journeys that waited for the season | {f['journeys_waited_for_season']} |",
        f"| most waiting at once | {f['waiting_for_season_peak']} (week of {f['waiting_for_season_peak_week']}) |",
        f"| courses split by summer | {f['courses_split_by_summer']} |",
        f"| courses finished (all sessions done) | {f['courses_finished']} |",
        f"| days from arrival to the last session, median / p90 | {_num(f['days_to_last_session_median'])} / {_num(f['days_to_last_session_p90'])} |",
        f"| journeys completed (review recorded) | {f['journeys_completed']} |",
        f"| days from arrival to the review, median | {_num(f['days_to_review_median'])} |",
        f"| no-shows injected / recorded by the journeys | {data.noise.get('no_shows_injected', 0)} / {f['no_shows_recorded']} |",
        f"| reschedules asked / applied / refused | {data.noise.get('reschedules_asked', 0)} / {data.noise.get('reschedules_applied', 0)} / {data.noise.get('reschedules_refused', 0)} |",
        f"| sessions that found no free slot in their window (waited) | {f['no_free_slot']} |",
        f"| journeys flagged: prolonged reaction / adverse event / no-show | {f['flagged_prolonged_reaction']} / {f['flagged_adverse_event']} / {f['flagged_no_show']} |",
        f"| paused journeys resumed by the clinician | {f['resumed']} |",
        f"| withdrawn | {f['withdrawn']} |",
        f"| facts kept for staff (anomalies) | {f['facts_kept_as_anomaly']} |",
        "",
        "Journeys by stage at the end: "
        + ", ".join(f"{stage} {n}" for stage, n in sorted(data.stages.items()))
        + ".",
        "",
        "## Weekly utilisation against capacity",
        "",
    ]
    if "utilisation" in charts:
        lines += [f"![Laser hours per week]({charts['utilisation']})", ""]
    lines += [
        "Reserved = the active reservations in `slot_reservations` (the sessions' slots plus "
        "turnover; a no-show's slot is given back when the journey records it, so it is not "
        "counted); open = each active laser's working hours that week, less closures. "
        "Practitioner utilisation: the same for the practitioners (a session holds one of "
        "each).",
        "",
        "| week | laser h open | laser h reserved | laser utilisation | practitioner utilisation | sessions done | waiting for the season |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for w in data.weeks:
        lines.append(
            f"| {w.week} | {w.device_open / 60:.1f} | {w.device_reserved / 60:.1f} | "
            f"{_pct(w.utilisation)} | {_pct(w.practitioner_utilisation)} | {w.sessions} | "
            f"{_num(w.waiting)} |"
        )
    lines += ["", "## Journeys by stage", ""]
    if "stages" in charts:
        lines += [f"![Journeys by stage]({charts['stages']})", ""]
    lines += [
        "## Noise injected",
        "",
        "Rates: " + ", ".join(f"{k} {v:g}" for k, v in data.rates.items()) + ".",
        "",
        "| what the simulated outside world did | count |",
        "|---|---:|",
    ]
    lines += [f"| {k.replace('_', ' ')} | {v} |" for k, v in data.noise.items()]
    lines += ["", "## Run", "", "| figure | value |", "|---|---:|"]
    lines += [f"| {k.replace('_', ' ')} | {_num(v)} |" for k, v in run.items()]
    lines.append("")
    return "\n".join(lines)


def write_report(data: ReportData, out: Path) -> dict[str, Path]:
    """Write ``report.md``, ``utilisation.svg``, ``stages.svg`` and ``summary.json`` to
    ``out`` (created); returns their paths by name."""
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    charts: dict[str, str] = {}
    if data.weeks:
        paths["utilisation"] = out / "utilisation.svg"
        paths["utilisation"].write_text(utilisation_svg(data), encoding="utf-8")
        charts["utilisation"] = "utilisation.svg"
    if data.stage_weeks:
        paths["stages"] = out / "stages.svg"
        paths["stages"].write_text(stages_svg(data), encoding="utf-8")
        charts["stages"] = "stages.svg"
    paths["report"] = out / "report.md"
    paths["report"].write_text(markdown(data, charts), encoding="utf-8")
    paths["summary"] = out / "summary.json"
    paths["summary"].write_text(json.dumps(data.to_json(), indent=2) + "\n", encoding="utf-8")
    return paths
