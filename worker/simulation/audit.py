"""The audit: every clinical rule checked in SQL over what the product wrote.

It reads what the journeys left in PostgreSQL, not what the workflow code believes: the event
log (``journey_events``: each ``session_completed`` with its ``completed_at``), the appointments
(``booked`` and ``done`` rows, one per course and session) and the slot reservations
(``slot_reservations``, built-in scheduling). The rules are written here again, in SQL, from
the protocol's numbers stored with each clinic (``clinics.protocol``, ``clinics.summer_months``):
an independent second reading, so a bug in the planner cannot hide itself.

Each rule is a count of distinct offending sessions ``(journey, course, local date)``; a
session found both in the event log and in the appointments counts once. Every count must be 0.

* ``in_summer``: a session on a day of one of the clinic's summer months.
* ``after_cutoff``: a session outside summer but less than ``summer_buffer_days`` before the
  next summer starts (the cutoff itself, ``summer start − summer_buffer_days``, is allowed).
* ``too_close``: two consecutive sessions of one course less than ``min_interval_days`` apart
  (21 by default; the conservative intervals for Fitzpatrick IV–VI start above it).
* ``trip_buffer``: a session during a trip of the patient, or less than ``trip_buffer_days``
  before one starts (a session exactly ``trip_buffer_days`` before is allowed). A trip that
  falls *between* two sessions, each far enough from it, is not counted: the planner moves a
  whole course after a trip when it plans, but a session rebooked after a no-show or moved by a
  reschedule is replanned with the sessions still to come only (the done ones cannot move).
* ``double_booked``: two active reservations of one resource (a laser, a practitioner) whose
  time ranges overlap. The exclusion constraint forbids it; the audit counts it anyway (a
  database restored without the constraint would show it here).

Local dates are in each clinic's time zone (``clinics.timezone``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import asyncpg

__all__ = ["AUDIT_RULES", "AuditResult", "AuditRule", "run_audit"]


@dataclass(frozen=True)
class AuditRule:
    """One clinical rule: its name, what it says, and the SQL that counts its breaches."""

    name: str
    description: str
    sql: str
    needs_table: str | None = None


# The sessions as the product recorded them: booked and done appointments (with their course)
# and completions from the event log (the course is not in the event: consecutive sessions are
# those whose numbers follow each other, ordered by completion time).
_SESSIONS = """
WITH proto AS (
    SELECT c.clinic_id, c.timezone, c.summer_months,
           (c.protocol->'protocol'->>'summer_buffer_days')::int AS summer_buffer,
           (c.protocol->'protocol'->>'min_interval_days')::int AS min_interval,
           (c.protocol->'protocol'->>'trip_buffer_days')::int AS trip_buffer
    FROM clinics c
    WHERE $1::text IS NULL OR c.clinic_id = $1
),
appt AS (
    SELECT a.workflow_id, a.course_number AS course, a.session_number AS session,
           (a.starts_at AT TIME ZONE p.timezone)::date AS on_date
    FROM appointments a
    JOIN journeys j ON j.workflow_id = a.workflow_id
    JOIN proto p ON p.clinic_id = j.clinic_id
    WHERE a.status IN ('booked', 'done')
),
appt_seq AS (
    SELECT *, lag(on_date) OVER w AS prev_on, lag(session) OVER w AS prev_session
    FROM appt WINDOW w AS (PARTITION BY workflow_id, course ORDER BY session)
),
done AS (
    SELECT e.workflow_id, NULL::int AS course, (e.data->>'session')::int AS session,
           ((e.data->>'completed_at')::timestamptz AT TIME ZONE p.timezone)::date AS on_date,
           (e.data->>'completed_at')::timestamptz AS at
    FROM journey_events e
    JOIN journeys j ON j.workflow_id = e.workflow_id
    JOIN proto p ON p.clinic_id = j.clinic_id
    WHERE e.kind = 'session_completed'
),
done_seq AS (
    SELECT workflow_id, course, session, on_date,
           CASE WHEN lag(session) OVER w = session - 1 THEN lag(on_date) OVER w END AS prev_on,
           CASE WHEN lag(session) OVER w = session - 1 THEN lag(session) OVER w END
               AS prev_session
    FROM done WINDOW w AS (PARTITION BY workflow_id ORDER BY at, session)
),
sessions AS (
    SELECT s.workflow_id, s.course, s.session, s.on_date, s.prev_on, j.clinic_id, j.status
    FROM (SELECT workflow_id, course, session, on_date, prev_on FROM appt_seq
          UNION ALL
          SELECT workflow_id, course, session, on_date, prev_on FROM done_seq) s
    JOIN journeys j ON j.workflow_id = s.workflow_id
),
offending AS (
"""

_COUNT = """
)
SELECT count(*) FROM (SELECT DISTINCT workflow_id, on_date FROM offending) o
"""


def _rule(where: str) -> str:
    return _SESSIONS + where + _COUNT


AUDIT_RULES: Final[tuple[AuditRule, ...]] = (
    AuditRule(
        "in_summer",
        "sessions in summer",
        _rule(
            """
    SELECT s.workflow_id, s.on_date FROM sessions s JOIN proto p USING (clinic_id)
    WHERE extract(month FROM s.on_date)::int = ANY(p.summer_months)
"""
        ),
    ),
    AuditRule(
        "after_cutoff",
        "sessions after the season's cutoff (summer start − summer_buffer_days)",
        _rule(
            """
    SELECT s.workflow_id, s.on_date FROM sessions s JOIN proto p USING (clinic_id)
    WHERE NOT extract(month FROM s.on_date)::int = ANY(p.summer_months)
      AND EXISTS (SELECT 1 FROM generate_series(1, p.summer_buffer - 1) AS k
                  WHERE extract(month FROM s.on_date + k)::int = ANY(p.summer_months))
"""
        ),
    ),
    AuditRule(
        "too_close",
        "consecutive sessions of a course less than min_interval_days apart",
        _rule(
            """
    SELECT s.workflow_id, s.on_date FROM sessions s JOIN proto p USING (clinic_id)
    WHERE s.prev_on IS NOT NULL AND s.on_date - s.prev_on < p.min_interval
"""
        ),
    ),
    AuditRule(
        "trip_buffer",
        "sessions during a trip or less than trip_buffer_days before one starts",
        _rule(
            """
    SELECT s.workflow_id, s.on_date
    FROM sessions s JOIN proto p USING (clinic_id),
         jsonb_to_recordset(coalesce(s.status->'trips', '[]'::jsonb))
             AS t(start date, "end" date)
    WHERE s.on_date > t.start - p.trip_buffer AND s.on_date <= t."end"
"""
        ),
    ),
    AuditRule(
        "double_booked",
        "overlapping active reservations of one resource (double-booked slots)",
        """
SELECT count(*) FROM slot_reservations a
JOIN slot_reservations b
  ON a.clinic_id = b.clinic_id AND a.resource_id = b.resource_id
 AND a.reservation_id < b.reservation_id AND a.during && b.during
WHERE a.status = 'active' AND b.status = 'active' AND ($1::text IS NULL OR a.clinic_id = $1)
""",
        needs_table="slot_reservations",
    ),
)


@dataclass(frozen=True)
class AuditResult:
    """The counts of one audit (None: the rule's table does not exist in this database)."""

    counts: dict[str, int | None]

    @property
    def clean(self) -> bool:
        """True when every rule that could be checked found nothing."""
        return all(not c for c in self.counts.values())

    def rows(self) -> list[tuple[str, str, int | None]]:
        """``(rule, description, count)`` in :data:`AUDIT_RULES` order."""
        return [(r.name, r.description, self.counts.get(r.name)) for r in AUDIT_RULES]


async def run_audit(pool: asyncpg.Pool, clinic_id: str | None = None) -> AuditResult:
    """Count the breaches of every rule in :data:`AUDIT_RULES`.

    Args:
        clinic_id: Only this clinic's journeys and reservations (None: the whole database).
    """
    counts: dict[str, int | None] = {}
    async with pool.acquire() as conn:
        for rule in AUDIT_RULES:
            if rule.needs_table is not None:
                exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", rule.needs_table)
                if not exists:
                    counts[rule.name] = None
                    continue
            counts[rule.name] = int(await conn.fetchval(rule.sql, clinic_id))
    return AuditResult(counts)
