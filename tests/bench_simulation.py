"""The season simulation as a benchmark (a measurement, not a test: pytest does not collect it;
issue 17 item 4). ``make bench-simulation``:

    .venv/bin/python -m tests.bench_simulation                     # 1,000 patients, ~13 minutes
    .venv/bin/python -m tests.bench_simulation --patients 200 --months 4 --bare 50

One process tree (``tests/bench_throughput.py``'s stack): a Temporal dev server (timers within
10 ms), an embedded PostgreSQL, and per measurement a fresh worker process. First the **bare
journey** (``tests/bench_bare.py``: the journey's timers, signals and update with one no-op
activity per write and no logic, 3 sessions 14 days apart) runs ``--bare`` journeys at once on
the same clock as the season; then the **season** (``journey simulate``'s engine,
``worker.simulation.runner``) with ``journey worker``: ``--patients`` arrivals over
``--months`` months with the default noise, on the example clinic's lasers.

It prints one table: wall time (the target: the 1,000-patient season in ≤ 10 minutes here),
CPU per journey by process (worker, Temporal server, PostgreSQL with its backends; the driver
separately, it is not the product) and their ratio to the bare journey measured in the same run
(the machines are shared: absolute numbers drift, ratios much less), the audit counts and the
utilisation. The season's report is written to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

from rich.console import Console

from tests.bench_throughput import Stack, stack, throughput, worker
from worker.settings import PROJECT_ROOT, Settings
from worker.simulation.runner import (
    DEFAULT_TIME_SCALE,
    SimulationConfig,
    SimulationResult,
    run_simulation,
)
from worker.simulation.stack import SimStack, wait_for_worker

DAY = 86_400.0


def _row(label: str, bare: float | None, season: float | None, fmt: str = "{:.1f}") -> str:
    def show(v: float | None) -> str:
        return "—" if v is None else fmt.format(v)

    ratio = f"{season / bare:.2f}×" if bare and season is not None else ""
    return f"| {label} | {show(bare)} | {show(season)} | {ratio} |"


async def season(s: Stack, args: argparse.Namespace) -> SimulationResult:
    tq = f"bench-season-{uuid.uuid4().hex[:6]}"
    settings = Settings(
        _env_file=None,
        journey_env="development",
        temporal_address=s.address,
        temporal_task_queue=tq,
        database_url=s.dsn,
    )
    config = SimulationConfig(
        patients=args.patients,
        start=date.fromisoformat(args.start),
        months=args.months,
        seed=args.seed,
        devices=args.devices,
        time_scale=args.time_scale,
        clinic_file=Path(args.clinic),
        out=Path(args.out),
        command="python -m tests.bench_simulation " + " ".join(sys.argv[1:]),
    )
    with worker(s, "journey", tq, []):
        await wait_for_worker(s.client, tq)
        await asyncio.sleep(1.0)  # imports done: CPU from here is the season's
        processes = {**s.procs, "postgres": s.postgres}
        sim = SimStack(
            s.client,
            s.pool,
            settings,
            own=True,
            processes=processes,
            worker_log=s.folder / f"worker-{tq}.log",
        )
        console = Console(stderr=True) if args.live else Console(file=io.StringIO())
        result = await run_simulation(sim, config, console, live=args.live)
    return result


async def main(args: argparse.Namespace) -> None:
    print(
        f"# make bench-simulation — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs"
    )
    day = DAY / args.time_scale
    print(
        f"# season: {args.patients} patients, {args.start} + {args.months} months, "
        f"{args.clinic}, devices {args.devices or 'as in the file'}, time scale "
        f"{args.time_scale:,.0f} ({day:.2f} s per simulated day); bare: {args.bare} journeys "
        "on the same clock"
    )
    async with stack() as s:
        bare = await throughput(s, "bare", args.bare, day, []) if args.bare else None
        result = await season(s, args)
    data = result.data
    cpu = result.cpu_seconds
    n = data.run["patients_enrolled"] or 1
    per = {k: 1000 * v / n for k, v in cpu.items()}
    bare_ms = {k: 1000 * v for k, v in bare.cpu.items()} if bare else {}
    product = ("worker", "server", "postgres")
    lines = [
        "| figure | bare journey | season | ratio |",
        "|---|---:|---:|---:|",
        _row("journeys", args.bare or None, n, "{:.0f}"),
        _row(
            "wall s (season: the whole calendar)",
            args.bare / bare.journeys_per_s if bare else None,
            data.run["wall_s"],
        ),
        _row(
            "simulated days per journey (bare) / in the season",
            bare.sim_days if bare else None,
            float(data.run["simulated_days"]),
        ),
    ]
    for name in product:
        lines.append(_row(f"CPU ms per journey: {name}", bare_ms.get(name), per.get(name)))
    lines.append(
        _row(
            "CPU ms per journey: worker + server + postgres",
            sum(bare_ms.get(k, 0.0) for k in product) if bare else None,
            sum(per.get(k, 0.0) for k in product),
        )
    )
    lines.append(
        _row(
            "CPU ms per journey: driver (not the product)", bare_ms.get("driver"), per.get("driver")
        )
    )
    lines.append(
        _row(
            "no-shows recorded (bare: the clock held)",
            bare.no_shows if bare else None,
            data.figures["no_shows_recorded"],
            "{:.0f}",
        )
    )
    print("\n".join(lines))
    print()
    f = data.figures
    audit = ", ".join(f"{k} {v}" for k, v in data.audit.items())
    print(f"audit: {audit}")
    print(
        f"utilisation: mean {f['utilisation_mean_open_weeks'] or 0:.1f} % of open laser hours "
        f"(weeks with sessions {f['utilisation_mean_weeks_in_use'] or 0:.1f} %), peak week "
        f"{f['utilisation_peak'] or 0:.1f} % ({f['utilisation_peak_week']})"
    )
    print(f"no-shows injected {data.noise['no_shows_injected']}, recorded {f['no_shows_recorded']}")
    target = "met" if data.run["wall_s"] <= 600 else "NOT met"
    print(f"wall {data.run['wall_s']} s for {n} patients: the ≤ 10-minute target is {target}")
    print(f"report: {result.paths['report']}")


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=1000, help="patients (1000)")
    parser.add_argument("--months", type=int, default=10, help="simulated months (10)")
    parser.add_argument("--start", default="2027-08-01", help="first day (2027-08-01)")
    parser.add_argument(
        "--clinic", default=str(PROJECT_ROOT / "examples" / "clinic.toml"), help="clinic file"
    )
    parser.add_argument("--devices", type=int, default=None, help="lasers (the file's)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--time-scale", type=float, default=DEFAULT_TIME_SCALE, help="simulation clock (45000)"
    )
    parser.add_argument("--bare", type=int, default=100, help="bare journeys (100; 0 skips)")
    parser.add_argument(
        "--out", default=str(PROJECT_ROOT / ".data" / "bench-simulation"), help="report folder"
    )
    parser.add_argument("--live", action="store_true", help="show the live progress on stderr")
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
