"""Every long-running ``journey`` command stops gracefully on SIGTERM (what Kubernetes, compose
and systemd send) and exits 0, as docs/running.md promises: ``worker``, ``dispatcher``, ``api``
and ``dev``. Real processes against the real dev server and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

JOURNEY = Path(sys.executable).with_name("journey")
READY_WITHIN = 90.0  # seconds; a deadline for a stuck start, not a performance threshold


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "TEMPORAL_"))}
    env.update(extra)
    return env


@pytest.fixture
def folder() -> Iterator[Path]:
    # Not under pytest's tmp_path: the embedded server's system user must traverse the folder.
    path = Path(tempfile.mkdtemp(prefix="journey-sigterm-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def _run_until_ready_then_sigterm(
    command: list[str], env: dict[str, str], cwd: Path, ready: str | None, health_url: str | None
) -> tuple[int, str]:
    log = cwd / "output.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            str(JOURNEY), *command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = asyncio.get_running_loop().time() + READY_WITHIN
        while True:
            assert process.returncode is None, f"exited early: {log.read_text()}"
            if ready is not None and ready in log.read_text(errors="replace"):
                break
            if health_url is not None:
                try:
                    async with httpx.AsyncClient() as http:
                        if (await http.get(health_url, timeout=2)).status_code == 200:
                            break
                except httpx.HTTPError:
                    pass
            assert asyncio.get_running_loop().time() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 60)
        return code, log.read_text(errors="replace")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def _service_env(dev_env: WorkflowEnvironment, pg_dsn: str, folder: Path) -> dict[str, str]:
    return _env(
        TEMPORAL_ADDRESS=dev_env.client.service_client.config.target_host,
        TEMPORAL_TASK_QUEUE=f"sigterm-{folder.name}",
        DATABASE_URL=pg_dsn,
        JOURNEY_DATA_DIR=str(folder / "data"),
        NOTIFICATION_OUTBOX_FILE=str(folder / "outbox.log"),
    )


async def test_worker_exits_0_on_sigterm(
    dev_env: WorkflowEnvironment, pg_dsn: str, folder: Path
) -> None:
    code, output = await _run_until_ready_then_sigterm(
        ["worker"], _service_env(dev_env, pg_dsn, folder), folder, "worker polling", None
    )
    assert code == 0, output
    assert "worker stopped" in output


async def test_dispatcher_exits_0_on_sigterm(
    dev_env: WorkflowEnvironment, pg_dsn: str, folder: Path
) -> None:
    code, output = await _run_until_ready_then_sigterm(
        ["dispatcher"], _service_env(dev_env, pg_dsn, folder), folder, "dispatcher running", None
    )
    assert code == 0, output
    assert "dispatcher stopped" in output


async def test_api_exits_0_on_sigterm(
    dev_env: WorkflowEnvironment, pg_dsn: str, folder: Path
) -> None:
    port = _free_port()
    code, output = await _run_until_ready_then_sigterm(
        ["api", "--port", str(port)],
        _service_env(dev_env, pg_dsn, folder),
        folder,
        None,
        f"http://127.0.0.1:{port}/healthz",
    )
    assert code == 0, output  # uvicorn alone re-raises the signal: -15


async def test_dev_exits_0_on_sigterm(folder: Path) -> None:
    env = _env(
        JOURNEY_DATA_DIR=str(folder / "data"),
        TEMPORAL_ADDRESS=f"127.0.0.1:{_free_port()}",
        TEMPORAL_UI_PORT=str(_free_port()),
        API_PORT=str(_free_port()),
    )
    code, output = await _run_until_ready_then_sigterm(
        ["dev"], env, folder, "journey dev is ready", None
    )
    assert code == 0, output
    assert "Temporal dev server stopped" in output
