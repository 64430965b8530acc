"""A patient's reply is matched through an index (migration 0030), not a scan of every patient:
the planner can use the expression indexes for the exact expressions activities/replies.py
queries with."""

from __future__ import annotations

import asyncpg

from activities.replies import _FIND_PATIENT


async def test_reply_lookups_use_the_expression_indexes(pg_pool: asyncpg.Pool) -> None:
    async with pg_pool.acquire() as conn, conn.transaction():
        # A test database is tiny: forbid the sequential scan so the plan shows whether an
        # index *can* serve the query.
        await conn.execute("SET LOCAL enable_seqscan = off")
        for channel, value, index in (
            ("sms", "+4930123456", "patients_phone_digits_idx"),
            ("email", "Ana@Example.org", "patients_email_lower_idx"),
        ):
            plan = "\n".join(
                r[0] for r in await conn.fetch(f"EXPLAIN {_FIND_PATIENT[channel]}", value)
            )
            assert index in plan, plan
