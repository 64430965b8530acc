"""The stack a season simulation runs on.

:func:`own_stack` starts one of its own, as ``journey dev`` does (``worker/devstack.py``) but
throw-away: a Temporal dev server in memory (timers fired within 10 ms, the journey's search
attributes), an embedded PostgreSQL in a temporary folder with every migration, and the real
worker as a separate process (``journey worker``: the product's ``build_worker``, its real
activities), so the machine's two cores serve the worker and the driver side by side and each
process's CPU can be read. The notification dispatcher is not started: messages stay in the
outbox, which the simulation does not need.

:func:`connected_stack` uses the stack the settings point at (``TEMPORAL_ADDRESS``,
``DATABASE_URL``, ``TEMPORAL_TASK_QUEUE``), whose worker must be running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from worker.client import connect_client
from worker.database import (
    JOURNEY_DATABASE,
    EmbeddedPostgres,
    create_database,
    create_pool,
    migrate,
)
from worker.devstack import TemporalDevServer
from worker.settings import PROJECT_ROOT, Settings

__all__ = ["SimStack", "connected_stack", "own_stack", "wait_for_worker"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _InMemoryTemporal(TemporalDevServer):
    """The dev server of ``journey dev`` without its SQLite file or UI: in memory, faster."""

    def command(self) -> list[str]:
        args = super().command()
        i = args.index("--db-filename")
        del args[i : i + 2]
        return [*args, "--headless"]


def _cpu_seconds(proc: Any, with_children: bool) -> float:
    """CPU seconds (user + system) of a psutil process, with its children if asked."""
    import psutil

    try:
        t = proc.cpu_times()
        total = float(t.user + t.system)
        if with_children:
            total += float(t.children_user + t.children_system)
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    c = child.cpu_times()
                    total += float(c.user + c.system)
        return total
    except psutil.Error:
        return 0.0


@dataclass
class SimStack:
    """What a simulation needs from the stack, and the processes whose CPU it reports."""

    client: Client
    pool: asyncpg.Pool
    settings: Settings
    own: bool
    folder: Path | None = None
    processes: dict[str, Any] = field(default_factory=dict)
    """psutil processes by name (``server``, ``postgres``, ``worker``); empty when connected."""
    worker_log: Path | None = None
    """The started worker's log (its failed activity attempts are counted in the report)."""

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far by process (``driver`` is this process)."""
        out: dict[str, float] = {}
        try:
            import psutil
        except ImportError:  # pragma: no cover - psutil comes with the dev extra
            times = os.times()
            return {"driver": times.user + times.system}
        for name, proc in self.processes.items():
            out[name] = _cpu_seconds(proc, with_children=name in ("server", "postgres"))
        out["driver"] = _cpu_seconds(psutil.Process(), with_children=False)
        return out


async def wait_for_worker(client: Client, task_queue: str, timeout: float = 120.0) -> None:
    """Until a worker polls ``task_queue``.

    Raises:
        RuntimeError: None did within ``timeout`` seconds.
    """
    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    deadline = time.monotonic() + timeout
    while True:
        described = await client.workflow_service.describe_task_queue(request)
        if described.pollers:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"no worker polls the task queue {task_queue!r}")
        await asyncio.sleep(0.2)


def _journey_command() -> list[str]:
    script = Path(sys.executable).with_name("journey")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from cli.main import main; main()"]


def _stop_process(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.asynccontextmanager
async def own_stack(settings: Settings, *, keep: bool = False) -> AsyncIterator[SimStack]:
    """Start a throw-away stack (see the module docstring); everything stops on exit and the
    temporary folder is removed unless ``keep`` (the worker's log is ``worker.log`` in it)."""
    import psutil

    folder = Path(tempfile.mkdtemp(prefix="journey-sim-"))
    temporal = _InMemoryTemporal("127.0.0.1", _free_port(), _free_port(), folder)
    pg = EmbeddedPostgres(folder / "pg")
    pool: asyncpg.Pool | None = None
    worker: subprocess.Popen[bytes] | None = None
    try:
        task_queue = f"simulation-{os.getpid()}"
        client = await temporal.start(
            settings.model_copy(
                update={"temporal_address": temporal.address, "temporal_task_queue": task_queue}
            )
        )
        admin = await asyncio.to_thread(pg.start)
        await create_database(admin, JOURNEY_DATABASE)
        dsn = pg.dsn(JOURNEY_DATABASE)
        await migrate(dsn)
        pool = await create_pool(dsn, min_size=2, max_size=12)
        env = {
            **os.environ,
            "PYTHONPYCACHEPREFIX": os.environ.get(
                "PYTHONPYCACHEPREFIX", str(PROJECT_ROOT / ".data" / "pycache")
            ),
            "JOURNEY_ENV": "development",
            "DATABASE_URL": dsn,
            "TEMPORAL_ADDRESS": temporal.address,
            "TEMPORAL_TASK_QUEUE": task_queue,
            "JOURNEY_DATA_DIR": str(folder),
            "LOG_LEVEL": "WARNING",
            "OTEL_SDK_DISABLED": "true",
        }
        with (folder / "worker.log").open("wb") as log:
            worker = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
                [*_journey_command(), "worker"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=PROJECT_ROOT,
                start_new_session=True,
            )
        await wait_for_worker(client, task_queue)
        sim_settings = settings.model_copy(
            update={
                "temporal_address": temporal.address,
                "temporal_task_queue": task_queue,
                "database_url": dsn,
                "journey_env": "development",
            }
        )
        processes: dict[str, Any] = {"worker": psutil.Process(worker.pid)}
        if temporal.process is not None:
            processes["server"] = psutil.Process(temporal.process.pid)
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            postmaster = int((folder / "pg" / "postmaster.pid").read_text().split()[0])
            processes["postgres"] = psutil.Process(postmaster)
        yield SimStack(client, pool, sim_settings, True, folder, processes, folder / "worker.log")
    finally:
        if worker is not None:
            await asyncio.to_thread(_stop_process, worker)
        if pool is not None:
            await pool.close()
        await asyncio.to_thread(pg.stop)
        await temporal.stop()
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.asynccontextmanager
async def connected_stack(settings: Settings) -> AsyncIterator[SimStack]:
    """The running stack of ``settings`` (its worker must poll ``TEMPORAL_TASK_QUEUE``)."""
    from worker.main import open_database

    client = await connect_client(settings)
    await wait_for_worker(client, settings.temporal_task_queue, timeout=10)
    async with open_database(settings) as pool:
        yield SimStack(client, pool, settings, False)
