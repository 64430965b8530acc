"""``journey plan``: plan a course from the command line, with the clinic's rules.

Usage::

    journey plan --pore-size large --from 2027-04-20 --clinic examples/clinic.toml
    journey plan --pore-size moderate --timezone Europe/Paris --hemisphere north \\
        --trip 2027-05-01:2027-05-10 --conservative --json

Bad input (unknown grade, a malformed date or trip, an unknown zone or hemisphere, an
unreadable or invalid clinic file) prints one line per problem on stderr starting with
``error: `` and exits with code 2, never a traceback.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.codes import BAD_INPUT

if TYPE_CHECKING:
    from workflows.planner import CoursePlan
    from workflows.protocol import ClinicProtocol, DateRange

__all__ = ["register"]


class _BadInput(Exception):
    """Input the user must fix; each line is printed after ``error: ``."""


def _parse_date(text: str, what: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise _BadInput(f"{what} {text!r} is not a date; use YYYY-MM-DD") from None


def _parse_trip(text: str) -> DateRange:
    from workflows.protocol import DateRange

    parts = text.split(":")
    if len(parts) != 2:
        raise _BadInput(f"--trip {text!r} must be START:END, e.g. 2027-05-01:2027-05-10")
    start = _parse_date(parts[0], "--trip start")
    end = _parse_date(parts[1], "--trip end")
    if end < start:
        raise _BadInput(f"--trip {text!r} ends before it starts")
    return DateRange(start=start, end=end)


def _clinic_protocol(
    clinic_file: str | None, timezone: str | None, hemisphere: str | None
) -> ClinicProtocol:
    from workflows.protocol import clinic_protocol_from_dict, load_clinic_protocol

    if clinic_file is not None:
        if timezone is not None or hemisphere is not None:
            raise _BadInput("use either --clinic or --timezone/--hemisphere, not both")
        return load_clinic_protocol(clinic_file)
    clinic: dict[str, Any] = {}
    if timezone is not None:
        clinic["timezone"] = timezone
    if hemisphere is not None:
        clinic["hemisphere"] = hemisphere
    return clinic_protocol_from_dict({"clinic": clinic}, source="command line")


def _plan_json(plan: CoursePlan) -> str:
    def iso(d: date | None) -> str | None:
        return d.isoformat() if d is not None else None

    return json.dumps(
        {
            "requested_from": plan.requested_from.isoformat(),
            "sessions": [d.isoformat() for d in plan.sessions],
            "starts_on": iso(plan.starts_on),
            "last_session_on": iso(plan.last_session_on),
            "spf_until": iso(plan.spf_until),
            "review_on": iso(plan.review_on),
            "waiting_reason": plan.waiting_reason,
            "reasons": [r.model_dump() for r in plan.reasons],
            "interval_days": list(plan.interval_days),
            "conservative": plan.conservative,
            "protocol_version": plan.protocol_version,
        },
        ensure_ascii=False,
    )


def _print_plan(plan: CoursePlan, grade: str, cp: ClinicProtocol) -> None:
    from rich.console import Console
    from rich.table import Table

    from workflows.reasons import format_weekday_date

    console = Console()
    lo, hi = plan.interval_days
    title = (
        f"{len(plan.sessions)} sessions for {grade} pores at {cp.clinic.name} "
        f"(interval {lo}–{hi} days{', conservative' if plan.conservative else ''})"
    )
    if not plan.sessions:
        console.print("No course could be planned.", markup=False)
    else:
        table = Table(title=title)
        table.add_column("#", justify="right")
        table.add_column("Date")
        table.add_column("Interval", justify="right")
        previous: date | None = None
        for number, day in enumerate(plan.sessions, start=1):
            gap = "—" if previous is None else f"{(day - previous).days} days"
            table.add_row(str(number), format_weekday_date(day), gap)
            previous = day
        console.print(table)
    lines = [
        ("Starts on", plan.starts_on),
        ("Last session", plan.last_session_on),
        ("SPF 50 until", plan.spf_until),
        ("Review on", plan.review_on),
    ]
    for label, value in lines:
        if value is not None:
            console.print(f"{label}: {format_weekday_date(value)}", markup=False, highlight=False)
    if plan.waiting_reason:
        console.print(f"Waiting: {plan.waiting_reason}", markup=False, highlight=False)


def plan_command(
    pore_size: Annotated[
        str | None,
        typer.Option("--pore-size", help="Pore-size grade: small, moderate or large."),
    ] = None,
    from_: Annotated[
        str | None,
        typer.Option("--from", help="Earliest date, YYYY-MM-DD (default: today at the clinic)."),
    ] = None,
    clinic_file: Annotated[
        str | None,
        typer.Option("--clinic", help="Clinic file (.toml, .yaml, .yml or .json)."),
    ] = None,
    timezone: Annotated[
        str | None,
        typer.Option("--timezone", help="IANA time zone, e.g. Europe/Paris (without --clinic)."),
    ] = None,
    hemisphere: Annotated[
        str | None,
        typer.Option("--hemisphere", help="north or south (without --clinic)."),
    ] = None,
    trip: Annotated[
        list[str] | None,
        typer.Option("--trip", help="Planned trip START:END (inclusive); repeat for more."),
    ] = None,
    conservative: Annotated[
        bool,
        typer.Option("--conservative", help="Conservative intervals (Fitzpatrick IV–VI)."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Plan a course: session dates, SPF 50 window and review date, with the waiting reason."""
    from workflows.calendar import clinic_today
    from workflows.planner import plan_course
    from workflows.protocol import ProtocolFileError

    try:
        if pore_size is None:
            raise _BadInput("--pore-size is required (small, moderate or large)")
        cp = _clinic_protocol(clinic_file, timezone, hemisphere)
        try:
            sessions = cp.protocol.sessions_for(pore_size)
        except ValueError as error:
            raise _BadInput(str(error)) from None
        trips = [_parse_trip(t) for t in trip or []]
        earliest = (
            _parse_date(from_, "--from")
            if from_ is not None
            else clinic_today(datetime.now(UTC), cp.clinic.timezone)
        )
        plan = plan_course(earliest, sessions, cp, trips=trips, conservative=conservative)
    except ProtocolFileError as error:
        for problem in error.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(BAD_INPUT) from None
    except _BadInput as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(BAD_INPUT) from None
    if as_json:
        typer.echo(_plan_json(plan))
    else:
        _print_plan(plan, pore_size, cp)


def _group_callback() -> None:
    """Patient-journey tools for staff and operators."""


def register(app: typer.Typer) -> None:
    """Add the ``plan`` command to ``app``.

    Typer runs a single-command app *as* that command (``journey --pore-size …``), which would
    break ``journey plan …`` while ``plan`` is the only command. So if ``app`` has no callback
    yet, a no-op one is registered to keep it a command group; an app that defines its own
    ``@app.callback()`` (before or after) is unaffected.
    """
    if app.registered_callback is None:
        app.callback()(_group_callback)
    app.command("plan")(plan_command)
