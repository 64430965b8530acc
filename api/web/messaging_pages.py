"""Messaging on the staff pages (issue 18 item 5, docs/messaging.md): per journey, the messages
with their delivery status and the patient's replies (the journey page); per clinic, the failed
deliveries, the opt-outs and the replies waiting for a person (``/clinics/{id}/messaging``,
linked from the overview).

Reply texts are PHI-ish: they are read from PostgreSQL for these pages only (staff with
``journey.view`` in the clinic's scope) and never leave it otherwise.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
from fastapi import APIRouter, Request, Response

from activities import replies
from api.web import routes, views

__all__ = ["clinics_in_scope", "journey_context", "router"]

router = APIRouter(route_class=routes._PageRoute, include_in_schema=False)

STATUS_TEXT = {
    "pending": "waiting to send",
    "sending": "sending",
    "sent": "sent",
    "failed": "failed",
    "cancelled": "not sent",
}


def _when(value: datetime | None, tz: str) -> str:
    return views.format_local_datetime(value, tz) if value is not None else ""


async def journey_context(pool: asyncpg.Pool, workflow_id: str, tz: str) -> dict[str, Any]:
    """The journey page's messages and replies (newest first)."""
    messages = await replies.journey_messages(pool, workflow_id)
    answers = await replies.journey_replies(pool, workflow_id)
    return {
        "messages": [
            {
                "m": m,
                "state": STATUS_TEXT.get(m.status, m.status),
                "when": _when(m.sent_at or m.next_attempt_at, tz),
                "reason": m.delivery_error or (m.last_error if m.status != "sent" else None),
            }
            for m in messages
        ],
        "replies": [{"r": r, "when": _when(r.received_at, tz)} for r in answers],
    }


async def clinics_in_scope(pool: asyncpg.Pool, scope: list[str] | None) -> list[tuple[str, str]]:
    """(clinic id, name) of the clinics the member sees, for the overview's links."""
    rows = await pool.fetch(
        "SELECT clinic_id, name FROM clinics WHERE $1::text[] IS NULL OR clinic_id = ANY($1)"
        " ORDER BY name",
        scope,
    )
    return [(r["clinic_id"], r["name"]) for r in rows]


@router.get("/clinics/{clinic_id}/messaging")
async def clinic_messaging(request: Request, clinic_id: str) -> Response:
    """The clinic's failed deliveries, opt-outs and replies waiting for a person."""
    staff = await routes._page_staff(request)
    scope = routes._scope(request)
    pool = routes._pool(request)
    clinic = await pool.fetchrow(
        "SELECT name, timezone FROM clinics WHERE clinic_id = $1", clinic_id[:64]
    )
    if clinic is None or (scope is not None and clinic_id not in scope):
        return routes._error_page(request, 404, "No such clinic", "There is no clinic here.")
    tz = clinic["timezone"]
    failed = await replies.clinic_failed_deliveries(pool, clinic_id)
    optouts = await replies.clinic_optouts(pool, clinic_id)
    open_replies = await replies.clinic_open_replies(pool, clinic_id)
    return routes._render(
        request,
        "clinic_messaging.html",
        {
            "staff": staff,
            "page": "overview",
            "clinic_id": clinic_id,
            "clinic_name": clinic["name"],
            "failed": [
                {"f": f, "when": _when(f.at, tz), "state": STATUS_TEXT.get(f.status, f.status)}
                for f in failed
            ],
            "optouts": [
                {
                    "o": o,
                    "out": _when(o.opted_out_at, tz),
                    "back": _when(o.opted_in_at, tz),
                }
                for o in optouts
            ],
            "replies": [{"r": r, "when": _when(r.received_at, tz)} for r in open_replies],
        },
    )
