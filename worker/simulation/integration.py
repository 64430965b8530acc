"""The booking system, the patients and the clinician of a season simulation.

:class:`SimIntegration` is :class:`worker.demo.DemoIntegration` (which reports completions,
check-ins, re-screens and reviews from the read model, through the journey's own updates) with
the noise of :mod:`worker.simulation.noise` on top, acting on every due journey at once (the
demo awaits each update in turn; hundreds of journeys due on one simulated day would then get
their facts late, and the lateness would show up as no-shows the product did not cause):

* a no-show: the completion is not reported (the journey notices at the end of the day plus
  its grace, then rebooks);
* a reschedule: once a session is booked (and still two days or more away) the patient asks for a later day;
* a prolonged reaction: the check-in says so (the journey pauses for a clinician);
* an adverse event: a clinician reports one the day after a session (the journey pauses);
* a paused journey is resumed by the clinician ``resume_after_days`` simulated days later;
* a withdrawal: before the first session, or after one, as the noise decided.

Everything it decides comes from the row it reads (stage, sessions, the journey's clock) and
the seeded noise; every fact's idempotency key is derived from the journey and the step, and
each action is sent once per run.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from temporalio.client import WorkflowUpdateFailedError

from worker.demo import DemoIntegration, _parse_dt
from worker.simulation.noise import SeededNoise
from workflows.journey import PatientJourney
from workflows.messages import (
    AdverseEventSignal,
    FactResult,
    RescheduleRequest,
    ResumeRequest,
    WithdrawRequest,
)

__all__ = ["SimCounters", "SimIntegration"]

logger = logging.getLogger(__name__)

# The stages the integration looks at (closed ones and those waiting on the clock need nothing).
ACTIVE_STAGES = (
    "screening",
    "awaiting_season",
    "scheduled",
    "session_due",
    "recovery",
    "spf_window",
    "awaiting_review",
    "paused",
)


@dataclass
class SimCounters:
    """What the simulated outside world did (the report's "noise injected" table)."""

    completions: int = 0
    checkins: int = 0
    no_shows_injected: int = 0
    reschedules_asked: int = 0
    reschedules_applied: int = 0
    reschedules_refused: int = 0
    prolonged_reactions: int = 0
    adverse_events: int = 0
    resumes: int = 0
    withdrawals: int = 0
    rescreens: int = 0
    reviews: int = 0
    kept_as_anomaly: int = 0
    errors: int = 0

    def as_rows(self) -> list[tuple[str, int]]:
        return [(name.replace("_", " "), value) for name, value in vars(self).items()]


@dataclass
class SimIntegration(DemoIntegration):
    """See the module docstring. ``patients`` maps a workflow id to its patient's index (the
    runner fills it as it enrols)."""

    noise: SeededNoise = field(default_factory=lambda: SeededNoise(0))
    email_domain: str = "simulation.journey.invalid"
    concurrency: int = 500
    patients: dict[str, int] = field(default_factory=dict)
    counters: SimCounters = field(default_factory=SimCounters)
    lines: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=200))
    _paused_since: dict[str, datetime] = field(default_factory=dict)
    _attempts: dict[tuple[str, int, int], int] = field(default_factory=dict)
    _busy: set[str] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _slots: asyncio.Semaphore | None = None

    # ------------------------------------------------------------------ the round

    async def run_once(self) -> int:
        """One round: read the open simulated journeys, start what is due on each (at most one
        action in flight per journey, ``concurrency`` in all: a large bound, since an update to
        a journey that is itself waiting, for a database connection say, must not hold up the
        facts of the others, as a real booking system's webhooks would not)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        rows = await self.pool.fetch(
            """
            SELECT j.workflow_id, j.stage, j.course_number, j.version, j.sessions_done,
                   j.sessions_planned, j.updated_at, p.full_name, now() AS db_now,
                   jsonb_build_object(
                       'time_scale', j.status->'time_scale',
                       'journey_now', j.status->'journey_now',
                       'timezone', j.status->'timezone',
                       'review_on', j.status->'review_on',
                       'sessions', j.status->'sessions') AS status,
                   CASE WHEN j.stage = 'screening' THEN
                       (SELECT e.kind FROM journey_events e WHERE e.workflow_id = j.workflow_id
                        ORDER BY e.step DESC, e.id DESC LIMIT 1) END AS last_event
            FROM journeys j JOIN patients p ON p.patient_id = j.patient_id
            WHERE p.email LIKE $1 AND j.stage = ANY($2::text[])
            """,
            f"%@{self.email_domain}",
            list(ACTIVE_STAGES),
        )
        started = 0
        for row in rows:
            wf = row["workflow_id"]
            if wf in self._busy or wf not in self.patients:
                continue
            self._busy.add(wf)
            task = asyncio.create_task(self._guarded(row))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started += 1
        return started

    async def settle(self) -> None:
        """Wait for the actions in flight."""
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _guarded(self, row: asyncpg.Record) -> None:
        assert self._slots is not None
        try:
            async with self._slots:
                if not await self._noise(row):
                    await self._act(row)
        except Exception as error:  # one failed call must not stop the season
            self.counters.errors += 1
            logger.warning("simulation action failed: %s: %s", type(error).__name__, error)
        finally:
            self._busy.discard(row["workflow_id"])

    # ------------------------------------------------------------------ the noise

    def _sim_now(self, row: asyncpg.Record) -> datetime:
        status: dict[str, Any] = row["status"]
        scale = float(status.get("time_scale") or 1.0)
        journey_now = _parse_dt(status.get("journey_now")) or row["db_now"]
        now: datetime = journey_now + (row["db_now"] - row["updated_at"]) * scale
        return now

    async def _noise(self, row: asyncpg.Record) -> bool:
        """The noise's action on this row, if one is due; True when one was sent."""
        wf: str = row["workflow_id"]
        index = self.patients[wf]
        stage: str = row["stage"]
        course: int = row["course_number"]
        status: dict[str, Any] = row["status"]
        sessions: list[dict[str, Any]] = status.get("sessions") or []
        sim_now = self._sim_now(row)
        handle = self.client.get_workflow_handle_for(PatientJourney.run, wf)

        if stage != "paused":
            self._paused_since.pop(wf, None)
        # Withdrawal: before the first session, or in the recovery after the k-th.
        after = self.noise.withdraws_after(index, max(1, int(row["sessions_planned"] or 1)))
        if after is not None and stage != "paused":
            due = (after == 0 and row["sessions_done"] == 0 and stage != "screening") or (
                after > 0 and row["sessions_done"] >= after and stage == "recovery"
            )
            if due and self._once(f"withdraw-{wf}"):
                self.counters.withdrawals += 1
                await self._quiet_update(
                    handle.execute_update(
                        PatientJourney.withdraw,
                        WithdrawRequest(reason="Simulated withdrawal", requested_by="patient"),
                    )
                )
                return True
        # A paused journey (prolonged reaction, adverse event): the clinician resumes it.
        if stage == "paused":
            since = self._paused_since.setdefault(wf, sim_now)
            if sim_now >= since + timedelta(days=self.noise.rates.resume_after_days):
                if self._once(f"resume-{wf}-v{row['version']}"):
                    self.counters.resumes += 1
                    await self._quiet_update(
                        handle.execute_update(
                            PatientJourney.resume,
                            ResumeRequest(
                                reason="Simulated: clinician reviewed", requested_by="clinician"
                            ),
                        )
                    )
                    return True
            return True  # nothing else happens to a paused journey
        zone = ZoneInfo(status.get("timezone") or "UTC")
        today = sim_now.astimezone(zone).date()
        # A reschedule, asked once the session is booked and still two days or more away.
        if stage == "scheduled":
            booked = next((s for s in sessions if s["state"] == "booked"), None)
            if booked is not None:
                n = int(booked["number"])
                planned_on = date.fromisoformat(booked["planned_on"])
                days = self.noise.reschedule_days(index, course, n)
                if (
                    days is not None
                    and today <= planned_on - timedelta(days=2)
                    and self._once(f"reschedule-{wf}-c{course}-s{n}")
                ):
                    self.counters.reschedules_asked += 1
                    ok = await self._quiet_update(
                        handle.execute_update(
                            PatientJourney.reschedule,
                            RescheduleRequest(
                                session_number=n,
                                new_date=planned_on + timedelta(days=days),
                                requested_by="patient",
                            ),
                        )
                    )
                    if ok:
                        self.counters.reschedules_applied += 1
                    else:
                        self.counters.reschedules_refused += 1
                    return True
        # An adverse event the day after a session, before its check-in.
        if stage == "recovery":
            done = [s for s in sessions if s["state"] == "done" and s.get("reaction") is None]
            if done:
                n = int(done[-1]["number"])
                completed_at = _parse_dt(done[-1].get("completed_at"))
                severity = self.noise.adverse_event(index, course, n)
                if (
                    severity is not None
                    and completed_at is not None
                    and sim_now >= completed_at + timedelta(days=1)
                    and self._once(f"adverse-{wf}-c{course}-s{n}")
                ):
                    self.counters.adverse_events += 1
                    await self._report(
                        handle.execute_update(
                            PatientJourney.report_adverse_event,
                            AdverseEventSignal(
                                idempotency_key=f"sim-{wf}-c{course}-s{n}-adverse",
                                severity=severity,
                                note_ref=f"sim-note-{index}-{n}",
                            ),
                        ),
                        "adverse event",
                    )
                    return True
        return False

    def _once(self, key: str) -> bool:
        if key in self.sent:
            return False
        self.sent.add(key)
        return True

    async def _quiet_update(self, call: Awaitable[Any]) -> bool:
        try:
            await call
        except WorkflowUpdateFailedError:
            return False
        return True

    # ------------------------------------------------------------------ the demo's hooks

    def attends(self, row: asyncpg.Record, session_number: int, starts_at: datetime) -> bool:
        wf = row["workflow_id"]
        key = (wf, int(row["course_number"]), session_number)
        attempt = self._attempts.get(key, 0)
        self._attempts[key] = attempt + 1
        if self.noise.no_show(self.patients[wf], key[1], session_number, attempt):
            self.counters.no_shows_injected += 1
            return False
        self.counters.completions += 1
        return True

    def reaction_for(self, row: asyncpg.Record, session_number: int) -> str:
        self.counters.checkins += 1
        wf = row["workflow_id"]
        if self.noise.prolonged_reaction(self.patients[wf], row["course_number"], session_number):
            self.counters.prolonged_reactions += 1
            return "prolonged"
        return "none"

    async def _report(self, call: Awaitable[FactResult], message: str) -> int:
        result = await super()._report(call, message)
        if result == 0:
            self.counters.kept_as_anomaly += 1
        return result

    async def _update(self, call: Awaitable[Any], message: str) -> int:
        sent = await super()._update(call, message)
        if "re-screened" in message:
            self.counters.rescreens += sent
        elif "review" in message:
            self.counters.reviews += sent
        return sent

    def _say(self, message: str) -> None:
        self.lines.append(message)
