"""The process commands of ``journey``: ``dev``, ``worker``, ``dispatcher``, ``api``, ``migrate``
and ``clinic add``.

Long-running commands end through :func:`finish` (flush, then ``os._exit``): the interpreter can
crash at exit with ``PyGILState_Release`` after a Temporal worker ran (TEMPORAL-NOTES,
sdk-python#300), and a clean stop must exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from cli.codes import ERROR, OK

if TYPE_CHECKING:
    from worker.settings import Settings

__all__ = ["finish", "register"]

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False)


def finish(code: int) -> NoReturn:
    """Flush both streams and leave at once (see the module docstring for why)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"error: {message}", markup=False)
    finish(code)


def _settings(**overrides: object) -> Settings:
    from worker.settings import get_settings

    try:
        settings = get_settings()
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        _fail(f"invalid settings: {error}".splitlines()[0] + " (check the environment / .env)")
    if overrides:
        settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    return settings


def _bytecode_cache(settings: Settings) -> None:
    # The workflow sandbox re-imports the workflow modules for every run; without cached
    # bytecode (these machines set PYTHONDONTWRITEBYTECODE) they are compiled each time.
    # Write it under the data folder only, never next to the sources.
    if sys.pycache_prefix is None:
        sys.pycache_prefix = str(settings.journey_data_dir / "pycache")
    sys.dont_write_bytecode = False


def _run_long(main: Callable[[], Coroutine[Any, Any, int]]) -> NoReturn:
    """Run a command's coroutine; any error becomes one line; then :func:`finish`."""
    try:
        code = asyncio.run(main())
    except KeyboardInterrupt:  # a signal before the handlers were installed
        code = 0
    except Exception as error:  # one clear line, never a traceback
        _fail(f"{type(error).__name__}: {error}".splitlines()[0])
    finish(code)


def dev(
    demo: Annotated[
        bool, typer.Option("--demo", help="Enrol sample patients that move fast.")
    ] = False,
    time_scale: Annotated[
        float | None, typer.Option(help="Simulation clock of the demo journeys (default 30000).")
    ] = None,
    temporal_port: Annotated[
        int | None, typer.Option(help="Temporal frontend port (7233).")
    ] = None,
    ui_port: Annotated[int | None, typer.Option(help="Temporal UI port (8233).")] = None,
    api_port: Annotated[int | None, typer.Option(help="API port (8000).")] = None,
) -> None:
    """Run the whole stack: Temporal dev server, PostgreSQL, worker, dispatcher and API."""
    from worker.devstack import DEMO_TIME_SCALE, DevStackError, run_dev

    settings = _settings(temporal_ui_port=ui_port, api_port=api_port)
    if temporal_port is not None:
        host = settings.temporal_address.rpartition(":")[0] or "127.0.0.1"
        settings = settings.model_copy(update={"temporal_address": f"{host}:{temporal_port}"})
    _bytecode_cache(settings)

    async def main() -> int:
        try:
            return await run_dev(
                settings, console=console, demo=demo, time_scale=time_scale or DEMO_TIME_SCALE
            )
        except DevStackError as error:
            err_console.print(f"error: {error}", markup=False)
            return 1

    _run_long(main)


def worker() -> None:
    """Run the journey worker until SIGTERM/SIGINT (graceful shutdown)."""
    from worker.main import run_worker

    settings = _settings()
    _bytecode_cache(settings)

    async def main() -> int:
        await run_worker(settings)
        return 0

    _run_long(main)


def dispatcher() -> None:
    """Run the notification dispatcher until SIGTERM/SIGINT."""
    from worker.main import run_dispatcher

    settings = _settings()

    async def main() -> int:
        await run_dispatcher(settings)
        return 0

    _run_long(main)


def api(
    host: Annotated[str | None, typer.Option(help="Address to listen on (API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (API_PORT).")] = None,
) -> None:
    """Serve the HTTP API (``api.main:create_app``) with uvicorn until SIGTERM/SIGINT."""
    from worker.devstack import api_available

    settings = _settings()
    missing = api_available()
    if missing is not None:
        _fail(f"the API cannot start: {missing}")
    import uvicorn

    class _Server(uvicorn.Server):
        # uvicorn re-raises the signal it caught once it has stopped (exit -15 on SIGTERM);
        # our handlers stop it instead, so a graceful stop exits 0 like every other process.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    server = _Server(
        uvicorn.Config(
            "api.main:create_app",
            factory=True,
            host=host or settings.api_host,
            port=port or settings.api_port,
            log_config=None,
        )
    )

    async def main() -> int:
        from worker.main import setup_process, stop_on_signals
        from worker.telemetry import shutdown_telemetry

        # Logging, tracing (OTLP only when configured), metrics and asyncpg spans; uvicorn's
        # own loggers go through the same handler (log_config=None above).
        setup_process("api", settings)
        stop = asyncio.Event()
        remove_handlers = stop_on_signals(stop)

        async def stop_server() -> None:
            await stop.wait()
            server.should_exit = True  # finish open requests, run the lifespan shutdown

        stopper = asyncio.create_task(stop_server(), name="api-stop")
        try:
            await server.serve()
        finally:
            stopper.cancel()
            remove_handlers()
            shutdown_telemetry()  # flush batched spans before the process exits
        return OK if server.started else ERROR

    _run_long(main)


def migrate() -> None:
    """Apply the database migrations not applied yet (DATABASE_URL or the embedded server)."""
    from worker.main import open_database

    settings = _settings()

    async def main() -> int:
        # open_database migrates under the advisory lock; nothing else to do.
        async with open_database(settings):
            pass
        console.print("Database schema is up to date.")
        return 0

    _run_long(main)


clinic_app = typer.Typer(help="Clinics and their protocols.", no_args_is_help=True)


@clinic_app.command("add")
def clinic_add(
    file: Annotated[Path, typer.Argument(help="Clinic file: .toml, .yaml/.yml or .json.")],
) -> None:
    """Create or replace a clinic from FILE (journeys already running keep their protocol)."""
    from activities.clinic_messaging import (
        MessagingFileError,
        apply_messaging,
        messaging_from_file,
    )
    from activities.repository import upsert_clinic
    from scheduling.resources import SchedulingFileError, scheduling_from_file
    from scheduling.store import sync_clinic
    from worker.main import open_database
    from workflows.protocol import ProtocolFileError, load_clinic_protocol

    try:
        cp = load_clinic_protocol(file)
        section = scheduling_from_file(file)
        messaging = messaging_from_file(file)
    except (ProtocolFileError, SchedulingFileError, MessagingFileError) as error:
        for line in error.problems:
            err_console.print(f"error: {line}", markup=False)
        finish(2)
    settings = _settings()

    async def main() -> int:
        async with open_database(settings) as pool:
            await upsert_clinic(pool, cp)
            if section is not None:
                await sync_clinic(pool, cp.clinic.clinic_id, section)
            if messaging is not None:
                await apply_messaging(pool, cp.clinic.clinic_id, messaging)
        resources = (
            f"; {len(section.resources)} scheduling resource(s)" if section is not None else ""
        )
        console.print(
            f"Clinic {cp.clinic.clinic_id} ({cp.clinic.name}, {cp.clinic.timezone}) saved "
            f"with protocol {cp.protocol.version}{resources}."
        )
        return 0

    _run_long(main)


def register(app: typer.Typer) -> None:
    """Add the process commands to the ``journey`` app."""
    app.command("dev")(dev)
    app.command("worker")(worker)
    app.command("dispatcher")(dispatcher)
    app.command("api")(api)
    app.command("migrate")(migrate)
    app.add_typer(clinic_app, name="clinic")
