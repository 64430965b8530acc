"""A clinic's scheduling resources and rules, as the clinic file's ``[scheduling]`` section
declares them (docs/scheduling.md).

The section is read by :func:`scheduling_from_file` / :func:`scheduling_from_dict`, never into
:class:`workflows.protocol.ClinicProtocol`: the protocol travels in every journey's Temporal
history, the clinic's lasers and opening hours must not. Labels are display labels (a device's
name, a practitioner's initials or code), never a person's name.

TOML::

    [scheduling]
    turnover_minutes = 10
    step_minutes = 15
    slot_minutes = { small = 20, moderate = 25, large = 30 }
    needs = { device = 1, practitioner = 1 }

    [scheduling.hours]            # the clinic's default hours, local time
    mon = ["09:00-17:00"]
    tue = ["09:00-12:30", "13:30-17:00"]

    [[scheduling.resources]]
    resource_id = "laser-1"
    kind = "device"
    label = "Icon laser 1"
    # hours = { sat = ["09:00-13:00"] }   # its own hours instead of the clinic's

    [[scheduling.closures]]
    starts_on = 2026-12-24
    ends_on = 2026-12-26
    reason = "Christmas"
    # resource_id = "laser-2"             # one resource only
"""

from __future__ import annotations

import itertools
import json
import tomllib
from datetime import date, time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from workflows.booking import ResourceKind
from workflows.bounds import ClinicDate, safe_text

if TYPE_CHECKING:
    Label = str
    Reason = str
else:
    Label = safe_text(80)
    Reason = safe_text(200, min_length=1)

__all__ = [
    "DEFAULT_HOURS",
    "LOCAL_TIME_PATTERN",
    "WEEKDAYS",
    "ClinicScheduling",
    "Closure",
    "LocalTime",
    "Resource",
    "SchedulingFileError",
    "SchedulingSetup",
    "SlotRules",
    "TimeRange",
    "WeekHours",
    "scheduling_from_dict",
    "scheduling_from_file",
]

WEEKDAYS: Final[tuple[str, ...]] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
PoreGrade = Literal["small", "moderate", "large"]
RESOURCE_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_RESOURCES: Final = 100
MAX_CLOSURES: Final = 500
MAX_RANGES_PER_DAY: Final = 6


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _hhmm(t: time) -> str:
    return t.strftime("%H:%M:%S" if t.second else "%H:%M")


LOCAL_TIME_PATTERN: Final = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$"
LocalTime = Annotated[
    time,
    PlainSerializer(_hhmm, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": LOCAL_TIME_PATTERN, "examples": ["09:00"]}),
]
"""A local wall time, ``"HH:MM"`` in JSON (no offset: local to the clinic's zone)."""


class TimeRange(_Model):
    """A local time range ``[start, end)`` within one day; written ``"09:00-17:00"`` or as a
    mapping ``{start = "09:00", end = "17:00"}``."""

    start: LocalTime
    end: LocalTime

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = value.replace("–", "-").split("-")
            if len(parts) != 2:
                raise ValueError(f"a time range is written 'HH:MM-HH:MM', not {value!r}")
            return {"start": parts[0].strip(), "end": parts[1].strip()}
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return {"start": value[0], "end": value[1]}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> TimeRange:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("times are local to the clinic: no time zone")
        if not self.start < self.end:
            raise ValueError(f"the range must end after it starts ({self.text})")
        return self

    @property
    def text(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


DayRanges = list[TimeRange]


class WeekHours(_Model):
    """Working hours per weekday (a day not given is closed)."""

    mon: DayRanges = Field(default=[], max_length=MAX_RANGES_PER_DAY)
    tue: DayRanges = Field(default=[], max_length=MAX_RANGES_PER_DAY)
    wed: DayRanges = Field(default=[], max_length=MAX_RANGES_PER_DAY)
    thu: DayRanges = Field(default=[], max_length=MAX_RANGES_PER_DAY)
    fri: DayRanges = Field(default=[], max_length=MAX_RANGES_PER_DAY)
    sat: DayRanges = Field(default=[], max_length=MAX_RANGES_PER_DAY)
    sun: DayRanges = Field(default=[], max_length=MAX_RANGES_PER_DAY)

    @model_validator(mode="after")
    def _no_overlap(self) -> WeekHours:
        for name in WEEKDAYS:
            ranges = sorted(getattr(self, name), key=lambda r: r.start)
            for a, b in itertools.pairwise(ranges):
                if b.start < a.end:
                    raise ValueError(f"{name}: {a.text} and {b.text} overlap")
        return self

    def on(self, weekday: int) -> list[TimeRange]:
        """The ranges of ``weekday`` (0 = Monday), by start."""
        ranges: list[TimeRange] = getattr(self, WEEKDAYS[weekday])
        return sorted(ranges, key=lambda r: r.start)

    def rows(self) -> list[tuple[int, time, time]]:
        """``(weekday, start, end)`` rows, as ``scheduling_hours`` stores them."""
        return [(i, r.start, r.end) for i in range(7) for r in self.on(i)]

    @classmethod
    def from_rows(cls, rows: list[tuple[int, time, time]]) -> WeekHours:
        days: dict[str, list[TimeRange]] = {name: [] for name in WEEKDAYS}
        for weekday, start, end in rows:
            days[WEEKDAYS[weekday]].append(TimeRange(start=start, end=end))
        return cls.model_validate(days)

    @property
    def empty(self) -> bool:
        return not any(getattr(self, name) for name in WEEKDAYS)


DEFAULT_HOURS: Final = WeekHours.model_validate(
    {name: ["09:00-17:00"] for name in ("mon", "tue", "wed", "thu", "fri")}
)


class Resource(_Model):
    """A device (laser), room or practitioner; ``hours`` None: the clinic's default hours."""

    resource_id: str = Field(pattern=RESOURCE_ID_PATTERN)
    kind: ResourceKind
    label: Label = ""
    hours: WeekHours | None = None
    active: bool = True


class Closure(_Model):
    """Whole days (inclusive) when the clinic, or one resource, takes no session."""

    starts_on: ClinicDate
    ends_on: ClinicDate
    reason: Reason
    resource_id: str | None = Field(default=None, pattern=RESOURCE_ID_PATTERN)
    id: int | None = None
    """The stored row's id (None before it is stored)."""

    @model_validator(mode="after")
    def _ordered(self) -> Closure:
        if self.ends_on < self.starts_on:
            raise ValueError("ends_on must not be before starts_on")
        if (self.ends_on - self.starts_on).days > 366:
            raise ValueError("a closure spans at most 367 days; add one per year")
        return self

    def covers(self, day: date, resource_id: str | None = None) -> bool:
        """True if this closure closes ``day`` for the clinic (or for ``resource_id``)."""
        if not self.starts_on <= day <= self.ends_on:
            return False
        return self.resource_id is None or self.resource_id == resource_id


def _default_slot_minutes() -> dict[PoreGrade, int]:
    return {"small": 20, "moderate": 25, "large": 30}


def _default_needs() -> dict[ResourceKind, int]:
    return {"device": 1, "practitioner": 1}


class SlotRules(_Model):
    """How long a slot is and what it needs."""

    slot_minutes: dict[PoreGrade, int] = Field(default_factory=_default_slot_minutes)
    """The session's length by pore grade (a grade not listed: the protocol's length)."""
    turnover_minutes: int = Field(default=10, ge=0, le=240)
    """Held after each session (cleaning, the device cooling); part of the reserved range."""
    step_minutes: int = Field(default=15, ge=5, le=240)
    """Start times are on this grid from the start of each working range."""
    needs: dict[ResourceKind, int] = Field(default_factory=_default_needs)
    """How many resources of each kind a session holds (kinds not listed: none)."""

    @field_validator("slot_minutes")
    @classmethod
    def _lengths(cls, value: dict[PoreGrade, int]) -> dict[PoreGrade, int]:
        for grade, minutes in value.items():
            if not 5 <= minutes <= 8 * 60:
                raise ValueError(f"{grade}: a slot lasts 5 to 480 minutes, not {minutes}")
        return value

    @field_validator("needs")
    @classmethod
    def _needs(cls, value: dict[ResourceKind, int]) -> dict[ResourceKind, int]:
        for kind, count in value.items():
            if not 0 <= count <= 5:
                raise ValueError(f"{kind}: a session needs 0 to 5 of a kind, not {count}")
        if not any(value.values()):
            raise ValueError("a session needs at least one resource")
        return value

    def minutes_for(self, pore_grade: str, default: int) -> int:
        """The slot length for ``pore_grade`` (``default`` when the rules do not list it)."""
        return self.slot_minutes.get(pore_grade, default)  # type: ignore[call-overload, no-any-return]


class SchedulingSetup(SlotRules):
    """A clinic's set-up as stored and shown (API, CLI): rules, default hours, resources,
    closures. No cross-checks: staff may leave it short of what a session needs (the search
    then finds nothing)."""

    hours: WeekHours = DEFAULT_HOURS
    resources: list[Resource] = []
    closures: list[Closure] = []


class ClinicScheduling(SchedulingSetup):
    """The clinic file's ``[scheduling]`` section: rules, default hours, resources, closures,
    checked as a whole."""

    resources: list[Resource] = Field(default=[], max_length=MAX_RESOURCES)
    closures: list[Closure] = Field(default=[], max_length=MAX_CLOSURES)

    @model_validator(mode="after")
    def _consistent(self) -> ClinicScheduling:
        ids = [r.resource_id for r in self.resources]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"resource ids must be unique: {', '.join(duplicates)}")
        for closure in self.closures:
            if closure.resource_id is not None and closure.resource_id not in ids:
                raise ValueError(f"closure {closure.reason!r}: no resource {closure.resource_id!r}")
        if self.resources:
            for kind, count in self.needs.items():
                have = sum(1 for r in self.resources if r.kind == kind and r.active)
                if have < count:
                    raise ValueError(f"a session needs {count} {kind}(s) but the clinic has {have}")
        return self

    def rules(self) -> SlotRules:
        return SlotRules.model_validate(
            self.model_dump(include={"slot_minutes", "turnover_minutes", "step_minutes", "needs"})
        )


class SchedulingFileError(ValueError):
    """A ``[scheduling]`` section that cannot be used; ``problems`` has one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def scheduling_from_dict(data: Any, *, source: str = "clinic file") -> ClinicScheduling | None:
    """The ``scheduling`` section of a parsed clinic file (the whole mapping), or ``None`` when
    the file has none (the clinic keeps its default time, without capacity)."""
    if not isinstance(data, dict) or data.get("scheduling") is None:
        return None
    try:
        return ClinicScheduling.model_validate(data["scheduling"])
    except ValidationError as error:
        lines = []
        for item in error.errors():
            path = ".".join(str(p) for p in ("scheduling", *item["loc"]))
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                message = "unknown key"
            lines.append(f"{source}: {path}: {message}")
        raise SchedulingFileError(lines) from None


def read_clinic_file(path: str | Path) -> Any:
    """The parsed mapping of a clinic file (.toml, .yaml/.yml, .json)."""
    file = Path(path)
    suffix = file.suffix.lower()
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SchedulingFileError([f"{file}: cannot read the file: {error}"]) from None
    import yaml

    try:
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix == ".json":
            return json.loads(text)
        if suffix in (".yaml", ".yml"):
            return yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError) as error:
        raise SchedulingFileError([f"{file}: not valid {suffix[1:].upper()}: {error}"]) from None
    raise SchedulingFileError([f"{file}: unknown file type {suffix or '(none)'!r}"])


def scheduling_from_file(path: str | Path) -> ClinicScheduling | None:
    """The ``[scheduling]`` section of a clinic file, or ``None`` when it has none.

    Raises:
        SchedulingFileError: unreadable file or an invalid section, one line per problem.
    """
    return scheduling_from_dict(read_clinic_file(path), source=str(path))
