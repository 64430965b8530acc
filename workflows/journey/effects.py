"""What the journey does to the world, in one place: the clock, waits, stage moves and writes.

The rules every step used to have to remember are kept here, by construction:

* **Sticky stages.** :meth:`Effects.set_stage` never leaves a closed stage (it unwinds the main
  loop instead) and never leaves ``paused`` (it records where the journey will resume).
* **One writer at a time.** A write runs under one lock; the main loop's steps
  (:meth:`Effects.advance`) re-check under that lock that the journey is still open before they
  change anything, so a withdraw that lands during a write is never overwritten and nothing is
  booked or sent after it.
* **A lean history.** A write is a local activity (one marker event, no activity task round
  trip), carries only the status fields that changed, and search attributes are upserted only
  when they change. Events noted with :meth:`Effects.note` ride along with the next write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.store import JourneyStore
    from workflows import calendar
    from workflows.clock import JourneyClock
    from workflows.guards import CLOSED_STAGES, STICKY_STAGES, Stage
    from workflows.ids import CLINIC_ID, JOURNEY_FLAGS, JOURNEY_STAGE, NEXT_ACTION_AT
    from workflows.journey.state import JourneyState
    from workflows.protocol import ClinicProtocol
    from workflows.records import (
        AppointmentRecord,
        ClinicRef,
        JourneyEvent,
        NotificationRecord,
        StepRecord,
    )

# Activity plumbing, not clinical numbers: how long one database write may take and how
# retries back off. Unlimited attempts: a database outage delays the journey, never fails it.
WRITE_TIMEOUT = timedelta(seconds=10)
WRITE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    non_retryable_error_types=["UnknownClinic", "InvalidClinicProtocol", "InvalidRecord"],
)


class JourneyClosed(Exception):
    """Unwinds the main loop once the journey is closed (never leaves the workflow)."""


@dataclass
class Write:
    """One step's writes: timeline events, appointments and outbox changes."""

    events: list[JourneyEvent] = field(default_factory=list)
    appointments: list[AppointmentRecord] = field(default_factory=list)
    notifications: list[NotificationRecord] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)
    cancel_pending: bool = False


class Effects:
    """The journey's clock, waits and writes over one :class:`JourneyState`."""

    def __init__(self, state: JourneyState) -> None:
        self.state = state
        self.lock = asyncio.Lock()
        self._clock: JourneyClock | None = None
        self._written: dict[str, Any] = {}
        self._noted = Write()
        self._search_attributes: tuple[Any, ...] | None = None

    # ------------------------------------------------------------- clinic and clock

    async def load_clinic(self) -> None:
        """Load the clinic's protocol once per journey and fix the journey clock."""
        st = self.state
        if st.cp is None:
            st.cp = await workflow.execute_activity_method(
                JourneyStore.load_clinic,
                ClinicRef(clinic_id=st.clinic_id),
                start_to_close_timeout=WRITE_TIMEOUT,
                retry_policy=WRITE_RETRY,
            )
        if st.sim_anchor_real is None:
            real_now = workflow.now()
            st.sim_anchor_real = real_now
            st.sim_anchor_sim = real_now
            # The simulation clock is for training clinics only: elsewhere real time.
            st.time_scale = st.requested_time_scale if st.clinic.clinic.sandbox else 1.0
            if st.sim_start is not None and st.time_scale != 1.0:
                st.sim_anchor_sim = st.sim_start
        assert st.sim_anchor_sim is not None
        self._clock = JourneyClock(st.time_scale, st.sim_anchor_real, st.sim_anchor_sim)

    @property
    def ready(self) -> bool:
        return self._clock is not None

    @property
    def cp(self) -> ClinicProtocol:
        return self.state.clinic

    def now(self) -> datetime:
        """The journey's clock (simulated dates in a sandbox)."""
        if self._clock is None:
            return workflow.now()
        return self._clock.now(workflow.now())

    def today(self) -> date:
        return calendar.clinic_today(self.now(), self.cp.clinic.timezone)

    def day_start(self, d: date) -> datetime:
        return calendar.local_datetime(d, time(0, 0), self.cp.clinic.timezone)

    def real_time(self, journey_time: datetime) -> datetime:
        """When the journey clock reaches ``journey_time``, in real time (outbox send times)."""
        real_now = workflow.now()
        if self._clock is None:
            return journey_time
        return real_now + self._clock.real_delay(journey_time, real_now)

    # ------------------------------------------------------------- stages

    def check_open(self) -> None:
        if self.state.stage in CLOSED_STAGES:
            raise JourneyClosed()

    def set_stage(self, stage: Stage, next_action: str | None, at: datetime | None) -> None:
        """Move the main loop's stage. A closed journey unwinds; a paused one stays paused and
        only remembers where it will resume."""
        st = self.state
        self.check_open()
        if st.stage == "paused" and stage != "paused":
            st.paused_from = stage
            st.paused_next_action = next_action
            st.paused_next_action_at = at
            return
        st.stage = stage
        st.next_action = next_action
        st.next_action_at = at
        self.upsert_search_attributes()

    def close(self, stage: Stage, reason: str) -> None:
        """End the journey (excluded, completed, withdrawn): only handlers and final steps."""
        st = self.state
        st.stage = stage
        st.closed_reason = reason
        st.next_action = None
        st.next_action_at = None
        st.paused_from = None
        self.upsert_search_attributes()

    def pause(self, reason: str) -> None:
        """Hold every timer-driven step until a resume (a no-op when already held or closed)."""
        st = self.state
        if st.stage in STICKY_STAGES:
            return
        st.paused_from = st.stage
        st.paused_next_action = st.next_action
        st.paused_next_action_at = st.next_action_at
        st.stage = "paused"
        st.next_action = f"Resume: {reason}"
        st.next_action_at = None
        self.upsert_search_attributes()

    def resume(self) -> Stage:
        """Leave ``paused`` for the stage it held (the only way out of a pause)."""
        st = self.state
        assert st.paused_from is not None
        stage = st.paused_from
        st.stage = stage
        st.next_action = st.paused_next_action
        st.next_action_at = st.paused_next_action_at
        st.paused_from = None
        st.resumed_at = self.now()
        self.upsert_search_attributes()
        return stage

    def upsert_search_attributes(self) -> None:
        st = self.state
        current = (st.stage, st.next_action_at, tuple(st.flags))
        if current == self._search_attributes:
            return
        self._search_attributes = current
        workflow.upsert_search_attributes(
            [
                JOURNEY_STAGE.value_set(st.stage),
                CLINIC_ID.value_set(st.clinic_id),
                JOURNEY_FLAGS.value_set(list(st.flags)),
                NEXT_ACTION_AT.value_set(st.next_action_at)
                if st.next_action_at is not None
                else NEXT_ACTION_AT.value_unset(),
            ]
        )

    # ------------------------------------------------------------- waits

    async def wait(
        self, deadline: datetime | None, ready: Callable[[], bool], summary: str
    ) -> bool:
        """Wait once: until ``ready()``, the journey clock reaching ``deadline``, a change by a
        handler, a pause or a close. Returns ``ready()``; callers loop and recompute.

        While paused nothing fires: the wait returns on resume (or close).
        """
        st = self.state
        self.check_open()
        if ready():
            return True
        seen = st.changes
        if st.stage == "paused":
            await workflow.wait_condition(lambda: st.stage != "paused")
        else:

            def woken() -> bool:
                return ready() or st.changes != seen or st.stage in STICKY_STAGES

            if deadline is None:
                await workflow.wait_condition(woken)
            else:
                assert self._clock is not None
                delay = self._clock.real_delay(deadline, workflow.now())
                if delay > timedelta(0):
                    try:
                        await workflow.wait_condition(woken, timeout=delay, timeout_summary=summary)
                    except TimeoutError:
                        pass
        self.check_open()
        return ready()

    async def sleep_until(
        self, deadline: datetime | None, ready: Callable[[], bool], summary: str
    ) -> bool:
        """Wait until ``ready()`` or the deadline, through handler changes and pauses."""
        while not ready() and (
            deadline is None or self.now() < deadline or self.state.stage == "paused"
        ):
            await self.wait(deadline, ready, summary)
        return ready()

    async def hold_while_paused(self) -> None:
        while self.state.stage == "paused":
            await self.wait(None, lambda: False, "paused")

    # ------------------------------------------------------------- records

    def event(
        self, kind: str, actor: str, summary: str, data: dict[str, Any] | None = None
    ) -> JourneyEvent:
        """A timeline line (its key is set when it is written)."""
        return JourneyEvent(
            key="", kind=kind, actor=actor, occurred_at=self.now(), summary=summary, data=data or {}
        )

    def notify(
        self,
        kind: str,
        key: str,
        /,
        audience: str = "patient",
        send_at: datetime | None = None,
        **params: str,
    ) -> NotificationRecord:
        """An outbox row, keyed per course; ``send_at`` is journey time (scheduled sends)."""
        return self.notify_params(kind, key, params, audience, send_at)

    def notify_params(
        self,
        kind: str,
        key: str,
        params: dict[str, str],
        audience: str = "patient",
        send_at: datetime | None = None,
    ) -> NotificationRecord:
        """:meth:`notify` with the template's parameters as one mapping."""
        return NotificationRecord(
            key=self.notification_key(key),
            kind=kind,
            audience=audience,
            params=params,
            send_at=self.real_time(send_at) if send_at is not None else None,
        )

    def notification_key(self, key: str) -> str:
        return f"c{self.state.course_number}:{key}"

    def appointment(self, number: int) -> AppointmentRecord:
        st = self.state
        s = st.session(number)
        assert s.starts_at is not None
        p = self.cp.protocol
        minutes = p.session_minutes_max if st.pore_grade == "large" else p.session_minutes_min
        return AppointmentRecord(
            course_number=st.course_number,
            session_number=s.number,
            starts_at=s.starts_at,
            arrive_by=s.arrive_by,
            duration_minutes=minutes,
            status=s.state,
        )

    def note(
        self, *events: JourneyEvent, appointments: list[AppointmentRecord] | None = None
    ) -> None:
        """Keep events for the next write (a step that needs no write of its own)."""
        self._noted.events.extend(events)
        self._noted.appointments.extend(appointments or [])

    def has_noted(self) -> bool:
        """True when noted events or appointments wait for the next write."""
        return bool(self._noted.events or self._noted.appointments)

    async def advance(self, change: Callable[[], Write | None]) -> None:
        """A step of the main loop: under the write lock, check the journey is still open,
        apply ``change`` to the state and write what it returns.

        Raises:
            JourneyClosed: the journey closed (a withdraw) before the step could run.
        """
        async with self.lock:
            self.check_open()
            write = change()
            if write is not None:
                await self.write(write)

    async def write(self, write: Write) -> None:
        """Write one step (the caller holds :attr:`lock`). Idempotency key: (workflow id, step);
        the step counter survives continue-as-new, so a retried write never lands twice."""
        st = self.state
        noted, self._noted = self._noted, Write()
        events = [*noted.events, *write.events]
        appointments = {(a.course_number, a.session_number): a for a in noted.appointments}
        appointments.update({(a.course_number, a.session_number): a for a in write.appointments})
        st.step += 1
        status = st.to_status(self.now() if self.ready else None).model_dump(mode="json")
        patch = {k: v for k, v in status.items() if self._written.get(k, _MISSING) != v}
        self._written = status
        self.upsert_search_attributes()
        record = StepRecord(
            workflow_id=workflow.info().workflow_id,
            step=st.step,
            patient_id=st.patient_id,
            clinic_id=st.clinic_id,
            status_patch=patch,
            events=[e.model_copy(update={"key": f"{st.step}.{i}"}) for i, e in enumerate(events)],
            appointments=list(appointments.values()),
            notifications=write.notifications,
            cancel_notifications=write.cancel,
            cancel_pending_notifications=write.cancel_pending,
        )
        try:
            await workflow.execute_local_activity_method(
                JourneyStore.record_step,
                record,
                start_to_close_timeout=WRITE_TIMEOUT,
                retry_policy=WRITE_RETRY,
            )
        except ActivityError as error:
            # The database refused this step for good (a bug, or a value no door should have
            # let through). The journey stays running and consistent: staff are alerted and
            # the read model gets the status without the refused free text.
            workflow.logger.error("step refused by the store", extra={"step": st.step})
            await self._write_refused_step(record, error)

    async def _write_refused_step(self, record: StepRecord, error: ActivityError) -> None:
        st = self.state
        st.step += 1
        self._written = {}
        status = st.to_status(self.now() if self.ready else None).model_dump(mode="json")
        self._written = status
        cause = error.cause
        kind = cause.type if isinstance(cause, ApplicationError) else type(cause).__name__
        fallback = StepRecord(
            workflow_id=record.workflow_id,
            step=st.step,
            patient_id=st.patient_id,
            clinic_id=st.clinic_id,
            status_patch=status,
            events=[
                JourneyEvent(
                    key=f"{st.step}.0",
                    kind="write_refused",
                    actor="system",
                    occurred_at=self.now(),
                    summary=f"Step {record.step} could not be recorded ({kind}); staff alerted.",
                    data={"step": record.step, "kinds": [e.kind for e in record.events]},
                )
            ],
            notifications=[
                NotificationRecord(
                    key=self.notification_key(f"write-refused-{record.step}"),
                    kind="staff_alert",
                    audience="staff",
                    params={"alert": "write_refused", "step": str(record.step)},
                )
            ],
            cancel_pending_notifications=record.cancel_pending_notifications,
            cancel_notifications=record.cancel_notifications,
        )
        try:
            await workflow.execute_local_activity_method(
                JourneyStore.record_step,
                fallback,
                start_to_close_timeout=WRITE_TIMEOUT,
                retry_policy=WRITE_RETRY,
            )
        except ActivityError:
            workflow.logger.error("fallback step refused too", extra={"step": st.step})


_MISSING = object()
