"""The clinical protocol as data: every clinical number, with defaults from DOMAIN.md.

A clinic tunes the protocol with a clinic file (TOML, YAML or JSON) read by
:func:`workflows.protocol_file.load_clinic_protocol`; each journey records :attr:`Protocol.version`.

Guarantees:
    * Every model is a frozen pydantic v2 model with ``extra="forbid"``: an unknown key is an
      error, never silently ignored.
    * Validators reject inconsistent settings with a message naming the field and the rule
      (e.g. ``target_interval_min_days`` must not exceed ``target_interval_max_days``).
    * Apart from :func:`workflows.protocol_file.load_clinic_protocol` (which reads the file it is given), the module is
      pure: no clock, no randomness, no I/O. ``zoneinfo`` look-ups only read the time-zone
      database. It is safe to pass through the Temporal workflow sandbox.
"""

from __future__ import annotations

import calendar as _stdlib_calendar
from datetime import date, time
from typing import TYPE_CHECKING, Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from workflows.bounds import ClinicDate
from workflows.screening_rules import (
    DEFAULT_PHOTOSENSITISING_DRUGS as DEFAULT_PHOTOSENSITISING_DRUGS,
)
from workflows.screening_rules import ScreeningRules as ScreeningRules
from workflows.screening_rules import normalise_drug_name as normalise_drug_name

__all__ = [
    "DEFAULT_PHOTOSENSITISING_DRUGS",
    "ClinicProtocol",
    "ClinicSettings",
    "DateRange",
    "Hemisphere",
    "PoreGrade",
    "Protocol",
    "ScreeningRules",
    "normalise_drug_name",
]

PoreGrade = Literal["small", "moderate", "large"]
"""Pore-size grade recorded at enrolment; it decides the number of sessions."""

Hemisphere = Literal["north", "south"]
"""Where the clinic is; it decides the default summer months."""

_FROZEN = ConfigDict(frozen=True, extra="forbid")

_DEFAULT_SUMMER: dict[str, tuple[int, ...]] = {"north": (6, 7, 8), "south": (12, 1, 2)}


class DateRange(BaseModel):
    """A closed date range, both ends inclusive (used for planned trips with sun exposure).

    Attributes:
        start: First day of the range.
        end: Last day of the range (``end >= start``; a one-day range has ``end == start``).
    """

    model_config = _FROZEN

    # Bounded like every date from outside (workflows/bounds.py): a trip sent straight to
    # Temporal cannot carry a date the planner's arithmetic would overflow on.
    start: ClinicDate
    end: ClinicDate

    @model_validator(mode="after")
    def _end_not_before_start(self) -> DateRange:
        if self.end < self.start:
            raise ValueError(
                f"end ({self.end.isoformat()}) must be on or after start ({self.start.isoformat()})"
            )
        return self

    def contains(self, d: date) -> bool:
        """True if ``start <= d <= end`` (both ends inclusive)."""
        return self.start <= d <= self.end


class Protocol(BaseModel):
    """Every clinical number of the pore-contraction course, with DOMAIN.md defaults.

    Interval boundaries: two sessions ``a < b`` respect the minimum interval iff
    ``(b - a).days >= min_interval_days`` (21 allowed, 20 refused). The target interval is
    ``target_interval_min_days..target_interval_max_days`` days inclusive; for Fitzpatrick
    IV–VI (``conservative``) the minimum and target become
    ``conservative_interval_min_days..conservative_interval_max_days``.

    Season boundary: the last session may be on the day ``summer start - summer_buffer_days``
    and not later. Trip boundary: the last session may be on ``trip start - trip_buffer_days``
    and not later.

    Attributes:
        version: Recorded by each journey at its start.
        sessions_by_grade: Sessions in a course for each pore-size grade.
        min_interval_days: Hard minimum between two sessions; never less.
        target_interval_min_days: Lower end of the target interval (the planner's choice).
        target_interval_max_days: Upper end of the target interval.
        conservative_interval_min_days: Minimum and target lower end with conservative settings.
        conservative_interval_max_days: Target upper end with conservative settings.
        session_minutes_min: Shortest session (small area).
        session_minutes_max: Longest session (large area).
        numbing_lead_minutes: Numbing cream goes on this long before the session.
        recovery_days_min: Redness/swelling usually lasts at least this many days.
        recovery_days_max: A reaction lasting past this day is for a clinician to see.
        recovery_checkin_day: Day after a session of the recovery check-in.
        spf_months: Sun protection (SPF ``spf_factor``) is required until
            ``last session + spf_months`` (inclusive).
        review_months: Review of the result ``review_months`` after the last session.
        summer_buffer_days: Last session at least this many days before summer starts.
        trip_buffer_days: Last session at least this many days before a planned trip.
        no_show_grace_hours: Hours after the end of the appointment day before a no-show.
        reminder_lead_hours: Appointment reminder this many hours before the session.
        spf_reminder_interval_days: SPF reminders this often during the SPF window.
        review_overdue_days: Review flagged overdue this many days after its date.
        checkin_overdue_days: Recovery check-in flagged overdue this many days after its day.
        max_sessions_per_course: Upper bound on sessions planned in one course.
        planning_horizon_years: The planner searches this far ahead before giving up.
        booking_notice_days: A journey books its first session at least this many days ahead.
        slot_retry_hours: With built-in scheduling, how often a journey whose session found no
            free slot inside its allowed window asks again (a cancellation frees one).
        review_early_days: How many days before the review date ``record_review`` is accepted
            (0–14): accepted from ``review date − review_early_days``, that day included.
        spf_factor: The sun-protection factor named in every text (15–100; seed: SPF 50).
        completion_clock_skew_minutes: How far (0–120 minutes) in the future of the journey's
            clock a reported session completion may be; a later one is refused (a device or
            booking system with a wrong clock, or a mistyped date).
        screening: Screening numbers and drug list.
    """

    model_config = _FROZEN

    version: str = Field(default="pore-2026.1", min_length=1)
    sessions_by_grade: dict[str, int] = Field(
        default_factory=lambda: {"small": 3, "moderate": 3, "large": 4}
    )
    min_interval_days: int = Field(default=21, ge=1)
    target_interval_min_days: int = Field(default=21, ge=1)
    target_interval_max_days: int = Field(default=28, ge=1)
    conservative_interval_min_days: int = Field(default=28, ge=1)
    conservative_interval_max_days: int = Field(default=42, ge=1)
    session_minutes_min: int = Field(default=20, ge=1)
    session_minutes_max: int = Field(default=30, ge=1)
    numbing_lead_minutes: int = Field(default=20, ge=0)
    recovery_days_min: int = Field(default=5, ge=0)
    recovery_days_max: int = Field(default=7, ge=1)
    recovery_checkin_day: int = Field(default=7, ge=1)
    spf_months: int = Field(default=2, ge=1)
    review_months: int = Field(default=3, ge=1)
    summer_buffer_days: int = Field(default=30, ge=0)
    trip_buffer_days: int = Field(default=30, ge=0)
    no_show_grace_hours: int = Field(default=12, ge=0)
    reminder_lead_hours: int = Field(default=24, ge=0)
    spf_reminder_interval_days: int = Field(default=14, ge=1)
    review_overdue_days: int = Field(default=14, ge=0)
    checkin_overdue_days: int = Field(default=2, ge=0)
    max_sessions_per_course: int = Field(default=6, ge=1)
    planning_horizon_years: int = Field(default=10, ge=1, le=50)
    booking_notice_days: int = Field(default=1, ge=0)
    review_early_days: int = Field(default=3, ge=0, le=14)
    spf_factor: int = Field(default=50, ge=15, le=100)
    completion_clock_skew_minutes: int = Field(default=10, ge=0, le=120)
    slot_retry_hours: int = Field(default=24, ge=1, le=24 * 14)
    screening: ScreeningRules = Field(default_factory=ScreeningRules)

    @field_validator("sessions_by_grade")
    @classmethod
    def _grades_complete_and_positive(cls, value: dict[str, int]) -> dict[str, int]:
        missing = [g for g in get_args(PoreGrade) if g not in value]
        if missing:
            raise ValueError(
                f"must give sessions for every grade ({', '.join(get_args(PoreGrade))}); "
                f"missing: {', '.join(missing)}"
            )
        bad = [f"{g}={n}" for g, n in value.items() if n < 1]
        if bad:
            raise ValueError(f"sessions per grade must be at least 1 (got {', '.join(bad)})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Protocol:
        problems: list[str] = []

        def need(ok: bool, text: str) -> None:
            if not ok:
                problems.append(text)

        need(
            self.target_interval_min_days <= self.target_interval_max_days,
            f"target_interval_min_days ({self.target_interval_min_days}) must not exceed "
            f"target_interval_max_days ({self.target_interval_max_days})",
        )
        need(
            self.min_interval_days <= self.target_interval_min_days,
            f"min_interval_days ({self.min_interval_days}) must not exceed "
            f"target_interval_min_days ({self.target_interval_min_days})",
        )
        need(
            self.conservative_interval_min_days <= self.conservative_interval_max_days,
            f"conservative_interval_min_days ({self.conservative_interval_min_days}) must not "
            f"exceed conservative_interval_max_days ({self.conservative_interval_max_days})",
        )
        need(
            self.min_interval_days <= self.conservative_interval_min_days,
            f"min_interval_days ({self.min_interval_days}) must not exceed "
            f"conservative_interval_min_days ({self.conservative_interval_min_days})",
        )
        need(
            self.session_minutes_min <= self.session_minutes_max,
            f"session_minutes_min ({self.session_minutes_min}) must not exceed "
            f"session_minutes_max ({self.session_minutes_max})",
        )
        need(
            self.recovery_days_min <= self.recovery_days_max,
            f"recovery_days_min ({self.recovery_days_min}) must not exceed "
            f"recovery_days_max ({self.recovery_days_max})",
        )
        too_many = [
            f"{g}={n}"
            for g, n in self.sessions_by_grade.items()
            if n > self.max_sessions_per_course
        ]
        need(
            not too_many,
            f"sessions_by_grade must not exceed max_sessions_per_course "
            f"({self.max_sessions_per_course}); got {', '.join(too_many)}",
        )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def sessions_for(self, grade: str) -> int:
        """Number of sessions in a course for a pore-size grade.

        Raises:
            ValueError: If the grade is unknown; the message names the known grades.
        """
        try:
            return self.sessions_by_grade[grade]
        except KeyError:
            known = ", ".join(self.sessions_by_grade)
            raise ValueError(f"unknown pore-size grade {grade!r}; known grades: {known}") from None

    def spf_label(self) -> str:
        """The sun protection as named to patients and staff, e.g. ``"SPF 50"``."""
        return f"SPF {self.spf_factor}"

    def spf_period(self) -> str:
        """How long sun protection lasts after the last session, e.g. ``"2 months"``."""
        return _months_text(self.spf_months)

    def review_period(self) -> str:
        """When the review is, counted from the last session, e.g. ``"3 months"``."""
        return _months_text(self.review_months)

    def interval_bounds(self, conservative: bool = False) -> tuple[int, int, int]:
        """The interval rules in force.

        Returns:
            ``(hard_min, target_min, target_max)`` in days: the normal ones, or with
            ``conservative`` the conservative minimum (also the hard minimum) and maximum.
        """
        if conservative:
            return (
                self.conservative_interval_min_days,
                self.conservative_interval_min_days,
                self.conservative_interval_max_days,
            )
        return (
            self.min_interval_days,
            self.target_interval_min_days,
            self.target_interval_max_days,
        )


def _months_text(months: int) -> str:
    """``1`` → ``"1 month"``, ``3`` → ``"3 months"``."""
    return f"{months} month" if months == 1 else f"{months} months"


def _normalise_summer(months: tuple[int, ...]) -> tuple[int, ...]:
    """Validate a run of summer months and return it in calendar order of the run.

    The run may wrap from December to January: ``(1, 2, 12)`` becomes ``(12, 1, 2)``.
    """
    if not months:
        raise ValueError("summer_months must name at least one month (or be left out)")
    bad = [m for m in months if not 1 <= m <= 12]
    if bad:
        raise ValueError(f"summer months must be 1–12 (got {bad})")
    unique = set(months)
    if len(unique) != len(months):
        raise ValueError(f"summer months must not repeat (got {list(months)})")
    if len(unique) == 12:
        raise ValueError("summer_months must leave at least one month outside summer")
    starts = [m for m in unique if ((m - 2) % 12) + 1 not in unique]
    if len(starts) != 1:
        raise ValueError(
            f"summer months must be one contiguous run, e.g. [6, 7, 8] or [12, 1, 2] "
            f"(got {list(months)})"
        )
    first = starts[0]
    return tuple(((first - 1 + i) % 12) + 1 for i in range(len(unique)))


class ClinicSettings(BaseModel):
    """Where and when a clinic works.

    Attributes:
        clinic_id: Stable id of the clinic.
        name: Display name.
        timezone: IANA zone name (validated with ``zoneinfo``); all clinical dates are local.
        hemisphere: Decides the default summer: north → June–August, south → December–February.
        summer_months: Explicit override of the summer months: one contiguous run (may wrap
            December → January), each 1–12, leaving at least one month outside summer.
            Normalised to the run's order, e.g. ``[1, 2, 12]`` → ``(12, 1, 2)``.
        open_weekdays: Days sessions can be booked (Monday=0 … Sunday=6); sorted, de-duplicated.
        session_start: Local start time of the default appointment.
        consent_required: No session is booked without the patient's valid informed consent
            (the clinic's required consent version); the journey waits with the
            ``consent_needed`` flag until it is given.
        sandbox: A training or demonstration clinic: only such a clinic (or a development
            deployment) may run journeys on the simulation clock (``time_scale`` other than 1).
        booking: Who owns the appointment slots (``workflows/booking.py``): ``builtin`` (our
            scheduler over the clinic's resources in PostgreSQL) or ``external`` (the clinic's
            own booking system, which receives each session's allowed window and reports its
            appointments back).
    """

    model_config = _FROZEN

    clinic_id: str = Field(default="default", min_length=1)
    name: str = "Default clinic"
    timezone: str = "UTC"
    hemisphere: Hemisphere = "north"
    summer_months: tuple[int, ...] | None = None
    open_weekdays: tuple[int, ...] = (0, 1, 2, 3, 4)
    session_start: time = time(9, 0)
    sandbox: bool = False
    consent_required: bool = False
    booking: Literal["builtin", "external"] = "builtin"

    @field_validator("timezone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name such as 'Europe/Paris'"
            ) from None
        return value

    @field_validator("summer_months")
    @classmethod
    def _valid_summer(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        return None if value is None else _normalise_summer(value)

    @field_validator("open_weekdays")
    @classmethod
    def _valid_weekdays(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:
            raise ValueError("open_weekdays must name at least one day (Monday=0 … Sunday=6)")
        bad = [d for d in value if not 0 <= d <= 6]
        if bad:
            raise ValueError(f"open weekdays must be 0–6, Monday=0 (got {bad})")
        return tuple(sorted(set(value)))

    @field_validator("session_start", mode="before")
    @classmethod
    def _time_not_number(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted 10:30 as the number 630; refuse numbers outright.
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError('must be a time such as "09:30" (quote it in YAML)')
        return value

    def effective_summer_months(self) -> tuple[int, ...]:
        """The summer months in force, in run order (e.g. ``(12, 1, 2)`` in the south)."""
        if self.summer_months is not None:
            return self.summer_months
        return _DEFAULT_SUMMER[self.hemisphere]

    def tz(self) -> ZoneInfo:
        """The clinic's time zone."""
        return ZoneInfo(self.timezone)


def _shortest_season_days(summer: tuple[int, ...]) -> int:
    """Days outside summer between two summers, in the shortest (non-leap) year."""
    return sum(_stdlib_calendar.monthrange(2023, m)[1] for m in range(1, 13) if m not in summer)


class ClinicProtocol(BaseModel):
    """A clinic and the protocol it uses: the contents of a clinic file.

    Guarantees:
        Every season has at least one day on which a course's last session is allowed, i.e.
        the days outside summer exceed ``protocol.summer_buffer_days``.
    """

    model_config = _FROZEN

    clinic: ClinicSettings = Field(default_factory=ClinicSettings)
    protocol: Protocol = Field(default_factory=Protocol)

    @model_validator(mode="after")
    def _season_not_empty(self) -> ClinicProtocol:
        days = _shortest_season_days(self.clinic.effective_summer_months())
        if days <= self.protocol.summer_buffer_days:
            raise ValueError(
                f"the season outside summer ({days} days) must be longer than "
                f"protocol.summer_buffer_days ({self.protocol.summer_buffer_days})"
            )
        return self


if TYPE_CHECKING:
    from workflows.protocol_file import (
        ProtocolFileError as ProtocolFileError,
    )
    from workflows.protocol_file import (
        clinic_protocol_from_dict as clinic_protocol_from_dict,
    )
    from workflows.protocol_file import (
        load_clinic_protocol as load_clinic_protocol,
    )


def __getattr__(name: str) -> Any:
    # The clinic-file reader lives in workflows.protocol_file (it imports this module); its
    # names stay importable from here.
    if name in ("ProtocolFileError", "clinic_protocol_from_dict", "load_clinic_protocol"):
        from workflows import protocol_file

        return getattr(protocol_file, name)
    raise AttributeError(name)
