"""A patient's scheduling preferences: preferred weekdays, parts of the day and time ranges.

Preferences order the slots a search offers (matching ones first); they never exclude one, so
a patient with narrow preferences still gets a slot inside the clinical window.
"""

from __future__ import annotations

from datetime import time
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from scheduling.resources import TimeRange

DayPart = Literal["morning", "afternoon", "evening"]

DAY_PARTS: Final[dict[str, tuple[time, time]]] = {
    "morning": (time(0, 0), time(12, 0)),
    "afternoon": (time(12, 0), time(17, 0)),
    "evening": (time(17, 0), time(23, 59, 59)),
}
"""A start time belongs to the part whose ``[start, end)`` holds it."""


class SlotPreferences(BaseModel):
    """What a patient prefers (all optional; empty: no preference)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weekdays: list[int] = Field(default=[], max_length=7)
    """Preferred weekdays, 0 = Monday … 6 = Sunday."""
    day_parts: list[DayPart] = Field(default=[], max_length=3)
    times: list[TimeRange] = Field(default=[], max_length=6)
    """Preferred local start-time ranges (a start inside any of them matches)."""

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, value: list[int]) -> list[int]:
        if any(not 0 <= d <= 6 for d in value):
            raise ValueError("weekdays are 0 (Monday) to 6 (Sunday)")
        return sorted(set(value))

    @field_validator("day_parts")
    @classmethod
    def _parts(cls, value: list[DayPart]) -> list[DayPart]:
        return sorted(set(value), key=list(DAY_PARTS).index)

    @property
    def empty(self) -> bool:
        return not (self.weekdays or self.day_parts or self.times)

    def day_matches(self, weekday: int) -> bool:
        """True when the weekday is preferred, or no weekday is."""
        return not self.weekdays or weekday in self.weekdays

    def time_matches(self, start: time) -> bool:
        """True when the local start is in a preferred part or range, or none is set."""
        if not self.day_parts and not self.times:
            return True
        for part in self.day_parts:
            lo, hi = DAY_PARTS[part]
            if lo <= start < hi:
                return True
        return any(r.start <= start < r.end for r in self.times)


NO_PREFERENCES: Final = SlotPreferences()
