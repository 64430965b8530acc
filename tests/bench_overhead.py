"""Overhead of payload encryption and tracing on whole journeys (a measurement, not a test).

    .venv/bin/python -m tests.bench_overhead [--journeys 4] [--rounds 2]

Runs the same 3-session journeys (real PostgreSQL store, time-skipping server, real protocol
durations) with neither, the codec, tracing, and both, interleaved over rounds, and prints wall
and CPU time per journey as ratios to the baseline measured in the same run, plus the span tree
of one traced journey's first steps.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities import repository
from activities.store import build_activities
from tests.fixtures_temporal import new_worker, register_search_attributes
from tests.journey_helpers import advance_to, advance_until_stage, complete_session, update
from tests.test_journey import BERLIN
from worker.binaries import temporal_test_server
from worker.codec import EncryptionCodec, generate_key, parse_key_ring, with_codec
from worker.database import EmbeddedPostgres, create_database, create_pool, migrate
from worker.telemetry import setup_tracing, temporal_interceptors
from workflows.ids import workflow_id
from workflows.journey import PatientJourney
from workflows.messages import JourneyStartRequest, ReviewRequest

EXPORTER = InMemorySpanExporter()


async def one_journey(env: WorkflowEnvironment, task_queue: str, pool: Any) -> None:
    patient = await repository.create_patient(
        pool,
        repository.PatientCreate(
            full_name="Bench Patient", email="bench@example.org", clinic_id="berlin"
        ),
    )
    pid = patient.patient_id
    handle = await env.client.start_workflow(
        PatientJourney.run,
        JourneyStartRequest(patient_id=pid, clinic_id="berlin", pore_grade="moderate"),
        id=workflow_id(pid),
        task_queue=task_queue,
    )
    for n in (1, 2, 3):
        await complete_session(env, handle, n)
    st = await advance_until_stage(env, handle, {"awaiting_review"})
    await advance_to(env, st.next_action_at)  # type: ignore[arg-type]
    await update(handle, PatientJourney.record_review, ReviewRequest(outcome="complete"))
    await handle.result()


async def run_variant(pool: Any, codec: bool, tracing: bool, journeys: int) -> tuple[float, float]:
    converter = pydantic_data_converter
    if codec:
        converter = with_codec(
            converter, EncryptionCodec(parse_key_ring(f"k1:{generate_key()}"), "k1")
        )
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_test_server()),
        data_converter=converter,
        interceptors=temporal_interceptors() if tracing else [],
    )
    try:
        await register_search_attributes(env.client)
        async with new_worker(env.client, build_activities(pool)) as w:
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(journeys):
                await one_journey(env, w.task_queue, pool)
            return (time.perf_counter() - wall) / journeys, (time.process_time() - cpu) / journeys
    finally:
        await env.shutdown()


def print_span_tree(limit: int = 25) -> None:
    spans = EXPORTER.get_finished_spans()
    if not spans:
        return
    trace_id = spans[0].context.trace_id
    mine = [s for s in spans if s.context.trace_id == trace_id]
    children: dict[int | None, list[Any]] = defaultdict(list)
    for s in mine:
        children[s.parent.span_id if s.parent else None].append(s)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for s in sorted(children[parent], key=lambda x: x.start_time or 0):
            if len(lines) < limit:
                lines.append(f"{'  ' * depth}{s.name}")
            walk(s.context.span_id, depth + 1)

    walk(None, 0)
    print(f"span tree of one traced journey ({len(mine)} spans, first {len(lines)}):")
    print("\n".join(lines))


async def main(journeys: int, rounds: int) -> None:
    setup_tracing("bench", exporter=EXPORTER)
    folder = Path(tempfile.mkdtemp(prefix="journey-bench-"))
    pg = EmbeddedPostgres(folder / "pg")
    admin = await asyncio.to_thread(pg.start)
    try:
        await create_database(admin, "bench")
        pool = await create_pool(pg.dsn("bench"), max_size=10)
        await migrate(pool)
        await repository.upsert_clinic(pool, BERLIN)
        await run_variant(pool, False, False, 1)  # warm-up: imports, caches, first server start
        variants = {
            "baseline": (False, False),
            "codec": (True, False),
            "tracing": (False, True),
            "codec+tracing": (True, True),
        }
        results: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for _ in range(rounds):
            for name, (codec, tracing) in variants.items():
                results[name].append(await run_variant(pool, codec, tracing, journeys))
        base_wall = statistics.median(w for w, _ in results["baseline"])
        base_cpu = statistics.median(c for _, c in results["baseline"])
        print(f"{journeys} journeys x {rounds} rounds per variant; per journey:")
        for name in variants:
            wall = statistics.median(w for w, _ in results[name])
            cpu = statistics.median(c for _, c in results[name])
            print(
                f"  {name:14s} wall {wall:6.3f}s ({wall / base_wall:4.2f}x)  "
                f"client+worker CPU {cpu:6.3f}s ({cpu / base_cpu:4.2f}x)"
            )
        print_span_tree()
        await pool.close()
    finally:
        await asyncio.to_thread(pg.stop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--journeys", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.journeys, args.rounds))
