"""The clinic file's ``[messaging]`` section: quiet hours, the essential message kinds and the
patients' default language (docs/messaging.md). Like ``[scheduling]`` it is kept out of the
protocol that every journey's history carries: the dispatcher reads these from PostgreSQL
(``clinics.quiet_hours_start/end``, ``essential_kinds``, ``default_language``) at send time.

TOML::

    [messaging]
    quiet_hours = "20:00-08:00"      # local to the clinic; "off" sends at any hour
    essential_kinds = ["aftercare", "journey_paused", "journey_withdrawn", "session_rebooked"]
    language = "fr"                  # a new patient's language unless enrolment says otherwise
"""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Any, get_args

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from activities.i18n import Language
from scheduling.resources import read_clinic_file
from workflows.records import NotificationKind

__all__ = ["ClinicMessaging", "MessagingFileError", "apply_messaging", "messaging_from_file"]

# Staff alerts are never held or rerouted; rescreen_due goes to staff too.
_PATIENT_KINDS = frozenset(get_args(NotificationKind)) - {"staff_alert", "rescreen_due"}


class MessagingFileError(ValueError):
    """A ``[messaging]`` section that cannot be used; ``problems`` has one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ClinicMessaging(BaseModel):
    """The ``[messaging]`` section. A key left out keeps what the clinic has."""

    model_config = ConfigDict(extra="forbid")

    quiet_hours: tuple[time, time] | None = None
    """Start and end (local); equal times: no quiet hours. From ``"HH:MM-HH:MM"`` or "off"."""
    essential_kinds: list[str] | None = Field(default=None, max_length=len(_PATIENT_KINDS))
    language: Language | None = None

    @field_validator("quiet_hours", mode="before")
    @classmethod
    def _range(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError('must be "HH:MM-HH:MM" (e.g. "20:00-08:00") or "off"')
        if value.strip().lower() == "off":
            return (time(0, 0), time(0, 0))
        start, sep, end = value.partition("-")
        try:
            if not sep:
                raise ValueError
            return (time.fromisoformat(start.strip()), time.fromisoformat(end.strip()))
        except ValueError:
            raise ValueError('must be "HH:MM-HH:MM" (e.g. "20:00-08:00") or "off"') from None

    @field_validator("essential_kinds")
    @classmethod
    def _known_kinds(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        unknown = sorted(set(value) - _PATIENT_KINDS)
        if unknown:
            raise ValueError(
                f"unknown patient message kind(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(_PATIENT_KINDS))}"
            )
        return sorted(set(value))


def messaging_from_file(path: str | Path) -> ClinicMessaging | None:
    """The clinic file's ``[messaging]`` section, or ``None`` when it has none."""
    data = read_clinic_file(path)
    if not isinstance(data, dict) or data.get("messaging") is None:
        return None
    try:
        return ClinicMessaging.model_validate(data["messaging"])
    except ValidationError as error:
        raise MessagingFileError(
            [
                f"{path}: messaging.{'.'.join(str(p) for p in e['loc'])}: "
                + ("unknown key" if e["type"] == "extra_forbidden" else e["msg"])
                for e in error.errors()
            ]
        ) from None


async def apply_messaging(pool: asyncpg.Pool, clinic_id: str, section: ClinicMessaging) -> None:
    """Store the section's settings on the clinic (keys left out keep their stored value)."""
    start, end = section.quiet_hours or (None, None)
    await pool.execute(
        """
        UPDATE clinics SET
            quiet_hours_start = coalesce($2, quiet_hours_start),
            quiet_hours_end = coalesce($3, quiet_hours_end),
            essential_kinds = CASE WHEN $4::boolean THEN $5::text[] ELSE essential_kinds END,
            default_language = coalesce($6, default_language),
            updated_at = now()
        WHERE clinic_id = $1
        """,
        clinic_id,
        start,
        end,
        section.essential_kinds is not None,
        section.essential_kinds,
        section.language,
    )
