"""``journey`` commands for staff and operators, over the same :class:`JourneyService` as the API.

Settings come from the environment (``TEMPORAL_ADDRESS``, ``DATABASE_URL``…); without
``DATABASE_URL`` the embedded server's data folder is used, like the worker. Every command takes
``--json``; otherwise it prints rich tables. Errors are one line on stderr starting with
``error: `` and a non-zero exit code, never a traceback:

* 2: bad input (a field breaks a rule)       * 4: refused by the journey (every reason)
* 3: no such journey or patient              * 5: Temporal or PostgreSQL unavailable

The service, the schemas and the protocol are imported inside the commands, so that
``journey --help`` and shell completion never load Temporal, FastAPI or asyncpg.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from cli.codes import BAD_INPUT, NOT_FOUND, REFUSED, UNAVAILABLE

if TYPE_CHECKING:
    from rich.table import Table

    from api.schemas import TripIn
    from api.service import JourneyService

__all__ = ["register"]

T = TypeVar("T")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the timeline).")]


class _BadInput(ValueError):
    """Input the user must fix."""


@asynccontextmanager
async def _service() -> AsyncIterator[JourneyService]:
    from api.service import JourneyService, ServiceUnavailable, TemporalConnector
    from worker.database import create_pool, database_url, migrate
    from worker.settings import Settings

    # Fresh settings each time (not the cached get_settings()): one command, one environment.
    settings = Settings()
    try:
        dsn, embedded = await database_url(settings)
        pool = await create_pool(dsn, min_size=1, max_size=2)
    except (OSError, RuntimeError) as err:
        raise ServiceUnavailable(f"PostgreSQL is not reachable ({type(err).__name__}).") from None
    try:
        await migrate(pool)
        yield JourneyService(TemporalConnector(settings), pool, settings)
    finally:
        await pool.close()
        if embedded is not None:
            embedded.stop()


def _run(work: Callable[[JourneyService], Awaitable[T]]) -> T:
    """Run one service call; every expected failure becomes one line and an exit code."""

    async def main() -> T:
        async with _service() as service:
            return await work(service)

    from api.service import (
        FactKept,
        InvalidRequest,
        JourneyNotFound,
        RequestRefused,
        ServiceError,
        ServiceUnavailable,
    )

    exit_codes: dict[type[ServiceError], int] = {
        InvalidRequest: BAD_INPUT,
        JourneyNotFound: NOT_FOUND,
        RequestRefused: REFUSED,
        ServiceUnavailable: UNAVAILABLE,
    }
    try:
        return asyncio.run(main())
    except FactKept as err:
        message = "; ".join(r.message for r in err.reasons)
        _fail(
            f"not applied: kept for staff as anomaly #{err.result.anomaly_id} "
            f"(journey {err.result.stage}): {message}",
            REFUSED,
        )
    except RequestRefused as err:
        message = "; ".join(r.message for r in err.reasons)
        _fail(f"refused ({err.error_type}): {message}", REFUSED)
    except ServiceError as err:
        _fail(err.message, exit_codes.get(type(err), 1))
    except (_BadInput, ValueError) as err:
        _fail(_one_line(err), BAD_INPUT)
    except OSError as err:
        _fail(f"cannot reach a service: {type(err).__name__}: {err}", UNAVAILABLE)
    raise AssertionError("unreachable")


def _one_line(err: Exception) -> str:
    import pydantic

    if isinstance(err, pydantic.ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in err.errors()
        )
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _emit(data: Any, as_json: bool, table: Callable[[], Table | str]) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    from rich.console import Console

    Console().print(table())


def _parse_date(text: str, what: str) -> date:
    from workflows.bounds import check_date

    try:
        return check_date(date.fromisoformat(text))
    except ValueError:
        raise _BadInput(
            f"{what} {text!r} is not a date from 1900 to 2100; use YYYY-MM-DD"
        ) from None


def _parse_trip(text: str) -> TripIn:
    import pydantic

    from api.schemas import TripIn

    start, sep, end = text.partition(":")
    if not sep:
        raise _BadInput(f"--trip {text!r} must be START:END, e.g. 2027-05-01:2027-05-10")
    try:
        return TripIn(start=_parse_date(start, "--trip start"), end=_parse_date(end, "--trip end"))
    except pydantic.ValidationError as err:
        raise _BadInput(f"--trip {text!r}: {err.errors()[0]['msg']}") from None


def _control_table(result: dict[str, Any]) -> Table:
    from rich.table import Table

    t = Table("stage", "previous stage")
    t.add_row(result["stage"], result["previous_stage"])
    return t


def register(app: typer.Typer) -> None:
    """Add the journey commands to the ``journey`` Typer app."""

    @app.command("enrol")
    def enrol(
        name: Annotated[str, typer.Option(help="Patient's full name (stored in PostgreSQL only).")],
        grade: Annotated[str, typer.Option("--grade", help="Pore size: small, moderate, large.")],
        email: Annotated[str | None, typer.Option(help="E-mail address.")] = None,
        phone: Annotated[str | None, typer.Option(help="Phone number.")] = None,
        channel: Annotated[str, typer.Option(help="Preferred channel: email or sms.")] = "email",
        language: Annotated[
            str | None,
            typer.Option(
                help="The patient's language: en, en-US, de, fr, es (default: the clinic's)."
            ),
        ] = None,
        clinic: Annotated[str, typer.Option(help="Clinic id.")] = "default",
        numbing: Annotated[bool, typer.Option("--numbing/--no-numbing")] = False,
        trip: Annotated[list[str] | None, typer.Option(help="Planned trip START:END.")] = None,
        time_scale: Annotated[float, typer.Option(help="Simulation clock (1 = real time).")] = 1.0,
        idempotency_key: Annotated[
            str | None,
            typer.Option(
                help="Makes a retry safe: the same key answers the same patient and journey."
            ),
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Enrol a patient and start their journey; prints the patient id and link."""
        import pydantic
        from rich.table import Table

        from api import schemas

        try:
            request = schemas.EnrolRequest(
                patient=schemas.PatientIn(
                    full_name=name,
                    email=email,
                    phone=phone,
                    preferred_channel=channel,
                    language=language,
                ),
                clinic_id=clinic,
                pore_grade=grade,
                numbing_cream=numbing,
                trips=[_parse_trip(t) for t in trip or []],
                time_scale=time_scale,
            )
        except (pydantic.ValidationError, _BadInput) as err:
            _fail(_one_line(err), BAD_INPUT)
        if idempotency_key is not None:
            try:
                from workflows.bounds import IdempotencyKeyText

                key = pydantic.TypeAdapter(IdempotencyKeyText).validate_python(idempotency_key)
            except pydantic.ValidationError as err:
                _fail(f"--idempotency-key: {err.errors()[0]['msg']}", BAD_INPUT)
        else:
            key = None
        result = _run(lambda s: s.enrol(request, caller="cli", idempotency_key=key))
        data = result.model_dump(mode="json")

        def table() -> Table:
            t = Table("patient", "workflow", "clinic", "link")
            t.add_row(result.patient_id, result.workflow_id, result.clinic_id, result.patient_link)
            return t

        _emit(data, as_json, table)

    @app.command("list")
    def list_journeys(
        stage: Annotated[str | None, typer.Option(help="Only this stage.")] = None,
        clinic: Annotated[str | None, typer.Option(help="Only this clinic.")] = None,
        flag: Annotated[str | None, typer.Option(help="Only journeys with this flag.")] = None,
        before: Annotated[
            datetime | None, typer.Option(help="Next action before this time.")
        ] = None,
        limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
        offset: Annotated[int, typer.Option(min=0)] = 0,
        as_json: JsonOpt = False,
    ) -> None:
        """List journeys from the read model."""
        from rich.table import Table

        from api import schemas

        if before is not None and before.tzinfo is None:
            before = before.replace(tzinfo=UTC)
        rows, total = _run(
            lambda s: s.list(
                stage=stage,
                clinic_id=clinic,
                flag=flag,
                next_action_before=before,
                limit=limit,
                offset=offset,
            )
        )
        page = schemas.JourneyList(
            data=[schemas.JourneySummary.model_validate(r) for r in rows], count=total
        )

        def table() -> Table:
            t = Table(
                "patient",
                "name",
                "clinic",
                "stage",
                "sessions",
                "next action",
                "at",
                "flags",
                title=f"{len(rows)} of {total} journeys",
            )
            for j in page.data:
                t.add_row(
                    j.patient_id,
                    j.patient_name or "",
                    j.clinic_id,
                    j.stage,
                    f"{j.sessions_done}/{j.sessions_planned}",
                    j.next_action or "",
                    j.next_action_at.isoformat(timespec="minutes") if j.next_action_at else "",
                    ", ".join(j.flags),
                )
            return t

        _emit(page.model_dump(mode="json"), as_json, table)

    @app.command("status")
    def status(patient: str, as_json: JsonOpt = False) -> None:
        """A journey's live status (stage, sessions, next action, flags)."""
        from rich.table import Table

        st = _run(lambda s: s.status(patient))

        def table() -> Table:
            t = Table(
                "session",
                "date",
                "starts at",
                "state",
                "checked",
                "reaction",
                title=f"{st.patient_id}: {st.stage}"
                + (f" — next: {st.next_action}" if st.next_action else "")
                + (f" ({', '.join(st.flags)})" if st.flags else ""),
            )
            for x in st.sessions:
                t.add_row(
                    str(x.number),
                    x.planned_on.isoformat(),
                    x.starts_at.isoformat(timespec="minutes") if x.starts_at else "",
                    x.state,
                    "yes" if x.pre_session_checked else "",
                    x.reaction or "",
                )
            return t

        _emit(st.model_dump(mode="json"), as_json, table)

    @app.command("complete-session")
    def complete_session(
        patient: str,
        session: Annotated[int, typer.Option(min=1, help="Session number.")],
        at: Annotated[
            datetime | None, typer.Option(help="When it was completed (default: now).")
        ] = None,
        key: Annotated[str | None, typer.Option(help="Idempotency key (default: new).")] = None,
        source: Annotated[str, typer.Option(help="Who reports it.")] = "cli",
        as_json: JsonOpt = False,
    ) -> None:
        """Report that a session happened (applied once per idempotency key).

        Exits 4 when the journey cannot apply it now: it is then kept for staff (an anomaly).
        """
        when = at or datetime.now(UTC)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        idem = key or f"cli-{uuid.uuid4()}"
        result = _run(
            lambda s: s.complete_session(
                patient, session, when, idempotency_key=idem, source=source
            )
        )
        data = {
            "accepted": True,
            "outcome": result.outcome,
            "patient_id": patient,
            "session_number": session,
            "idempotency_key": idem,
        }
        done = "was already applied" if result.outcome == "duplicate" else "applied"
        _emit(data, as_json, lambda: f"Session {session} of {patient}: {done} (key {idem}).")

    @app.command("reschedule")
    def reschedule(
        patient: str,
        session: Annotated[int, typer.Option(min=1, help="Session number.")],
        to: Annotated[str, typer.Option("--date", help="New date, YYYY-MM-DD.")],
        at: Annotated[str | None, typer.Option("--time", help="Local time, HH:MM.")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Move a session (refused with every rule it breaks)."""
        from rich.table import Table

        try:
            new_date = _parse_date(to, "--date")
            new_time = time.fromisoformat(at) if at else None
        except ValueError as err:
            message = str(err) if isinstance(err, _BadInput) else f"--time {at!r} is not HH:MM"
            _fail(message, BAD_INPUT)
        result = _run(lambda s: s.reschedule(patient, session, new_date, new_time))

        def table() -> Table:
            t = Table("session", "date", "state", title=f"Session {session} moved")
            for x in result.sessions:
                t.add_row(str(x.number), x.planned_on.isoformat(), x.state)
            return t

        _emit(result.model_dump(mode="json"), as_json, table)

    @app.command("pause")
    def pause(patient: str, reason: ReasonOpt, as_json: JsonOpt = False) -> None:
        """Pause a journey."""
        r = _run(lambda s: s.pause(patient, reason)).model_dump(mode="json")
        _emit(r, as_json, lambda: _control_table(r))

    @app.command("resume")
    def resume(patient: str, reason: ReasonOpt, as_json: JsonOpt = False) -> None:
        """Resume a paused journey."""
        r = _run(lambda s: s.resume(patient, reason)).model_dump(mode="json")
        _emit(r, as_json, lambda: _control_table(r))

    @app.command("withdraw")
    def withdraw(patient: str, reason: ReasonOpt, as_json: JsonOpt = False) -> None:
        """End a journey for good."""
        r = _run(lambda s: s.withdraw(patient, reason)).model_dump(mode="json")
        _emit(r, as_json, lambda: _control_table(r))

    @app.command("review")
    def review(
        patient: str,
        outcome: Annotated[str, typer.Option(help="complete or further_course.")],
        sessions: Annotated[int | None, typer.Option(help="Sessions of a further course.")] = None,
        note: Annotated[str | None, typer.Option(help="Id of the clinician's note.")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Record the 3-month review (as a clinician)."""
        import pydantic
        from rich.table import Table

        from workflows.messages import ReviewRequest

        try:
            request = ReviewRequest(
                outcome=outcome,
                further_sessions=sessions,
                note_ref=note,
                reviewed_by="clinician",
            )
        except pydantic.ValidationError as err:
            _fail(_one_line(err), BAD_INPUT)
        r = _run(lambda s: s.review(patient, request)).model_dump(mode="json")

        def table() -> Table:
            t = Table("outcome", "stage", "next course")
            t.add_row(r["outcome"], r["stage"], str(r["next_course_number"] or ""))
            return t

        _emit(r, as_json, table)

    @app.command("patient-link")
    def patient_link(patient: str, as_json: JsonOpt = False) -> None:
        """A fresh link for the patient (a credential: send it to the patient only)."""
        link = _run(lambda s: s.patient_link(patient))
        _emit({"patient_id": patient, "patient_link": link}, as_json, lambda: link)

    from cli import access  # staff members and API tokens (issue 16)

    access.register(app)
