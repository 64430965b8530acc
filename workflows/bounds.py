"""Bounds at every door: the shared pydantic types every input is checked with.

One type per kind of value, used by the HTTP API (``api/schemas.py``, query parameters), the
CLI, and the workflow's messages, so a value a caller sends can never fail a workflow task
(a date that overflows on conversion), poison a database write (a NUL character), or blow a
Temporal payload (a 3 MB list). A value outside its bounds is a pydantic ``ValidationError``
naming the field; the API turns it into a 422.

The bounds (docs/security.md repeats them):

* **Dates** (:data:`ClinicDate`): 1900-01-01 to 2100-12-31 inclusive. A clock-relative range
  ("20 years ahead") cannot be checked here without a clock; this module is pure and used in
  the workflow sandbox, so the window is fixed. Rules that need "today" (an earliest start
  more than two years ahead, a last dose in the future) are checked by the API's service,
  which has a clock.
* **Date-times** (:data:`ClinicDateTime`): time-zone aware, with both the local date and the
  UTC date inside the date window, so ``astimezone`` and ``+ timedelta(days=…)`` of a few
  years can never overflow (``9999-12-31T23:59:59-14:00`` is refused, not left to crash a
  workflow task).
* **Text** (:func:`safe_text`, :func:`safe_multiline_text`): no control characters (C0, DEL,
  C1; NUL included: PostgreSQL refuses it inside a write), no lone surrogates (not encodable
  as UTF-8), and a maximum length. Multi-line text allows tab, line feed and carriage return.
* **Lists** (:func:`bounded_list`, :func:`bounded_tuple`): a maximum number of items.
* **Integers** (:data:`Int64`, :data:`NonNegativeInt64`): within PostgreSQL's ``bigint``
  (-2**63 .. 2**63-1), so a value that reaches SQL cannot overflow the driver.

Pure: pydantic and the standard library only; no clock, no I/O. Safe in the workflow sandbox.
"""

from __future__ import annotations

import unicodedata
from datetime import date, datetime
from typing import Annotated, Any, Final

from pydantic import AfterValidator, AwareDatetime, Field

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_DATE",
    "MIN_DATE",
    "ClinicDate",
    "ClinicDateTime",
    "IdempotencyKeyText",
    "Int64",
    "NonNegativeInt64",
    "bounded_list",
    "bounded_tuple",
    "check_date",
    "check_datetime",
    "check_text",
    "safe_multiline_text",
    "safe_text",
]

MIN_DATE: Final = date(1900, 1, 1)
MAX_DATE: Final = date(2100, 12, 31)
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

# For the OpenAPI document (and the fuzzers that read it): the same rule as a JSON-schema
# pattern. The Python check below is what decides; it also refuses lone surrogates.
_SINGLE_LINE_PATTERN: Final = r"^[^\x00-\x1f\x7f-\x9f]*$"
_MULTILINE_PATTERN: Final = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
_MULTILINE_ALLOWED: Final = frozenset("\t\n\r")


def check_date(value: date) -> date:
    """``value`` if it lies in ``MIN_DATE .. MAX_DATE``.

    Raises:
        ValueError: outside the window (pydantic reports it as the field's error).
    """
    if not MIN_DATE <= value <= MAX_DATE:
        raise ValueError(
            f"date must be between {MIN_DATE.isoformat()} and {MAX_DATE.isoformat()}, "
            f"got {value.isoformat()}"
        )
    return value


def check_datetime(value: datetime) -> datetime:
    """``value`` if it is aware and both its local and its UTC date lie in the date window.

    Raises:
        ValueError: naive, or outside the window (including values whose UTC conversion
            would overflow ``datetime``).
    """
    offset = value.utcoffset()
    if offset is None:
        raise ValueError("date-time must carry a time-zone offset")
    check_date(value.date())
    # The local date is inside the window, so this subtraction (|offset| < 24 h) cannot
    # overflow; astimezone() on an unchecked value could.
    utc_day = (value.replace(tzinfo=None) - offset).date()
    if not MIN_DATE <= utc_day <= MAX_DATE:
        raise ValueError(
            f"date-time must be between {MIN_DATE.isoformat()} and {MAX_DATE.isoformat()} "
            "in UTC and in its own offset"
        )
    return value


def check_text(value: str, *, multiline: bool = False) -> str:
    """``value`` if it holds no control character (tab/LF/CR allowed when ``multiline``)
    and no lone surrogate.

    Raises:
        ValueError: naming the first offending character and its position.
    """
    for position, char in enumerate(value):
        category = unicodedata.category(char)
        if category == "Cs" or (
            category == "Cc" and not (multiline and char in _MULTILINE_ALLOWED)
        ):
            raise ValueError(
                f"text must not contain control characters: U+{ord(char):04X} at position "
                f"{position}"
            )
    return value


def _single_line(value: str) -> str:
    return check_text(value)


def _multi_line(value: str) -> str:
    return check_text(value, multiline=True)


def safe_text(max_length: int, *, min_length: int = 0) -> Any:
    """A one-line text type: ``min_length``..``max_length`` characters, no control character.

    Use as an annotation: ``reason: safe_text(500, min_length=1)``.
    """
    return Annotated[
        str,
        Field(
            min_length=min_length,
            max_length=max_length,
            json_schema_extra={"pattern": _SINGLE_LINE_PATTERN},
        ),
        AfterValidator(_single_line),
    ]


def safe_multiline_text(max_length: int, *, min_length: int = 0) -> Any:
    """Like :func:`safe_text`, but tab, line feed and carriage return are allowed (notes)."""
    return Annotated[
        str,
        Field(
            min_length=min_length,
            max_length=max_length,
            json_schema_extra={"pattern": _MULTILINE_PATTERN},
        ),
        AfterValidator(_multi_line),
    ]


def bounded_list(item: Any, max_length: int, *, min_length: int = 0) -> Any:
    """A list type of at most ``max_length`` items (each checked as ``item``)."""
    return Annotated[list[item], Field(min_length=min_length, max_length=max_length)]


def bounded_tuple(item: Any, max_length: int) -> Any:
    """A tuple type (frozen models) of at most ``max_length`` items."""
    return Annotated[tuple[item, ...], Field(max_length=max_length)]


# The window as a pattern too, so the OpenAPI document (and the fuzzers and generated
# clients that read it) states it; JSON Schema has no minimum for a "format: date" string.
_DATE_WINDOW_PATTERN: Final = r"^(19[0-9]{2}|20[0-9]{2}|2100)-"

ClinicDate = Annotated[
    date,
    AfterValidator(check_date),
    Field(
        description=(
            f"A calendar date from {MIN_DATE.isoformat()} to {MAX_DATE.isoformat()} inclusive."
        ),
        json_schema_extra={"pattern": _DATE_WINDOW_PATTERN},
    ),
]
"""A calendar date inside the clinic-sane window ``MIN_DATE .. MAX_DATE``."""

ClinicDateTime = Annotated[
    AwareDatetime,
    AfterValidator(check_datetime),
    Field(
        description=(
            "An ISO 8601 date-time with an offset, its date from "
            f"{MIN_DATE.isoformat()} to {MAX_DATE.isoformat()} (local and UTC)."
        ),
        json_schema_extra={"pattern": _DATE_WINDOW_PATTERN},
    ),
]
"""An aware date-time whose local and UTC dates lie in the date window."""

Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
"""An integer that fits PostgreSQL's ``bigint``."""

NonNegativeInt64 = Annotated[int, Field(ge=0, le=INT64_MAX)]
"""A non-negative integer that fits PostgreSQL's ``bigint``."""

IdempotencyKeyText = safe_text(200, min_length=1)
"""An idempotency key: 1–200 characters, no control character."""
