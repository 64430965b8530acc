"""The "Stuck journeys" page's data: journeys whose workflow task keeps failing
(``worker.stuck``), with the patient's name and last known stage from the read model."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
from temporalio.client import Client
from temporalio.service import RPCError

from activities import repository
from api.service import ServiceUnavailable
from api.web import views
from worker.stuck import SCAN_LIMIT, find_stuck_journeys

__all__ = ["stuck_context"]


async def stuck_context(
    client: Client,
    pool: asyncpg.Pool,
    *,
    limit: int = SCAN_LIMIT,
    clinics: list[str] | None = None,
) -> dict[str, Any]:
    """Template context of ``stuck.html``; ``clinics``: only journeys whose read-model row is
    in these clinics (the member's scope, issue 16; None: every journey).

    Raises:
        ServiceUnavailable: Temporal did not answer (the page shows the usual 503).
    """
    try:
        report = await find_stuck_journeys(client, limit=limit)
    except RPCError as err:
        raise ServiceUnavailable("Temporal did not answer.") from err
    stuck: list[dict[str, Any]] = []
    for journey in report.journeys:
        row = (
            await repository.get_journey(pool, journey.patient_id)
            if journey.patient_id is not None
            else None
        )
        if clinics is not None and (row is None or row.clinic_id not in clinics):
            continue
        stuck.append(
            {
                "journey": journey,
                "name": row.patient_name if row is not None else None,
                "stage": row.stage if row is not None else None,
                "since": views.format_local_datetime(journey.since, "UTC"),
            }
        )
    return {
        "stuck": stuck,
        "method": report.method,
        "checked": report.checked,
        "complete": report.complete,
        "generated": views.format_local_datetime(datetime.now(UTC), "UTC"),
    }
