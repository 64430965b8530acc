"""``journey booking …``: a clinic's own booking system (docs/booking-systems.md).

* ``booking register CLINIC --url URL [--webhook-url U] [--secret whsec_…|--integration NAME]
  [--event-type journey.x …] [--description D]``: register it (replacing an earlier one) and
  subscribe its webhook URL to the session windows; prints both secrets once.
* ``booking show CLINIC``, ``booking disable CLINIC``.
* ``booking map-patient CLINIC EXTERNAL_ID PATIENT_ID``: the booking system's patient id → ours.
* ``booking appointments CLINIC [--patient P]``, ``booking events CLINIC [--status S]``.

The clinic file's ``[clinic] booking = "external"`` makes its journeys publish windows instead
of booking by themselves; ``show`` prints that setting next to the registration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.codes import BAD_INPUT, NOT_FOUND
from cli.journeys import JsonOpt, _emit, _fail, _run

if TYPE_CHECKING:
    from rich.table import Table

    from api.service import JourneyService

__all__ = ["register"]

LimitOpt = Annotated[int, typer.Option(min=1, max=500, help="How many rows (newest first).")]


def _clinic(clinic_id: str) -> str:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", clinic_id):
        _fail(f"{clinic_id!r} is not a clinic id", BAD_INPUT)
    return clinic_id


def _rows_table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> Table:
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*("" if r.get(c) is None else str(r.get(c)) for c in columns))
    return table


def register(app: typer.Typer) -> None:
    """Add the ``booking`` command group."""
    booking = typer.Typer(help="A clinic's own booking system.", no_args_is_help=True)

    @booking.command("register")
    def register_cmd(
        clinic: str,
        url: Annotated[str, typer.Option("--url", help="The booking system's base URL.")],
        webhook_url: Annotated[
            str | None,
            typer.Option(help="Where the session windows are POSTed (default: --url)."),
        ] = None,
        secret: Annotated[
            str | None,
            typer.Option(help="The whsec_ secret it signs its events with (default: new)."),
        ] = None,
        integration: Annotated[
            str | None,
            typer.Option(help="Use this JOURNEY_INTEGRATION_SECRETS entry instead of --secret."),
        ] = None,
        event_type: Annotated[
            list[str] | None,
            typer.Option(help="A journey event type it hears (repeat; default: the adapter's)."),
        ] = None,
        description: Annotated[str, typer.Option(help="A note for staff.")] = "",
        as_json: JsonOpt = False,
    ) -> None:
        """Register the clinic's booking system and subscribe it to the session windows; prints
        its secrets once."""
        import pydantic

        from api.booking.registration import BookingSystemIn, register_system

        clinic_id = _clinic(clinic)
        try:
            body = BookingSystemIn(
                base_url=url,
                webhook_url=webhook_url,
                secret=secret,
                integration=integration,
                event_types=event_type or None,
                description=description,
            )
        except pydantic.ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in err.errors(include_url=False)
            )
            _fail(problems, BAD_INPUT)

        async def work(service: JourneyService) -> dict[str, Any]:
            return (await register_system(service, clinic_id, body)).model_dump(mode="json")

        out = _run(work)

        def text() -> str:
            lines = [
                f"booking system of {out['clinic_id']}: {out['adapter']} at {out['base_url']}",
                f"windows and journey events go to {out['webhook_url']} "
                f"(subscriber {out['subscriber_id']}): {', '.join(out['event_types'])}",
                f"outbound secret (verify our webhooks with it; shown once): "
                f"{out['outbound_secret']}",
            ]
            if out["inbound_secret"]:
                lines.append(
                    f"inbound secret (sign your events with it; shown once): {out['inbound_secret']}"
                )
            else:
                lines.append(f"its events are signed with integration {out['integration']!r}")
            lines.append(f"events: POST /api/booking/{out['clinic_id']}/events")
            if out["clinic_booking"] != "external":
                lines.append(
                    f"note: clinic {out['clinic_id']} has booking = {out['clinic_booking']!r}; "
                    'set booking = "external" in its clinic file for windows to be published'
                )
            return "\n".join(lines)

        _emit(out, as_json, text)

    @booking.command("show")
    def show(clinic: str, as_json: JsonOpt = False) -> None:
        """The clinic's booking system (no secrets)."""
        clinic_id = _clinic(clinic)

        async def work(service: JourneyService) -> dict[str, Any] | None:
            from api.booking import store
            from api.booking.registration import BookingSystemOut, describe

            reg = await service.db(store.get_registration(service.pool, clinic_id))
            if reg is None:
                return None
            return BookingSystemOut(**await describe(service, reg)).model_dump(mode="json")

        out = _run(work)
        if out is None:
            _fail(f"clinic {clinic_id} has no booking system registered", NOT_FOUND)
        _emit(out, as_json, lambda: "\n".join(f"{k}: {v}" for k, v in out.items()))

    @booking.command("disable")
    def disable(clinic: str, as_json: JsonOpt = False) -> None:
        """Stop taking its events and sending it windows."""
        clinic_id = _clinic(clinic)

        async def work(service: JourneyService) -> dict[str, Any] | None:
            from api.booking import store

            reg = await service.db(store.disable(service.pool, clinic_id))
            return None if reg is None else {"clinic_id": clinic_id, "disabled_at": reg.disabled_at}

        out = _run(work)
        if out is None:
            _fail(f"clinic {clinic_id} has no booking system registered", NOT_FOUND)
        _emit(out, as_json, lambda: f"booking system of {clinic_id} disabled")

    @booking.command("map-patient")
    def map_patient(
        clinic: str, external_id: str, patient_id: str, as_json: JsonOpt = False
    ) -> None:
        """Map the booking system's patient id to ours (a patient of this clinic)."""
        from workflows.bounds import check_text

        clinic_id = _clinic(clinic)
        try:
            check_text(external_id)
        except ValueError:
            _fail("EXTERNAL_ID has a control character", BAD_INPUT)
        if not 1 <= len(external_id) <= 200:
            _fail("EXTERNAL_ID must be 1–200 characters", BAD_INPUT)

        async def work(service: JourneyService) -> dict[str, Any]:
            from api.booking import store
            from api.service import InvalidRequest

            found = await service.db(store.journey_of(service.pool, patient_id))
            if found is None or found[0] != clinic_id:
                raise InvalidRequest(
                    "patient_id", "unknown_patient", f"No patient {patient_id} in {clinic_id}."
                )
            try:
                written = await service.db(
                    store.map_patient(service.pool, clinic_id, external_id, patient_id, "staff")
                )
            except store.IdConflict as err:
                raise InvalidRequest("external_id", "id_conflict", str(err)) from None
            return {
                "clinic_id": clinic_id,
                "external_patient_id": external_id,
                "patient_id": patient_id,
                "new": written,
            }

        out = _run(work)
        _emit(out, as_json, lambda: f"{external_id} → {patient_id} ({clinic_id})")

    @booking.command("appointments")
    def appointments(
        clinic: str,
        patient: Annotated[str | None, typer.Option(help="Only this patient.")] = None,
        limit: LimitOpt = 100,
        as_json: JsonOpt = False,
    ) -> None:
        """The booking system's appointments mapped to our sessions."""
        clinic_id = _clinic(clinic)

        async def work(service: JourneyService) -> list[dict[str, Any]]:
            from api.booking import store

            return await service.db(
                store.list_appointments(service.pool, clinic_id, patient, limit, 0)
            )

        rows = _run(work)
        columns = [
            "external_appointment_id",
            "patient_id",
            "course_number",
            "session_number",
            "status",
            "starts_at",
            "outcome",
        ]
        _emit(rows, as_json, lambda: _rows_table(f"appointments of {clinic_id}", rows, columns))

    @booking.command("events")
    def events(
        clinic: str,
        status: Annotated[
            str | None, typer.Option(help="applied, duplicate, anomaly or refused.")
        ] = None,
        limit: LimitOpt = 100,
        as_json: JsonOpt = False,
    ) -> None:
        """The signed events the booking system sent, with what became of each."""
        clinic_id = _clinic(clinic)
        if status is not None and status not in ("applied", "duplicate", "anomaly", "refused"):
            _fail("--status must be applied, duplicate, anomaly or refused", BAD_INPUT)

        async def work(service: JourneyService) -> list[dict[str, Any]]:
            from api.booking import store

            return await service.db(store.list_events(service.pool, clinic_id, status, limit, 0))

        rows = _run(work)
        for r in rows:
            r["reasons"] = "; ".join(x.get("message", "") for x in r.get("reasons") or [])
        columns = [
            "received_at",
            "webhook_id",
            "event_type",
            "external_appointment_id",
            "patient_id",
            "session_number",
            "status",
            "http_status",
            "reasons",
        ]
        _emit(rows, as_json, lambda: _rows_table(f"booking events of {clinic_id}", rows, columns))

    app.add_typer(booking, name="booking")
