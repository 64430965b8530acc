"""``journey dev --demo``: sample patients and a stand-in for the booking system and the
clinician, so a newcomer can watch journeys move on the simulation clock.

The demo enrols through the product's service (:class:`api.service.JourneyService`) and acts on
the journeys' status fields and timeline from the read model, as an integration would; it never
parses the text the workflow shows to people.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from rich.console import Console
from temporalio.client import Client, WorkflowUpdateFailedError

from activities.repository import upsert_clinic
from worker.settings import Settings
from workflows.journey import PatientJourney
from workflows.messages import (
    FactResult,
    RecoveryCheckinSignal,
    ReviewRequest,
    ScreeningRequest,
    SessionCompletedSignal,
)
from workflows.protocol import ClinicProtocol, clinic_protocol_from_dict
from workflows.screening import ScreeningAnswers

__all__ = [
    "DEMO_EMAIL_DOMAIN",
    "DEMO_PATIENTS",
    "DEMO_SOUTH_CLINIC",
    "DEMO_TIME_SCALE",
    "DemoIntegration",
    "enrol_demo",
    "ensure_dev_scheduling",
    "mark_dev_clinics_sandbox",
    "open_demo_journeys",
]

logger = logging.getLogger(__name__)

# One simulated day every ~2.9 s: a 6-month journey runs in about 9 minutes, and the window in
# which a session is due (its day plus the no-show grace) still lasts ~4 s of real time.
DEMO_TIME_SCALE = 30_000.0
DEMO_EMAIL_DOMAIN = "demo.journey.invalid"
DEMO_SOUTH_CLINIC = "demo-south"


@dataclass(frozen=True)
class DemoPatient:
    """A sample patient of ``--demo`` (fictional, with an ``.invalid`` e-mail address)."""

    name: str
    grade: str
    numbing_cream: bool = False
    clinic_id: str = "default"
    screening: ScreeningAnswers = field(default_factory=ScreeningAnswers)


DEMO_PATIENTS: tuple[DemoPatient, ...] = (
    DemoPatient("Ana Demo", "large", numbing_cream=True),
    DemoPatient("Ben Demo", "moderate"),
    DemoPatient(
        "Chloé Demo", "small", numbing_cream=True, screening=ScreeningAnswers(fitzpatrick_type=5)
    ),
    DemoPatient("Dev Demo", "moderate", screening=ScreeningAnswers(recent_tan=True)),
    DemoPatient("Eli Demo", "large", numbing_cream=True, clinic_id=DEMO_SOUTH_CLINIC),
    DemoPatient("Fay Demo", "small", screening=ScreeningAnswers(cold_sore_history=True)),
)


def demo_south_clinic() -> ClinicProtocol:
    """A southern-hemisphere clinic (summer December–February): a course enrolled in late
    spring waits for the season there."""
    return clinic_protocol_from_dict(
        {
            "clinic": {
                "clinic_id": DEMO_SOUTH_CLINIC,
                "name": "Demo Harbour Clinic",
                "timezone": "Australia/Sydney",
                "hemisphere": "south",
                "session_start": "09:30",
                # The demo runs on the simulation clock, which only sandbox clinics honour.
                "sandbox": True,
            },
            "protocol": {"version": "pore-demo-south"},
        },
        source="demo clinic",
    )


# The development clinics' capacity (docs/scheduling.md): two lasers and two practitioners, so
# the demo's sessions land at different times on different devices.
DEMO_SCHEDULING: dict[str, Any] = {
    "slot_minutes": {"small": 30, "moderate": 45, "large": 60},
    "turnover_minutes": 15,
    "step_minutes": 15,
    "hours": {d: ["09:00-12:30", "13:30-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
    "resources": [
        {"resource_id": "laser-1", "kind": "device", "label": "Laser 1"},
        {"resource_id": "laser-2", "kind": "device", "label": "Laser 2"},
        {"resource_id": "pr-a", "kind": "practitioner", "label": "PR A"},
        {
            "resource_id": "pr-b",
            "kind": "practitioner",
            "label": "PR B",
            "hours": {d: ["10:00-16:00"] for d in ("mon", "tue", "wed", "thu")},
        },
    ],
}


async def ensure_dev_scheduling(pool: asyncpg.Pool, clinic_ids: list[str]) -> list[str]:
    """Give the development clinics the demo's capacity when they have none on file (staff
    edits made through the API or CLI are kept). Returns the clinics that got it."""
    from scheduling.resources import ClinicScheduling
    from scheduling.store import list_resources, sync_clinic

    section = ClinicScheduling.model_validate(DEMO_SCHEDULING)
    given: list[str] = []
    for clinic_id in clinic_ids:
        async with pool.acquire() as conn:
            if await list_resources(conn, clinic_id):
                continue
        await sync_clinic(pool, clinic_id, section)
        given.append(clinic_id)
    return given


async def mark_dev_clinics_sandbox(pool: asyncpg.Pool) -> list[str]:
    """Mark the development stack's clinics as sandbox (``journey dev`` only, never a
    production path): the default clinic and the demo's southern clinic.

    The journey honours a ``time_scale`` other than 1 only in a sandbox clinic, so without
    this the demo (and any journey enrolled with a simulation clock in development) would run
    in real time. A clinic's other settings are kept as stored.

    Returns:
        The ids of the clinics that were changed.
    """
    from activities.repository import ensure_default_clinic, get_clinic

    changed: list[str] = []
    default = await ensure_default_clinic(pool)
    south = await get_clinic(pool, DEMO_SOUTH_CLINIC)
    for stored, fresh in ((default, default), (south, demo_south_clinic())):
        if stored is None or not stored.clinic.sandbox:
            cp = stored or fresh
            sandbox = cp.clinic.model_copy(update={"sandbox": True})
            await upsert_clinic(pool, cp.model_copy(update={"clinic": sandbox}))
            changed.append(cp.clinic.clinic_id)
    return changed


def _email(name: str) -> str:
    return name.split()[0].lower().replace("é", "e") + f"@{DEMO_EMAIL_DOMAIN}"


async def open_demo_journeys(pool: asyncpg.Pool) -> int:
    """How many demo journeys are still open (a previous ``--demo`` run left them running)."""
    count = await pool.fetchval(
        """
        SELECT count(*) FROM journeys j JOIN patients p ON p.patient_id = j.patient_id
        WHERE p.email LIKE $1 AND j.stage NOT IN ('completed', 'excluded', 'withdrawn')
        """,
        f"%@{DEMO_EMAIL_DOMAIN}",
    )
    return int(count)


async def enrol_demo(
    client: Client, pool: asyncpg.Pool, settings: Settings, time_scale: float
) -> list[str]:
    """Enrol :data:`DEMO_PATIENTS` through the product's own path,
    :meth:`api.service.JourneyService.enrol` (the patient record first, then the journey with
    the id; a repeat returns the running journey, never ``TERMINATE_EXISTING``).

    Returns:
        The patient ids enrolled.
    """
    from api.schemas import EnrolRequest, PatientIn, ScreeningAnswersIn
    from api.service import JourneyService

    await upsert_clinic(pool, demo_south_clinic())
    service = JourneyService(client, pool, settings)
    ids: list[str] = []
    for demo in DEMO_PATIENTS:
        request = EnrolRequest(
            patient=PatientIn(full_name=demo.name, email=_email(demo.name)),
            clinic_id=demo.clinic_id,
            pore_grade=demo.grade,
            numbing_cream=demo.numbing_cream,
            # The API's own input model: the answers as a client would send them.
            screening=ScreeningAnswersIn.model_validate(
                demo.screening.model_dump(exclude_defaults=True)
            ),
            time_scale=time_scale,
        )
        result = await service.enrol(request)
        ids.append(str(result.patient_id))
    return ids


@dataclass
class DemoIntegration:
    """Plays the booking system and the clinician for demo journeys, from the read model.

    Every ``interval`` it reads the open demo journeys (patients with an e-mail address at
    :data:`DEMO_EMAIL_DOMAIN`) and decides from the status fields only (never the display text
    of ``next_action``), at each row's simulated time (the row's ``journey_now`` advanced by the
    real time since it was written, times ``time_scale``): reports the booked session as
    completed on its day once its end has passed on the journey's clock (``stage``
    ``scheduled``, which the read model keeps on the session's day too, the session's ``state``
    and ``planned_on`` in the clinic's ``timezone``), sends the recovery check-in three simulated
    days after a session (``completed_at``, ``reaction``), submits clean answers when the
    journey asked for them (its latest timeline event is ``screening_requested``), and records
    the review once ``review_on`` has come. Facts go through the journey's ``report_*``
    updates and the demo prints what became of them (applied, duplicate, or kept for staff);
    their keys are derived from the journey and the step, so a repeat is a duplicate; each action
    is sent once per process (remembered in ``sent``).
    """

    client: Client
    pool: asyncpg.Pool
    console: Console
    interval: float = 0.5
    # The reaction every check-in reports (None: varied by patient). The journey judges a
    # reaction on the day it receives it: "expected" received after the recovery's last day
    # is prolonged and pauses the journey for a clinician.
    checkin_reaction: str | None = None
    sent: set[str] = field(default_factory=set)
    reactions: dict[str, str] = field(default_factory=dict)

    async def run(self, stop: asyncio.Event) -> None:
        """Loop until ``stop`` is set; errors are logged and the loop goes on."""
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception as error:  # a demo helper must never take the stack down
                logger.warning("demo integration round failed: %s", type(error).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    async def run_once(self) -> int:
        """One round; returns how many facts or requests were sent."""
        rows = await self.pool.fetch(
            """
            SELECT j.workflow_id, j.stage, j.course_number, j.version, j.status, j.updated_at,
                   p.full_name, now() AS db_now,
                   (SELECT e.kind FROM journey_events e WHERE e.workflow_id = j.workflow_id
                    ORDER BY e.step DESC, e.id DESC LIMIT 1) AS last_event
            FROM journeys j JOIN patients p ON p.patient_id = j.patient_id
            WHERE p.email LIKE $1
              AND j.stage IN ('scheduled', 'session_due', 'recovery', 'screening',
                              'awaiting_review')
            """,
            f"%@{DEMO_EMAIL_DOMAIN}",
        )
        sent = 0
        for row in rows:
            sent += await self._act(row)
        return sent

    async def _act(self, row: asyncpg.Record) -> int:
        status: dict[str, Any] = row["status"]
        wf_id: str = row["workflow_id"]
        first_name = str(row["full_name"]).split()[0]  # demo names are fictional
        scale = float(status.get("time_scale") or 1.0)
        journey_now = _parse_dt(status.get("journey_now")) or row["db_now"]
        sim_now = journey_now + (row["db_now"] - row["updated_at"]) * scale
        course = row["course_number"]
        sessions: list[dict[str, Any]] = status.get("sessions", [])
        handle = self.client.get_workflow_handle_for(PatientJourney.run, wf_id)
        stage = row["stage"]
        if stage in ("scheduled", "session_due"):
            due = next((s for s in sessions if s["state"] in ("planned", "booked")), None)
            starts_at = _parse_dt(due.get("starts_at")) if due else None
            if due is None or starts_at is None:
                return 0
            clinic_today = sim_now.astimezone(ZoneInfo(status.get("timezone") or "UTC")).date()
            if due["state"] != "booked" or clinic_today < date.fromisoformat(due["planned_on"]):
                return 0  # not its day yet in the clinic (a row written as the journey moved)
            done_at = starts_at + timedelta(minutes=45)
            # A completion dated in the journey's future is kept as an anomaly: report it once
            # its time has passed (``sim_now`` lags the journey's clock, never leads it).
            if done_at > sim_now:
                return 0
            # Per booking: a rebooked session (after a no-show) is a new fact to report.
            key = f"demo-{wf_id}-c{course}-s{due['number']}-{starts_at:%Y%m%dT%H%M}-done"
            if key in self.sent:
                return 0
            self.sent.add(key)
            if not self.attends(row, due["number"], starts_at):
                return 0  # a no-show: nothing is reported, the journey notices
            return await self._report(
                handle.execute_update(
                    PatientJourney.report_session_completed,
                    SessionCompletedSignal(
                        idempotency_key=key,
                        session_number=due["number"],
                        completed_at=done_at,
                        source="demo-device",
                    ),
                ),
                f"{first_name}: session {due['number']} reported completed",
            )
        if stage == "recovery":
            done = [s for s in sessions if s["state"] == "done" and s.get("reaction") is None]
            if not done:
                return 0
            session = done[-1]
            completed_at = _parse_dt(session.get("completed_at"))
            if completed_at is None or sim_now < completed_at + timedelta(days=3):
                return 0
            key = f"demo-{wf_id}-c{course}-s{session['number']}-checkin"
            if key in self.sent:
                return 0
            self.sent.add(key)
            reaction = self.reaction_for(row, session["number"])
            return await self._report(
                handle.execute_update(
                    PatientJourney.report_recovery_checkin,
                    RecoveryCheckinSignal(
                        idempotency_key=key,
                        session_number=session["number"],
                        day=3,
                        reaction=reaction,
                    ),
                ),
                f"{first_name}: day-3 check-in after session {session['number']} ({reaction})",
            )
        if stage == "screening":
            if row["last_event"] != "screening_requested":
                return 0  # the intake screening in progress, not a request for answers
            key = f"demo-{wf_id}-c{course}-rescreen-v{row['version']}"
            if key in self.sent:
                return 0
            self.sent.add(key)
            return await self._update(
                handle.execute_update(
                    PatientJourney.submit_screening,
                    ScreeningRequest(answers=ScreeningAnswers(), requested_by="staff"),
                ),
                f"{first_name}: re-screened, no contraindication",
            )
        if stage == "awaiting_review":
            review_on = status.get("review_on")
            if review_on is None or sim_now.date() < date.fromisoformat(review_on):
                return 0
            key = f"demo-{wf_id}-c{course}-review"
            if key in self.sent:
                return 0
            self.sent.add(key)
            return await self._update(
                handle.execute_update(
                    PatientJourney.record_review,
                    ReviewRequest(outcome="complete", reviewed_by="clinician"),
                ),
                f"{first_name}: 3-month review recorded, journey complete",
            )
        return 0

    def attends(self, row: asyncpg.Record, session_number: int, starts_at: datetime) -> bool:
        """Whether the patient comes to this booking (the demo's always do; the season
        simulation's miss some, ``worker.simulation.integration``)."""
        return True

    def reaction_for(self, row: asyncpg.Record, session_number: int) -> str:
        """The reaction the check-in after ``session_number`` reports."""
        first_name = str(row["full_name"]).split()[0]
        return self.checkin_reaction or ("none" if first_name == "Ben" else "expected")

    async def _report(self, call: Awaitable[FactResult], message: str) -> int:
        """Send a fact through its ``report_*`` update and say what became of it."""
        result = await call
        if result.outcome == "anomaly":
            reasons = "; ".join(r.message for r in result.reasons)
            self._say(
                f"{message}: not applied, kept for staff (anomaly #{result.anomaly_id}): {reasons}"
            )
            return 0
        self._say(message + (" (already applied)" if result.outcome == "duplicate" else ""))
        return 1

    async def _update(self, call: Awaitable[Any], message: str) -> int:
        try:
            await call
        except WorkflowUpdateFailedError as error:
            self._say(f"{message.split(':')[0]}: request refused ({type(error.cause).__name__})")
            return 0
        self._say(message)
        return 1

    def _say(self, message: str) -> None:
        self.console.print(
            f"[dim]{datetime.now():%H:%M:%S}[/dim] [magenta]demo[/magenta] {message}"
        )


def _parse_dt(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))
