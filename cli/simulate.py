"""``journey simulate``: a season of patients on the sandbox clock against the real stack,
then a report with the audit of every clinical rule (docs/simulation.md).

    journey simulate --patients 1000 --clinic examples/clinic.toml --from 2027-08-01 \\
        --months 10 --devices 2 --seed 7 --out report/

Exit codes: 0 when the audit is all 0; 1 when it found a breach (the report says which) or
something failed; 2 for bad input (a malformed option, an invalid clinic file).
"""

from __future__ import annotations

import shlex
import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from cli.codes import BAD_INPUT, ERROR, OK
from cli.processes import _bytecode_cache, _run_long, _settings, console, err_console, finish

__all__ = ["register"]

RATES_HELP = "Noise, a probability 0–1"


def simulate(
    patients: Annotated[int, typer.Option(min=1, max=20_000, help="Patients arriving.")] = 1000,
    clinic: Annotated[
        Path | None,
        typer.Option(
            help="Clinic file (.toml/.yaml/.json) with its \\[scheduling] section; the clinic "
            "is loaded as a sandbox clinic. Default: a clinic with default rules."
        ),
    ] = None,
    start: Annotated[
        str, typer.Option("--from", help="First simulated day (YYYY-MM-DD).")
    ] = "2027-08-01",
    months: Annotated[int, typer.Option(min=1, max=24, help="Simulated months.")] = 10,
    devices: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=50,
            help="Lasers in the clinic's scheduling resources (overrides the file: "
            "'what if we add a second laser?').",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the arrivals and the noise.")] = 7,
    out: Annotated[
        Path, typer.Option(help="Folder for report.md, the SVG charts and summary.json.")
    ] = Path("report"),
    time_scale: Annotated[
        float,
        typer.Option(
            min=100,
            max=1_000_000,
            help="Simulated seconds per real second (45000: a simulated day every 1.9 s, "
            "10 months in about 9.7 minutes).",
        ),
    ] = 45_000.0,
    no_show: Annotated[
        float, typer.Option(min=0, max=1, help=f"{RATES_HELP} per booked session: a no-show.")
    ] = 0.05,
    reschedule: Annotated[
        float,
        typer.Option(
            min=0,
            max=1,
            help=f"{RATES_HELP} per booked session: the patient asks to move it 2–10 days "
            "later, once it is booked (two days or more before it).",
        ),
    ] = 0.08,
    prolonged: Annotated[
        float,
        typer.Option(
            min=0,
            max=1,
            help=f"{RATES_HELP} per session: the check-in reports a prolonged reaction "
            "(the journey pauses for a clinician).",
        ),
    ] = 0.03,
    adverse: Annotated[
        float,
        typer.Option(
            min=0,
            max=1,
            help=f"{RATES_HELP} per session: a mild (70 %) or moderate adverse event the "
            "day after (the journey pauses).",
        ),
    ] = 0.01,
    withdrawal: Annotated[
        float,
        typer.Option(
            min=0,
            max=1,
            help=f"{RATES_HELP} per patient: withdraws before the first session or after "
            "one of them.",
        ),
    ] = 0.03,
    resume_after_days: Annotated[
        int,
        typer.Option(
            min=0, max=90, help="Simulated days before a clinician resumes a paused journey."
        ),
    ] = 10,
    arrival_share: Annotated[
        float,
        typer.Option(
            min=0.05,
            max=1.0,
            help="Arrivals fall in this first share of the period (1: all of it).",
        ),
    ] = 1.0,
    connect: Annotated[
        bool,
        typer.Option(
            "--connect",
            help="Use the running stack of the settings (TEMPORAL_ADDRESS, DATABASE_URL, a "
            "worker on TEMPORAL_TASK_QUEUE) instead of starting one; the clinic is loaded as "
            "'sim-<clinic_id>', never over the real one.",
        ),
    ] = False,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep", help="Keep the started stack's temporary folder (worker log, data)."
        ),
    ] = False,
    no_live: Annotated[
        bool, typer.Option("--no-live", help="No live progress display (logs, CI).")
    ] = False,
) -> None:
    """Simulate a season of patients on the sandbox clock against the real stack (Temporal
    dev server, embedded PostgreSQL, the worker), with seeded noise; write a report with the
    weekly utilisation against capacity, the patients waiting for the season, courses split
    by summer, time to completion, no-shows, and the audit of every clinical rule (each
    count must be 0).

    Arrivals follow a yearly demand pattern (autumn and January busiest, summer quietest);
    profiles: grade 35/40/25 % small/moderate/large, Fitzpatrick I–VI 10/25/30/18/12/5 %,
    numbing cream 40 %, a recent tan 4 %, a trip 15 %.
    """
    from workflows.protocol import ProtocolFileError, load_clinic_protocol

    try:
        first_day = date.fromisoformat(start)
    except ValueError:
        err_console.print(f"error: --from {start!r} is not a date (YYYY-MM-DD)", markup=False)
        finish(BAD_INPUT)
    if clinic is not None:
        from scheduling.resources import SchedulingFileError, scheduling_from_file

        try:
            load_clinic_protocol(clinic)
            scheduling_from_file(clinic)
        except (ProtocolFileError, SchedulingFileError) as error:
            for line in error.problems:
                err_console.print(f"error: {line}", markup=False)
            finish(BAD_INPUT)
    from worker.simulation.noise import NoiseRates
    from worker.simulation.runner import SimulationConfig, run_simulation
    from worker.simulation.stack import connected_stack, own_stack

    settings = _settings()
    _bytecode_cache(settings)
    config = SimulationConfig(
        patients=patients,
        start=first_day,
        months=months,
        seed=seed,
        devices=devices,
        time_scale=time_scale,
        clinic_file=clinic,
        out=out,
        rates=NoiseRates(
            no_show=no_show,
            reschedule=reschedule,
            prolonged_reaction=prolonged,
            adverse_event=adverse,
            withdrawal=withdrawal,
            resume_after_days=resume_after_days,
        ),
        arrival_share=arrival_share,
        clinic_prefix="sim-" if connect else "",
        command="journey simulate " + shlex.join(sys.argv[2:] if len(sys.argv) > 2 else []),
    )

    async def main() -> int:
        stack_cm = connected_stack(settings) if connect else own_stack(settings, keep=keep)
        with console.status("Starting the stack…" if not connect else "Connecting…"):
            stack = await stack_cm.__aenter__()
        try:
            where = "the running stack" if connect else "a stack of its own"
            console.print(
                f"Simulating {patients} patients, {first_day} + {months} months, on {where} "
                f"(time scale {time_scale:,.0f}: a simulated day every "
                f"{86400 / time_scale:.2f} s)."
            )
            if keep and stack.folder is not None:
                console.print(f"Stack folder: {stack.folder}")
            result = await run_simulation(stack, config, console, live=not no_live)
        finally:
            await stack_cm.__aexit__(None, None, None)
        r = result.data.run
        console.print(
            f"Report: {result.paths['report']} (wall {r['wall_s']} s, "
            f"{r.get('cpu_ms_per_journey_product', '—')} ms CPU per journey)"
        )
        for name, count in result.audit.counts.items():
            mark = "[green]✓[/green]" if not count else "[red]✗[/red]"
            console.print(f"  {mark} audit {name}: {'n/a' if count is None else count}")
        if not result.audit.clean:
            err_console.print(
                "error: the audit found breaches of the clinical rules (see the report)"
            )
            return ERROR
        return OK

    _run_long(main)


def register(app: typer.Typer) -> None:
    """Add ``simulate`` to the ``journey`` app."""
    app.command("simulate")(simulate)
