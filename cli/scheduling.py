"""``journey resources …``: a clinic's built-in scheduling (docs/scheduling.md).

* ``resources list CLINIC [--json]``: devices, rooms, practitioners (with their hours), the
  default hours, closures and slot rules.
* ``resources load FILE``: the clinic file's ``[scheduling]`` section into PostgreSQL (the
  clinic itself must exist: ``journey clinic add FILE`` adds both).
* ``resources closure-add CLINIC --from D --to D --reason R [--resource ID]``,
  ``resources closure-remove CLINIC ID``.
* ``resources free CLINIC --from D [--days N] [--grade G]``: free start times (capacity only,
  no clinical rule): what a clinic manager checks after adding a laser.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.codes import BAD_INPUT, NOT_FOUND
from cli.journeys import JsonOpt, _emit, _fail, _parse_date, _run

if TYPE_CHECKING:
    from rich.table import Table

    from api.service import JourneyService
    from scheduling.resources import SchedulingSetup

__all__ = ["register"]


def _clinic(clinic_id: str) -> str:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", clinic_id):
        _fail(f"{clinic_id!r} is not a clinic id", BAD_INPUT)
    return clinic_id


def _hours_text(hours: Any) -> str:
    from scheduling.resources import WEEKDAYS

    if hours is None:
        return "clinic hours"
    parts = [
        f"{name} {', '.join(r.text for r in hours.on(i))}"
        for i, name in enumerate(WEEKDAYS)
        if hours.on(i)
    ]
    return "; ".join(parts) or "never"


def _setup_table(clinic_id: str, got: SchedulingSetup) -> Table:
    from rich.table import Table

    table = Table(
        title=f"{clinic_id}: {got.turnover_minutes} min turnover, starts every "
        f"{got.step_minutes} min, slots {dict(got.slot_minutes)}, needs {dict(got.needs)}; "
        f"hours {_hours_text(got.hours)}"
    )
    for column in ("resource", "kind", "label", "active", "hours"):
        table.add_column(column)
    for r in got.resources:
        table.add_row(
            r.resource_id, r.kind, r.label, "yes" if r.active else "no", _hours_text(r.hours)
        )
    for c in got.closures:
        table.add_row(
            f"closure #{c.id}",
            "closed",
            c.reason,
            c.resource_id or "whole clinic",
            f"{c.starts_on} – {c.ends_on}",
        )
    return table


def register(app: typer.Typer) -> None:
    """Add the ``resources`` command group."""
    resources = typer.Typer(
        help="A clinic's lasers, rooms, practitioners, hours and closures (built-in scheduling).",
        no_args_is_help=True,
    )

    @resources.command("list")
    def list_cmd(clinic: str, as_json: JsonOpt = False) -> None:
        """The clinic's scheduling set-up."""
        clinic_id = _clinic(clinic)

        async def work(service: JourneyService) -> SchedulingSetup | None:
            from scheduling import store

            if (
                await service.db(
                    service.pool.fetchval("SELECT 1 FROM clinics WHERE clinic_id = $1", clinic_id)
                )
                is None
            ):
                return None
            return await service.db(store.get_scheduling(service.pool, clinic_id))

        got = _run(work)
        if got is None:
            _fail(f"no clinic {clinic_id!r}", NOT_FOUND)
        _emit(got.model_dump(mode="json"), as_json, lambda: _setup_table(clinic_id, got))

    @resources.command("load")
    def load_cmd(
        file: Annotated[Path, typer.Argument(help="Clinic file: .toml, .yaml/.yml or .json.")],
    ) -> None:
        """Load the clinic file's scheduling section (resources no longer in it are
        deactivated; closures added by staff are kept)."""
        from scheduling.resources import SchedulingFileError, scheduling_from_file
        from workflows.protocol import ProtocolFileError, load_clinic_protocol

        try:
            cp = load_clinic_protocol(file)
            section = scheduling_from_file(file)
        except (ProtocolFileError, SchedulingFileError) as error:
            for line in error.problems:
                typer.echo(f"error: {line}", err=True)
            raise typer.Exit(BAD_INPUT) from None
        if section is None:
            _fail(f"{file} has no scheduling section", BAD_INPUT)
        clinic_id = cp.clinic.clinic_id

        async def work(service: JourneyService) -> bool:
            from scheduling import store

            if (
                await service.db(
                    service.pool.fetchval("SELECT 1 FROM clinics WHERE clinic_id = $1", clinic_id)
                )
                is None
            ):
                return False
            await service.db(store.sync_clinic(service.pool, clinic_id, section))
            return True

        if not _run(work):
            _fail(
                f"no clinic {clinic_id!r}: add it first with `journey clinic add {file}`", NOT_FOUND
            )
        typer.echo(
            f"Clinic {clinic_id}: {len(section.resources)} resource(s), "
            f"{len(section.closures)} closure(s) loaded."
        )

    @resources.command("closure-add")
    def closure_add(
        clinic: str,
        starts: Annotated[str, typer.Option("--from", help="First closed day, YYYY-MM-DD.")],
        reason: Annotated[str, typer.Option("--reason", "-r", help="Why (shown to staff).")],
        ends: Annotated[
            str | None, typer.Option("--to", help="Last closed day (default: --from).")
        ] = None,
        resource: Annotated[
            str | None, typer.Option("--resource", help="One resource only (default: the clinic).")
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Close the clinic (or one resource) for whole days."""
        import pydantic

        from scheduling.resources import Closure

        clinic_id = _clinic(clinic)
        try:
            first = _parse_date(starts, "--from")
            last = _parse_date(ends, "--to") if ends else first
            closure = Closure(starts_on=first, ends_on=last, reason=reason, resource_id=resource)
        except (ValueError, pydantic.ValidationError) as error:
            message = (
                error.errors()[0]["msg"]
                if isinstance(error, pydantic.ValidationError)
                else str(error)
            )
            _fail(message, BAD_INPUT)

        async def work(service: JourneyService) -> tuple[Closure, list[dict[str, Any]]] | str:
            from scheduling import store

            try:
                stored = await service.db(store.add_closure(service.pool, clinic_id, closure))
            except LookupError as error:
                return str(error)
            async with service.pool.acquire() as conn:
                held = await store.held_during(conn, clinic_id, stored)
            return stored, [{**dict(r), "starts_at": r["starts_at"].isoformat()} for r in held]

        got = _run(work)
        if isinstance(got, str):
            _fail(got, NOT_FOUND)
        stored, held = got

        def text() -> str:
            lines = [
                f"Closure #{stored.id}: {stored.starts_on} – {stored.ends_on} ({stored.reason})."
            ]
            if held:
                lines.append(
                    f"{len(held)} booked session(s) on those days are not moved; reschedule them:"
                )
                lines += [
                    f"  {h['patient_id']} session {h['session_number']} at {h['starts_at']}"
                    for h in held
                ]
            return "\n".join(lines)

        _emit({**stored.model_dump(mode="json"), "held_sessions": held}, as_json, text)

    @resources.command("closure-remove")
    def closure_remove(clinic: str, closure_id: int) -> None:
        """Remove a closure by its id (resources list shows it)."""
        clinic_id = _clinic(clinic)

        async def work(service: JourneyService) -> bool:
            from scheduling import store

            return await service.db(store.delete_closure(service.pool, clinic_id, closure_id))

        if not _run(work):
            _fail(f"no closure {closure_id} in clinic {clinic_id!r}", NOT_FOUND)
        typer.echo(f"Closure #{closure_id} removed.")

    @resources.command("free")
    def free_cmd(
        clinic: str,
        starts: Annotated[str, typer.Option("--from", help="First day, YYYY-MM-DD.")],
        days: Annotated[int, typer.Option(min=1, max=60, help="How many days.")] = 7,
        grade: Annotated[str, typer.Option(help="small, moderate or large.")] = "moderate",
        limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
        as_json: JsonOpt = False,
    ) -> None:
        """Free start times (hours, closures and reservations only: no clinical rule)."""
        clinic_id = _clinic(clinic)
        if grade not in ("small", "moderate", "large"):
            _fail("--grade must be small, moderate or large", BAD_INPUT)
        try:
            first = _parse_date(starts, "--from")
        except ValueError as error:
            _fail(str(error), BAD_INPUT)
        wanted = [first + timedelta(days=i) for i in range(days)]

        async def work(service: JourneyService) -> list[Any]:
            from scheduling import store

            return await service.db(
                store.free_times(service.pool, clinic_id, wanted, grade, limit, per_day=limit)
            )

        found = _run(work)

        def table() -> Table:
            from rich.table import Table

            t = Table(title=f"{clinic_id}: free times from {first} ({len(found)})")
            for c in ("day", "start", "resources"):
                t.add_column(c)
            for f in found:
                t.add_row(
                    str(f.on),
                    f"{f.local_time:%H:%M}",
                    ", ".join(r.resource_id for r in f.resources),
                )
            return t

        _emit([f.model_dump(mode="json") for f in found], as_json, table)

    app.add_typer(resources, name="resources")
