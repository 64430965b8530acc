"""A whole season simulation: the clinic, the arrivals on one simulated calendar, the
integration with its noise, the progress display, then the audit and the report.

One simulated calendar: the run starts its clock at ``start`` (local midnight in the clinic)
and advances ``time_scale`` simulated seconds per real second. Patient *i* is enrolled at the
real moment its arrival comes on that clock, through the product's own enrolment
(:meth:`api.service.JourneyService.enrol`: the patient record in PostgreSQL, then the journey
with the id only), with ``sim_start`` set to the clock's reading then, so every journey's dates
are on the same calendar. The clinic is loaded as a sandbox clinic (only those honour a
``time_scale``). The run ends when the clock reaches ``start + months``; journeys still open
then are counted by stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time as _time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from activities.repository import upsert_clinic
from scheduling.resources import ClinicScheduling, Resource, scheduling_from_file
from scheduling.store import sync_clinic
from worker.simulation.arrivals import Arrival, generate_arrivals, period_end
from worker.simulation.audit import AUDIT_RULES, AuditResult, run_audit
from worker.simulation.integration import SimIntegration
from worker.simulation.noise import NoiseRates, SeededNoise
from worker.simulation.report import STAGE_GROUPS, ReportData, collect, monday, write_report
from worker.simulation.stack import SimStack
from workflows.protocol import ClinicProtocol, clinic_protocol_from_dict, load_clinic_protocol

__all__ = [
    "DEFAULT_TIME_SCALE",
    "SIM_EMAIL_DOMAIN",
    "SimulationConfig",
    "SimulationResult",
    "prepare_clinic",
    "run_simulation",
]

# A simulated day every ~1.9 s: a 10-month season in under 10 minutes; the window in which a
# session is due (its day plus the 12-hour no-show grace) still lasts ~2.5 s of real time.
DEFAULT_TIME_SCALE = 45_000.0
SIM_EMAIL_DOMAIN = "simulation.journey.invalid"


@dataclass(frozen=True)
class SimulationConfig:
    """What ``journey simulate`` runs (its options, docs/simulation.md)."""

    patients: int = 1000
    start: date = date(2027, 8, 1)
    months: int = 10
    seed: int = 7
    devices: int | None = None
    time_scale: float = DEFAULT_TIME_SCALE
    clinic_file: Path | None = None
    out: Path = Path("report")
    rates: NoiseRates = field(default_factory=NoiseRates)
    arrival_share: float = 1.0
    poll_interval: float | None = None
    concurrency: int = 500
    clinic_prefix: str = ""
    """Put before the clinic id (``sim-`` on a shared stack: the real clinic is never changed)."""
    command: str = "journey simulate"

    @property
    def end(self) -> date:
        return period_end(self.start, self.months)


@dataclass
class SimulationResult:
    """What a run produced."""

    audit: AuditResult
    data: ReportData
    paths: dict[str, Path]
    wall_seconds: float
    cpu_seconds: dict[str, float] = field(default_factory=dict)


def _with_devices(section: ClinicScheduling | None, devices: int | None) -> ClinicScheduling | None:
    """The clinic's scheduling with ``devices`` active lasers: the file's first ones (the rest
    kept, inactive), and more with the first one's hours when the file has fewer. Without a
    ``[scheduling]`` section: ``devices`` lasers and one practitioner, default hours."""
    if devices is None:
        return section
    if section is None:
        base: dict[str, Any] = {
            "resources": [{"resource_id": "prac-1", "kind": "practitioner", "label": "P1"}]
        }
        resources = [Resource.model_validate(r) for r in base["resources"]]
    else:
        base = section.model_dump()
        resources = list(section.resources)
    existing = [r for r in resources if r.kind == "device"]
    taken = {r.resource_id for r in resources}
    out: list[Resource] = []
    seen = 0
    for r in resources:
        if r.kind == "device":
            out.append(r.model_copy(update={"active": seen < devices}))
            seen += 1
        else:
            out.append(r)
    hours = existing[0].hours if existing else None
    k = len(existing)
    while sum(1 for r in out if r.kind == "device" and r.active) < devices:
        k += 1
        rid = f"laser-{k}"
        if rid in taken:
            continue
        taken.add(rid)
        out.append(
            Resource(resource_id=rid, kind="device", label=f"Laser {k} (simulated)", hours=hours)
        )
    return ClinicScheduling.model_validate({**base, "resources": [r.model_dump() for r in out]})


async def prepare_clinic(
    stack: SimStack, config: SimulationConfig
) -> tuple[ClinicProtocol, ClinicScheduling | None]:
    """Load the clinic (file, or a default clinic) as a sandbox clinic, with its scheduling and
    the ``devices`` override, into the stack's PostgreSQL."""
    if config.clinic_file is not None:
        cp = load_clinic_protocol(config.clinic_file)
        section = scheduling_from_file(config.clinic_file)
    else:
        cp = clinic_protocol_from_dict(
            {
                "clinic": {
                    "clinic_id": "sim-clinic",
                    "name": "Simulated clinic",
                    "timezone": "Europe/Paris",
                }
            },
            source="simulation",
        )
        section = None
    section = _with_devices(section, config.devices)
    clinic = cp.clinic.model_copy(
        update={"sandbox": True, "clinic_id": config.clinic_prefix + cp.clinic.clinic_id}
    )
    cp = cp.model_copy(update={"clinic": clinic})
    await upsert_clinic(stack.pool, cp)
    if section is not None:
        await sync_clinic(stack.pool, clinic.clinic_id, section)
    return cp, section


class _Clock:
    """The run's simulated calendar: ``start`` at local midnight, ``scale``× real time."""

    def __init__(self, start: date, zone: ZoneInfo, scale: float) -> None:
        self.origin = datetime.combine(start, time(0), zone)
        self.scale = scale
        self.zone = zone
        self.t0 = _time.monotonic()

    def now(self) -> datetime:
        return self.origin + timedelta(seconds=(_time.monotonic() - self.t0) * self.scale)

    def real_at(self, day_offset: float) -> float:
        return self.t0 + day_offset * 86_400 / self.scale


async def _enrol(
    stack: SimStack,
    config: SimulationConfig,
    clinic_id: str,
    arrival: Arrival,
    clock: _Clock,
    integration: SimIntegration,
) -> None:
    from api.schemas import EnrolRequest, PatientIn, ScreeningAnswersIn, TripIn
    from api.service import JourneyService

    service = JourneyService(stack.client, stack.pool, stack.settings)
    request = EnrolRequest(
        patient=PatientIn(full_name=arrival.name, email=arrival.email(SIM_EMAIL_DOMAIN)),
        clinic_id=clinic_id,
        pore_grade=arrival.grade,
        numbing_cream=arrival.numbing_cream,
        screening=ScreeningAnswersIn(
            fitzpatrick_type=arrival.fitzpatrick_type, recent_tan=arrival.recent_tan
        ),
        trips=[TripIn(start=s, end=e) for s, e in arrival.trips],
        time_scale=config.time_scale,
        sim_start=clock.now(),
    )
    result = await service.enrol(request, caller="simulation")
    integration.patients[result.workflow_id] = arrival.index


def _failed_attempts(stack: SimStack) -> dict[str, int]:
    """Activity attempts the started worker logged as failed, by activity (a timeout waiting
    for a database connection, a contention): retried, never lost, but each one delays its
    journey."""
    log = stack.worker_log
    if log is None or not log.exists():
        return {}
    found: dict[str, int] = {}
    with log.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if "Completing activity as failed" in line:
                match = re.search(r"'activity_type': '([a-z_]+)'", line)
                name = f"failed_attempts_{match.group(1) if match else 'other'}"
                found[name] = found.get(name, 0) + 1
    return {"failed_activity_attempts": sum(found.values()), **dict(sorted(found.items()))}


async def _terminate(stack: SimStack, workflow_ids: list[str]) -> None:
    gate = asyncio.Semaphore(16)

    async def one(wf: str) -> None:
        async with gate:
            with contextlib.suppress(Exception):  # closed already: nothing to do
                await stack.client.get_workflow_handle(wf).terminate("season simulation over")

    await asyncio.gather(*(one(wf) for wf in workflow_ids))


async def run_simulation(
    stack: SimStack, config: SimulationConfig, console: Console, *, live: bool = True
) -> SimulationResult:
    """Run the season (see the module docstring) and write the report to ``config.out``."""
    cp, section = await prepare_clinic(stack, config)
    clinic_id = cp.clinic.clinic_id
    zone = ZoneInfo(cp.clinic.timezone)
    arrivals = generate_arrivals(
        config.patients,
        config.start,
        config.months,
        config.seed,
        hemisphere=cp.clinic.hemisphere,
        arrival_share=config.arrival_share,
    )
    end_at = datetime.combine(config.end, time(0), zone)
    day_seconds = 86_400 / config.time_scale
    integration = SimIntegration(
        stack.client,
        stack.pool,
        console,
        interval=config.poll_interval or min(0.5, max(0.05, day_seconds / 6)),
        noise=SeededNoise(config.seed, config.rates),
        email_domain=SIM_EMAIL_DOMAIN,
        concurrency=config.concurrency,
    )
    snapshots: dict[date, dict[str, int]] = {}
    stop = asyncio.Event()
    enrolled = 0
    enrol_errors = 0
    enrol_tasks: set[asyncio.Task[None]] = set()
    first_event = int(await stack.pool.fetchval("SELECT coalesce(max(id), 0) FROM journey_events"))
    cpu_before = stack.cpu()
    clock = _Clock(config.start, zone, config.time_scale)
    total_days = (config.end - config.start).days

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} simulated days"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    task_id = progress.add_task("simulating", total=total_days)
    state: dict[str, Any] = {"stages": {}, "events": 0, "rate": 0.0}

    def table() -> Table:
        t = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        t.add_column("enrolled", justify="right")
        for short in ("screening", "waiting", "treating", "aftercare", "paused", "done", "closed"):
            t.add_column(short, justify="right")
        t.add_column("events", justify="right")
        t.add_column("events/s", justify="right")
        stages: dict[str, int] = state["stages"]
        t.add_row(
            f"{enrolled}/{config.patients}",
            *(str(sum(stages.get(s, 0) for s in g)) for g in STAGE_GROUPS.values()),
            str(state["events"]),
            f"{state['rate']:.0f}",
        )
        return t

    async def sample() -> None:
        rows = await stack.pool.fetch(
            "SELECT stage, count(*) AS n FROM journeys WHERE clinic_id = $1 GROUP BY stage",
            clinic_id,
        )
        stages = {r["stage"]: int(r["n"]) for r in rows}
        events = int(await stack.pool.fetchval("SELECT coalesce(max(id), 0) FROM journey_events"))
        now = clock.now()
        snapshots[monday(min(now, end_at - timedelta(seconds=1)).date())] = stages
        state["stages"] = stages
        state["rate"] = (events - first_event - state["events"]) / max(
            1e-6, _time.monotonic() - state.get("at", clock.t0)
        )
        state["events"] = events - first_event
        state["at"] = _time.monotonic()
        done = min(total_days, (now - clock.origin).total_seconds() / 86_400)
        progress.update(task_id, completed=done, description=f"{min(now, end_at):%a %d %b %Y}")

    async def enrol_all() -> None:
        nonlocal enrolled, enrol_errors
        gate = asyncio.Semaphore(8)

        async def one(a: Arrival) -> None:
            nonlocal enrolled, enrol_errors
            async with gate:
                try:
                    await _enrol(stack, config, clinic_id, a, clock, integration)
                    enrolled += 1
                except Exception as error:  # counted and reported, the season goes on
                    enrol_errors += 1
                    integration.lines.append(f"enrolment failed: {type(error).__name__}: {error}")

        for a in arrivals:
            await asyncio.sleep(max(0.0, clock.real_at(a.day_offset) - _time.monotonic()))
            if stop.is_set():
                return
            t = asyncio.create_task(one(a))
            enrol_tasks.add(t)
            t.add_done_callback(enrol_tasks.discard)

    driver = asyncio.create_task(integration.run(stop), name="simulation-integration")
    enroller = asyncio.create_task(enrol_all(), name="simulation-enrol")
    started = _time.monotonic()
    display = Live(Group(progress, table()), console=console, refresh_per_second=2, transient=False)
    with display if live else contextlib.nullcontext():
        while clock.now() < end_at:
            await sample()
            if live:
                display.update(Group(progress, table()))
            await asyncio.sleep(
                min(1.0, max(0.05, (end_at - clock.now()).total_seconds() / config.time_scale))
            )
        stop.set()
        await sample()
        if live:
            display.update(Group(progress, table()))
    wall = _time.monotonic() - started
    enroller.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await enroller
    await asyncio.gather(*list(enrol_tasks), return_exceptions=True)
    await driver
    await integration.settle()
    cpu_after = stack.cpu()
    cpu = {k: cpu_after.get(k, 0.0) - cpu_before.get(k, 0.0) for k in cpu_after}

    audit = await run_audit(stack.pool, clinic_id)
    collected = await collect(
        stack.pool, clinic_id=clinic_id, start=config.start, end=config.end, snapshots=snapshots
    )
    events = int(await stack.pool.fetchval("SELECT coalesce(max(id), 0) FROM journey_events"))
    product_cpu = sum(v for k, v in cpu.items() if k != "driver")
    run: dict[str, Any] = {
        "wall_s": round(wall, 1),
        "simulated_days": total_days,
        "patients_enrolled": enrolled,
        "enrolment_errors": enrol_errors,
        "integration_errors": integration.counters.errors,
        "events_written": events - first_event,
        "events_per_s": round((events - first_event) / wall, 1) if wall else None,
    }
    for name, seconds in sorted(cpu.items()):
        run[f"cpu_s_{name}"] = round(seconds, 1)
    if enrolled:
        run["cpu_ms_per_journey_product"] = round(1000 * product_cpu / enrolled, 1)
        run["cpu_ms_per_journey_driver"] = round(1000 * cpu.get("driver", 0.0) / enrolled, 1)
    if not stack.own:
        run["note"] = "connected to a running stack: only this process's CPU is measured"
    run.update(_failed_attempts(stack))
    data = ReportData(
        title=f"Season simulation: {collected['clinic_name']}",
        command=config.command,
        start=config.start,
        end=config.end,
        patients=config.patients,
        seed=config.seed,
        time_scale=config.time_scale,
        audit=audit.counts,
        audit_descriptions={r.name: r.description for r in AUDIT_RULES},
        noise=dict(asdict(integration.counters)),
        rates={k: float(v) for k, v in asdict(config.rates).items()},
        run=run,
        **collected,
    )
    paths = write_report(data, config.out)
    if not stack.own:
        # On a shared stack the simulated journeys would go on running on the sandbox clock.
        await _terminate(stack, list(integration.patients))
    if section is None and config.devices is None:
        console.print("[yellow]![/yellow] the clinic has no [scheduling] section: no capacity")
    return SimulationResult(audit, data, paths, wall, cpu)
