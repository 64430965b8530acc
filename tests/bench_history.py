"""History cost of a whole 4-session course against a bare journey of the same shape (a
measurement, not a test).

    .venv/bin/python -m tests.bench_history [--rounds 3]

Runs, in the time-skipping server, interleaved over rounds: the product's ``PatientJourney``
(its real workflow code; the two database activities replaced by no-op stand-ins with the same
names, so the figures are about the workflow's history, not PostgreSQL) and ``BareJourney``: the
same timers, signals and update with one no-op activity per step and no logic. Prints events,
history bytes (serialized protobuf) and wall time per course, each as a ratio to the bare
journey measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.fixtures_temporal import register_search_attributes
from tests.journey_helpers import advance_to, advance_until_stage, complete_session, update
from tests.test_journey import BERLIN, RecordingStore, start
from worker.binaries import temporal_test_server
from worker.registry import workflow_runner
from workflows.journey import PatientJourney
from workflows.messages import ReviewRequest

SESSIONS = 4
DAY = timedelta(days=1)


class BareInput(BaseModel):
    sessions: int = SESSIONS


class BareFact(BaseModel):
    key: str


@activity.defn(name="bare_step")
async def bare_step(step: int) -> None:
    """A no-op write."""


@workflow.defn(name="BareJourney")
class BareJourney:
    """The journey's shape without its logic: per session a booking write, a wait for the
    day, a completion signal with its write, a check-in signal with its write, a wait to the
    check-in day; then the sun-protection window, the review update and a closing write."""

    def __init__(self) -> None:
        self._completed = 0
        self._checked_in = 0
        self._reviewed = False

    async def _write(self, step: int) -> None:
        await workflow.execute_activity(
            bare_step, step, start_to_close_timeout=timedelta(seconds=10)
        )

    async def _wait(self, ready: Any, timeout: timedelta) -> None:
        try:
            await workflow.wait_condition(ready, timeout=timeout)
        except TimeoutError:
            pass

    @workflow.run
    async def run(self, request: BareInput) -> int:
        step = 0
        await self._write(step)
        for n in range(1, request.sessions + 1):
            step += 1
            await self._write(step)
            await workflow.sleep(20 * DAY)
            await self._wait(lambda n=n: self._completed >= n, 2 * DAY)
            await self._wait(lambda n=n: self._checked_in >= n, 7 * DAY)
            await workflow.sleep(4 * DAY)
        await self._write(step + 1)
        await workflow.sleep(60 * DAY)
        await self._wait(lambda: self._reviewed, 60 * DAY)
        await workflow.wait_condition(lambda: self._reviewed)
        await self._write(step + 2)
        return step

    @workflow.signal
    async def completed(self, fact: BareFact) -> None:
        self._completed += 1
        await self._write(100 + self._completed)

    @workflow.signal
    async def checked_in(self, fact: BareFact) -> None:
        self._checked_in += 1
        await self._write(200 + self._checked_in)

    @workflow.update
    async def review(self, fact: BareFact) -> None:
        self._reviewed = True


async def bare_course(env: WorkflowEnvironment, task_queue: str) -> WorkflowHandle[Any, Any]:
    handle = await env.client.start_workflow(
        BareJourney.run, BareInput(), id=f"bare-{uuid.uuid4()}", task_queue=task_queue
    )
    for n in range(1, SESSIONS + 1):
        await env.sleep(20 * DAY + timedelta(hours=1))
        await handle.signal(BareJourney.completed, BareFact(key=f"c{n}"))
        await handle.signal(BareJourney.checked_in, BareFact(key=f"k{n}"))
        await env.sleep(6 * DAY)
    await env.sleep(61 * DAY)
    await handle.execute_update(BareJourney.review, BareFact(key="r"))
    await handle.result()
    return handle


async def product_course(env: WorkflowEnvironment, task_queue: str) -> WorkflowHandle[Any, Any]:
    handle = await start(env, task_queue, clinic_id="berlin", pore_grade="large")
    for n in range(1, SESSIONS + 1):
        await complete_session(env, handle, n)
    st = await advance_until_stage(env, handle, {"awaiting_review"})
    await advance_to(env, st.next_action_at)  # type: ignore[arg-type]
    await update(handle, PatientJourney.record_review, ReviewRequest(outcome="complete"))
    await handle.result()
    return handle


async def measure(kind: str) -> tuple[int, int, float]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_test_server()),
        data_converter=pydantic_data_converter,
    )
    try:
        await register_search_attributes(env.client)
        store = RecordingStore(BERLIN)
        activities = [*store.activities(), bare_step]
        async with Worker(
            env.client,
            task_queue=f"bench-{uuid.uuid4()}",
            workflows=[PatientJourney, BareJourney],
            activities=activities,
            workflow_runner=workflow_runner(),
        ) as w:
            wall = time.perf_counter()
            course = bare_course if kind == "bare" else product_course
            handle = await course(env, w.task_queue)
            wall = time.perf_counter() - wall
            history = await handle.fetch_history()
        return len(history.events), sum(e.ByteSize() for e in history.events), wall
    finally:
        await env.shutdown()


async def main(rounds: int) -> None:
    await measure("bare")  # warm-up: imports and the first server start
    results: dict[str, list[tuple[int, int, float]]] = {"bare": [], "journey": []}
    for _ in range(rounds):
        for kind in results:
            results[kind].append(await measure(kind))
    base = [statistics.median(x[i] for x in results["bare"]) for i in range(3)]
    print(f"4-session course, time-skipping server, median of {rounds} interleaved rounds")
    print(
        f"{'':10s} {'events':>8s} {'ratio':>6s} {'bytes':>8s} {'ratio':>6s} {'wall s':>7s} {'ratio':>6s}"
    )
    for kind, runs in results.items():
        events, size, wall = (statistics.median(x[i] for x in runs) for i in range(3))
        print(
            f"{kind:10s} {events:8.0f} {events / base[0]:6.2f} {size:8.0f} {size / base[1]:6.2f} "
            f"{wall:7.3f} {wall / base[2]:6.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args().rounds))
