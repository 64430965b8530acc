"""The worker's sticky cache and slots come from settings, and ``journey dev`` runs the
notification dispatcher on an event loop of its own (issue 13 item 2)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.fixtures_temporal import new_worker
from worker.main import run_on_own_loop
from worker.settings import Settings


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


def test_worker_options_from_settings() -> None:
    assert _settings().worker_options() == {"max_cached_workflows": 2000}
    options = _settings(
        worker_max_cached_workflows=50,
        worker_max_concurrent_workflow_tasks=20,
        worker_max_concurrent_activities=30,
        worker_max_concurrent_local_activities=12,
    ).worker_options()
    assert options == {
        "max_cached_workflows": 50,
        "max_concurrent_workflow_tasks": 20,
        "max_concurrent_activities": 30,
        "max_concurrent_local_activities": 12,
    }


async def test_the_worker_takes_them(ts_env: WorkflowEnvironment) -> None:
    options = _settings(
        worker_max_cached_workflows=10, worker_max_concurrent_local_activities=5
    ).worker_options()
    w = new_worker(ts_env.client, [], **options)
    assert w.config()["max_cached_workflows"] == 10
    assert w.config()["max_concurrent_local_activities"] == 5


async def test_run_on_own_loop_runs_elsewhere_and_stops() -> None:
    seen: dict[str, object] = {}
    running = threading.Event()

    async def run(own_stop: asyncio.Event) -> None:
        seen["thread"] = threading.current_thread()
        seen["loop"] = asyncio.get_running_loop()
        running.set()
        await own_stop.wait()
        seen["stopped"] = True

    stop = asyncio.Event()
    task = asyncio.create_task(run_on_own_loop(run, stop, "test"))
    assert await asyncio.to_thread(running.wait, 10)
    assert seen["thread"] is not threading.current_thread()
    assert seen["loop"] is not asyncio.get_running_loop()
    stop.set()
    await asyncio.wait_for(task, 10)
    assert seen["stopped"] is True


async def test_run_on_own_loop_reports_failures_and_stops_when_cancelled() -> None:
    async def broken(own_stop: asyncio.Event) -> None:
        raise ValueError("channel misconfigured")

    with pytest.raises(ValueError, match="misconfigured"):
        await asyncio.wait_for(run_on_own_loop(broken, asyncio.Event(), "test"), 10)

    stopped = threading.Event()

    async def run(own_stop: asyncio.Event) -> None:
        await own_stop.wait()
        stopped.set()

    started = threading.Event()

    async def started_run(own_stop: asyncio.Event) -> None:
        started.set()
        await run(own_stop)

    task = asyncio.create_task(run_on_own_loop(started_run, asyncio.Event(), "test"))
    assert await asyncio.to_thread(started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stopped.is_set()  # the thread's run was stopped and waited for
