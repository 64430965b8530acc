"""Rows of the read model and the event log as the journey's ``record_step`` writes them,
written here with plain SQL: the integrations (FHIR, calendar, webhooks) are built against the
table schema (migration 0001), not against the workflow's step records, which are changing.

``JourneyRows`` keeps a step counter per journey like the workflow does: every ``step`` writes
its events (``<step>.<index>`` keys) and appointments (``version = step``) and the journey row in
one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import asyncpg

from activities import repository
from workflows.ids import workflow_id


@dataclass
class Session:
    number: int
    starts_at: datetime
    state: str = "booked"
    arrive_by: datetime | None = None
    completed_at: datetime | None = None
    source: str | None = None


@dataclass
class JourneyRows:
    """One journey's rows, advanced step by step."""

    pool: asyncpg.Pool
    patient_id: str
    clinic_id: str
    stage: str = "scheduled"
    course: int = 1
    duration_minutes: int = 45
    flags: list[str] = field(default_factory=list)
    spf_until: date | None = None
    review_on: date | None = None
    sessions: dict[int, Session] = field(default_factory=dict)
    screening_outcome: str | None = None
    step_number: int = 0

    @property
    def workflow_id(self) -> str:
        return workflow_id(self.patient_id)

    def _status(self) -> dict[str, Any]:
        return {
            "patient_id": self.patient_id,
            "clinic_id": self.clinic_id,
            "stage": self.stage,
            "course_number": self.course,
            "flags": list(self.flags),
            "spf_until": self.spf_until.isoformat() if self.spf_until else None,
            "review_on": self.review_on.isoformat() if self.review_on else None,
            "screening_outcome": self.screening_outcome,
            "sessions": [
                {
                    "number": s.number,
                    "planned_on": s.starts_at.date().isoformat(),
                    "starts_at": s.starts_at.isoformat(),
                    "arrive_by": s.arrive_by.isoformat() if s.arrive_by else None,
                    "state": s.state,
                    "completed_at": s.completed_at.isoformat() if s.completed_at else None,
                    "source": s.source,
                }
                for s in sorted(self.sessions.values(), key=lambda s: s.number)
            ],
        }

    async def step(
        self,
        *events: tuple[str, str, dict[str, Any]],
        sessions: list[int] | None = None,
        at: datetime,
        actor: str = "system",
    ) -> int:
        """Write one step: ``events`` as ``(kind, summary, data)``, the appointments of
        ``sessions`` at their current state, and the journey row. Returns the step number."""
        self.step_number += 1
        step = self.step_number
        async with self.pool.acquire() as conn, conn.transaction():
            for i, (kind, summary, data) in enumerate(events):
                await conn.execute(
                    """
                    INSERT INTO journey_events
                        (workflow_id, event_key, step, kind, actor, occurred_at, summary, data)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                    """,
                    self.workflow_id,
                    f"{step}.{i}",
                    step,
                    kind,
                    actor,
                    at,
                    summary,
                    data,
                )
            for number in sessions or []:
                s = self.sessions[number]
                await conn.execute(
                    """
                    INSERT INTO appointments AS a
                        (workflow_id, course_number, session_number, starts_at, arrive_by,
                         duration_minutes, status, version)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                    ON CONFLICT (workflow_id, course_number, session_number) DO UPDATE SET
                        starts_at = EXCLUDED.starts_at, arrive_by = EXCLUDED.arrive_by,
                        status = EXCLUDED.status, version = EXCLUDED.version
                    WHERE a.version < EXCLUDED.version
                    """,
                    self.workflow_id,
                    self.course,
                    s.number,
                    s.starts_at,
                    s.arrive_by,
                    self.duration_minutes,
                    s.state,
                    step,
                )
            done = sum(1 for s in self.sessions.values() if s.state == "done")
            await conn.execute(
                """
                INSERT INTO journeys AS j
                    (workflow_id, patient_id, clinic_id, version, stage, course_number,
                     sessions_planned, sessions_done, spf_until, review_on, flags,
                     protocol_version, status)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'v-test', $12)
                ON CONFLICT (workflow_id) DO UPDATE SET
                    version = EXCLUDED.version, stage = EXCLUDED.stage,
                    sessions_planned = EXCLUDED.sessions_planned,
                    sessions_done = EXCLUDED.sessions_done, spf_until = EXCLUDED.spf_until,
                    review_on = EXCLUDED.review_on, flags = EXCLUDED.flags,
                    status = EXCLUDED.status, updated_at = now()
                WHERE j.version < EXCLUDED.version
                """,
                self.workflow_id,
                self.patient_id,
                self.clinic_id,
                step,
                self.stage,
                self.course,
                len(self.sessions),
                done,
                self.spf_until,
                self.review_on,
                self.flags,
                self._status(),
            )
        return step


async def new_patient(
    pool: asyncpg.Pool, name: str = "Jo Example", clinic_id: str = "default"
) -> str:
    """A patient row (e-mail channel) in ``clinic_id``; returns the patient id."""
    row = await repository.create_patient(
        pool,
        repository.PatientCreate(
            full_name=name, email=f"{name.split()[0].lower()}@example.com", clinic_id=clinic_id
        ),
    )
    return row.patient_id
