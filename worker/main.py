"""The long-running processes of the product: the journey worker and the notification dispatcher.

Both follow the same shape (habit K3): set up telemetry and logging, open the database (the
server of ``DATABASE_URL``, or the embedded one), migrate, build what runs, run it until a stop
``Event`` is set, then shut down in the reverse order and close the pool last, so in-flight
activities can still write while the worker drains.

``journey worker`` / ``journey dispatcher`` call these with no ``stop``: SIGTERM and SIGINT then
set an internal ``Event``. ``journey dev`` and the tests pass their own ``Event`` and own the
signals themselves.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
from opentelemetry.instrumentation.utils import suppress_instrumentation

from activities.dispatcher import MetricsHook, OutboxDispatcher, Outcome
from activities.repository import count_by_stage, ensure_default_clinic
from activities.store import build_activities
from activities.webhooks import WebhookDispatcher
from api.tokens import patient_link
from worker.client import connect_client
from worker.database import EmbeddedPostgres, create_pool, database_url, migrate
from worker.logging_setup import configure_logging
from worker.notifications import build_channel
from worker.registry import build_worker
from worker.settings import Settings
from worker.stuck import refresh_journeys_stuck
from worker.telemetry import (
    Metrics,
    get_metrics,
    instrument_asyncpg,
    setup_metrics,
    setup_tracing,
    shutdown_telemetry,
    temporal_interceptors,
    temporal_runtime,
)
from workflows.messages import CLOSED_STAGES

__all__ = [
    "notification_metrics",
    "open_database",
    "refresh_journeys_by_stage",
    "run_dispatcher",
    "run_on_own_loop",
    "run_worker",
    "setup_process",
    "stop_on_signals",
]

logger = logging.getLogger(__name__)

# How often the dispatcher re-reads the journeys-by-stage gauge: one GROUP BY on an indexed
# column, far below the cost of the outbox polling, and fresh enough for a dashboard.
STAGE_COUNT_INTERVAL_SECONDS = 30.0


def setup_process(service_name: str, settings: Settings) -> None:
    """Telemetry and logging for a process of the product (idempotent).

    Args:
        service_name: ``service.name`` of the traces and the ``service`` field of every log line.
        settings: Where ``LOG_LEVEL`` comes from.
    """
    configure_logging(service_name, settings.log_level)
    setup_tracing(service_name)
    setup_metrics(service_name)
    instrument_asyncpg()


def notification_metrics(metrics: Metrics | None = None) -> MetricsHook:
    """The dispatcher's metrics hook: ``notifications_sent`` and ``notifications_failed``.

    Every failed attempt counts as failed (``retry`` and ``failed``); ``lease_lost`` counts
    nothing, since the dispatcher that took the row over reports its outcome.
    """
    target = metrics or get_metrics()

    def hook(outcome: Outcome, kind: str, channel: str) -> None:
        if outcome == "sent":
            target.record_notification_sent(channel, kind)
        elif outcome in ("retry", "failed"):
            target.record_notification_failed(channel, kind)

    return hook


async def refresh_journeys_by_stage(
    pool: asyncpg.Pool,
    stop: asyncio.Event,
    *,
    metrics: Metrics | None = None,
    interval: float = STAGE_COUNT_INTERVAL_SECONDS,
) -> None:
    """Feed the ``journeys_by_stage`` gauge from the read model every ``interval`` until
    ``stop`` is set.

    The gauge's callback runs on the metric reader's thread and must not touch the database,
    so the count is taken here, on the event loop, and handed over as a snapshot. Closed
    journeys are left out (the gauge is of open ones). A failed count keeps the last snapshot.
    """
    target = metrics or get_metrics()
    while not stop.is_set():
        try:
            # A metrics read, not product work: no root trace every ``interval``.
            with suppress_instrumentation():
                counts = await count_by_stage(pool)
            target.update_journeys_by_stage(
                {stage: n for stage, n in counts.items() if stage not in CLOSED_STAGES}
            )
        except Exception as error:  # an outage must not end the loop; the next round retries
            logger.warning("journeys by stage not counted: %s", type(error).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def run_on_own_loop(
    run: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event, name: str
) -> None:
    """Run ``run(own_stop)`` on an event loop of its own, in a thread, until ``stop`` is set.

    ``journey dev`` runs the notification dispatcher so: its polling, sends and file writes
    never wait behind the API's requests or the worker's workflow tasks on the shared loop,
    and a slow channel cannot delay a webhook's answer. ``own_stop`` belongs to the thread's
    loop and is set from here when ``stop`` is set (or this task is cancelled); this returns
    once ``run`` has finished, and raises what it raised.
    """
    started: concurrent.futures.Future[tuple[asyncio.AbstractEventLoop, asyncio.Event]]
    started = concurrent.futures.Future()

    async def main() -> None:
        own_stop = asyncio.Event()
        started.set_result((asyncio.get_running_loop(), own_stop))
        await run(own_stop)

    def thread() -> None:
        try:
            asyncio.run(main())
        except BaseException as error:
            if not started.done():
                started.set_exception(error)
            raise

    done = asyncio.ensure_future(asyncio.to_thread(thread))
    try:
        await asyncio.wrap_future(started)
        waiter = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({done, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
    finally:
        # Also when this task is cancelled: the thread's run stops and is waited for.
        if started.done() and started.exception() is None and not done.done():
            loop, own_stop = started.result()
            with contextlib.suppress(RuntimeError):  # its loop closed in the meantime
                loop.call_soon_threadsafe(own_stop.set)
        await asyncio.shield(done)
    logger.debug("%s stopped on its own loop", name)


def stop_on_signals(stop: asyncio.Event) -> Callable[[], None]:
    """Set ``stop`` on SIGTERM or SIGINT; returns a function that removes the handlers.

    Only the main thread of a loop that supports signal handlers can do this; elsewhere (a
    worker started from a thread) it does nothing and the caller must set ``stop`` itself.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)

    def remove() -> None:
        for sig in installed:
            loop.remove_signal_handler(sig)

    return remove


@contextlib.asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """The migrated connection pool of these settings, closed (and an embedded server let go)
    on exit.

    With ``DATABASE_URL`` the server must exist and is never stopped here; without it the
    embedded server under ``JOURNEY_DATA_DIR/pg`` is started and released after the pool is
    closed (it stops when no other process of the product still uses it). Migrations run under
    an advisory lock, so several processes may start at once.
    """
    dsn, server = await database_url(settings)
    try:
        pool = await create_pool(
            dsn, min_size=settings.database_pool_min, max_size=settings.database_pool_max
        )
        try:
            applied = await migrate(pool)
            if applied:
                logger.info("applied %d migration(s)", len(applied))
            yield pool
        finally:
            await pool.close()
    finally:
        if server is not None:
            await _release(server)


async def _release(server: EmbeddedPostgres) -> None:
    # pg_ctl stop blocks for a moment: keep the loop free for whatever is still shutting down.
    await asyncio.to_thread(server.stop)


async def run_worker(
    settings: Settings, *, stop: asyncio.Event | None = None, telemetry: bool = True
) -> None:
    """Run the journey worker until ``stop`` is set (or SIGTERM/SIGINT when ``stop`` is None).

    Order: telemetry, the Temporal client, the pool (migrated, with the ``default`` clinic),
    the activities, then the worker. On stop the worker shuts down gracefully (polling ends, and
    running activities get ``GRACEFUL_SHUTDOWN`` to finish and report), and only then is the
    pool closed, so no activity loses its connection mid-write.

    Args:
        settings: The process settings.
        stop: Set it to stop the worker; None installs SIGTERM/SIGINT handlers that do.
        telemetry: False when the caller already set up logging and tracing (``journey dev``).

    Raises:
        RuntimeError: Temporal is unreachable (from ``Client.connect``).
        OSError, asyncpg.PostgresError: the database cannot be reached or migrated.
    """
    if telemetry:
        setup_process("worker", settings)
    remove_handlers: Callable[[], None] = lambda: None  # noqa: E731
    if stop is None:
        stop = asyncio.Event()
        remove_handlers = stop_on_signals(stop)
    try:
        client = await connect_client(
            settings,
            interceptors=temporal_interceptors(),
            runtime=temporal_runtime(settings.metrics_prometheus_bind),
        )
        async with open_database(settings) as pool:
            await ensure_default_clinic(pool)
            activities = build_activities(pool)
            sizing: dict[str, Any] = dict(settings.worker_options())
            async with build_worker(client, settings.temporal_task_queue, activities, **sizing):
                logger.info(
                    "worker polling",
                    extra={"task_queue": settings.temporal_task_queue},
                )
                # The journeys_stuck gauge (worker/stuck.py): this process has the client.
                stuck = asyncio.create_task(
                    refresh_journeys_stuck(client, stop), name="journeys-stuck"
                )
                try:
                    await stop.wait()
                finally:
                    stuck.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await stuck
                logger.info("worker stopping: waiting for running activities")
            logger.info("worker stopped")
    finally:
        remove_handlers()
        if telemetry:
            shutdown_telemetry()


async def run_dispatcher(
    settings: Settings, *, stop: asyncio.Event | None = None, telemetry: bool = True
) -> None:
    """Send due notifications from the outbox, and the outbound webhooks, until ``stop`` is
    set (or SIGTERM/SIGINT).

    Each row is leased before it is sent and sent with a provider key, so a dispatcher killed
    between send and mark never sends twice (see ``activities.dispatcher``). Stopping lets the
    current batch finish; the pool is closed last. Outcomes feed the notification counters, and
    the process also refreshes the ``journeys_by_stage`` gauge
    (:func:`refresh_journeys_by_stage`).

    Args:
        settings: The process settings (channel: ``NOTIFICATION_CHANNEL``).
        stop: Set it to stop; None installs SIGTERM/SIGINT handlers that do.
        telemetry: False when the caller already set up logging and tracing.
    """
    if telemetry:
        setup_process("dispatcher", settings)
    remove_handlers: Callable[[], None] = lambda: None  # noqa: E731
    if stop is None:
        stop = asyncio.Event()
        remove_handlers = stop_on_signals(stop)
    try:
        async with open_database(settings) as pool:
            dispatcher = OutboxDispatcher(
                pool,
                build_channel(settings),
                metrics=notification_metrics(),
                # The reschedule answer carries the patient's link (issue 18, messaging.md).
                patient_link=functools.partial(patient_link, settings),
            )
            stages = asyncio.create_task(
                refresh_journeys_by_stage(pool, stop), name="journeys-by-stage"
            )
            logger.info("dispatcher running")
            try:
                # Every poll would be a root trace of its own (an UPDATE a second while idle),
                # tied to no request: the dispatcher's SQL stays out of traces. Its outcomes
                # are counted (notifications_sent/failed) and logged instead.
                with suppress_instrumentation():
                    # Outbound webhooks (activities/webhooks.py) share the process and its stop.
                    await asyncio.gather(dispatcher.run(stop), WebhookDispatcher(pool).run(stop))
            finally:
                # Also when run() was cancelled: the refresher must end before the pool closes
                # (``stop`` may be shared with the worker, so it is not set here).
                stages.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stages
            logger.info("dispatcher stopped")
    finally:
        remove_handlers()
        if telemetry:
            shutdown_telemetry()
