"""Liveness and readiness: ``/healthz`` (the process answers) and ``/readyz`` (Temporal and
PostgreSQL both answer within a short deadline; 503 with ``Retry-After`` otherwise)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api import schemas
from api.service import RETRY_AFTER_SECONDS, ServiceUnavailable

router = APIRouter(tags=["health"])
logger = logging.getLogger(__name__)

CHECK_TIMEOUT = timedelta(seconds=2)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (no dependency is checked)."""
    return {"status": "ok"}


async def _temporal_ok(request: Request) -> bool:
    try:
        client = await request.app.state.temporal.get()
        return bool(await client.service_client.check_health(timeout=CHECK_TIMEOUT))
    except (ServiceUnavailable, RuntimeError, OSError, TimeoutError) as err:
        logger.info("readyz: Temporal not ready: %s", type(err).__name__)
        return False
    except Exception as err:  # any RPC failure means not ready, never a 500 here
        logger.info("readyz: Temporal not ready: %s", type(err).__name__)
        return False


async def _database_ok(request: Request) -> bool:
    pool = request.app.state.pool
    try:
        async with asyncio.timeout(CHECK_TIMEOUT.total_seconds()):
            return bool(await pool.fetchval("SELECT 1") == 1)
    except Exception as err:  # a down database may raise many kinds; all mean not ready
        logger.info("readyz: database not ready: %s", type(err).__name__)
        return False


@router.get(
    "/readyz",
    response_model=schemas.ReadyOut,
    responses={503: {"model": schemas.ReadyOut, "description": "A dependency is down."}},
)
async def readyz(request: Request) -> JSONResponse:
    """Ready when Temporal and PostgreSQL both answer."""
    temporal, database = await asyncio.gather(_temporal_ok(request), _database_ok(request))
    ready = temporal and database
    body = schemas.ReadyOut(
        status="ready" if ready else "unavailable", temporal=temporal, database=database
    )
    return JSONResponse(
        body.model_dump(),
        status_code=200 if ready else 503,
        headers={} if ready else {"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
