"""The slot activities for pure-workflow tests whose store is an in-memory stand-in: a clinic
with no resources on file (no known capacity), so every session keeps the clinic's default
start on its planned day, as the PostgreSQL scheduler answers for such a clinic."""

from __future__ import annotations

from temporalio import activity

from workflows.booking import SlotRelease, SlotRequest, SlotResult, default_slot


@activity.defn(name="reserve_slot")
async def reserve_slot(request: SlotRequest) -> SlotResult:
    return default_slot(request)


@activity.defn(name="release_slot")
async def release_slot(request: SlotRelease) -> None:
    return None


SLOT_ACTIVITIES = [reserve_slot, release_slot]
