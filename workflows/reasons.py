"""Reasons: why a rule refused, deferred or moved something.

Every refusal, deferral or move made by the pure protocol functions is explained by a
:class:`Reason`: a machine code (``rule``) that software can branch on, and a ``message`` in
plain words, with concrete dates, that a receptionist can read to a patient.

This module is pure and deterministic (no I/O, no clock), safe inside the Temporal sandbox.
"""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict

__all__ = [
    "Reason",
    "format_date",
    "format_months",
    "format_weekday_date",
    "month_name",
    "weekday_name",
]

_MONTH_NAMES: tuple[str, ...] = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_WEEKDAY_NAMES: tuple[str, ...] = (
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
)


class Reason(BaseModel):
    """One rule that applied, with a plain-words explanation.

    Attributes:
        rule: Stable machine code, e.g. ``"too_soon_after_previous"`` or ``"pregnancy"``.
        message: Plain words with concrete dates, e.g. "Session 2 must be at least 21 days
            after session 1 on 3 March 2027, so no earlier than 24 March 2027."
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: str
    message: str


def format_date(d: date) -> str:
    """Format a date for people, independent of the process locale.

    Returns:
        e.g. ``"1 June 2027"`` (no leading zero, English month name).
    """
    return f"{d.day} {_MONTH_NAMES[d.month - 1]} {d.year}"


def format_weekday_date(d: date) -> str:
    """Format a date with its weekday, e.g. ``"Tuesday 20 April 2027"``."""
    return f"{_WEEKDAY_NAMES[d.weekday()]} {format_date(d)}"


def month_name(month: int) -> str:
    """English name of a month number 1–12."""
    return _MONTH_NAMES[month - 1]


def weekday_name(weekday: int) -> str:
    """English name of a weekday number (Monday=0 … Sunday=6)."""
    return _WEEKDAY_NAMES[weekday]


def format_months(months: tuple[int, ...]) -> str:
    """Format a run of months, e.g. ``(6, 7, 8)`` → ``"June–August"``, ``(7,)`` → ``"July"``."""
    if len(months) == 1:
        return month_name(months[0])
    return f"{month_name(months[0])}–{month_name(months[-1])}"
