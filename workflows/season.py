"""The treatment season: no sessions in summer, the last one well before summer starts.

Summer is counted in whole months (meteorological seasons): by default June–August in the
north (1 June – 31 August) and December–February in the south (1 December – 28/29 February),
or the clinic's explicit ``summer_months``. The *season* is the run of days between two summers.

Boundaries (north, defaults):
    * 31 May is in season, 1 June – 31 August are summer, 1 September is in season again.
    * Cutoff: a course's last session may be on 2 May (1 June − 30 days), not on 3 May.

Guarantees: pure and deterministic; every function works for any date and any validated
:class:`~workflows.protocol.ClinicProtocol` (whose seasons are never empty).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from pydantic import BaseModel, ConfigDict

from workflows.calendar import add_months
from workflows.protocol import ClinicSettings, Protocol
from workflows.reasons import Reason, format_date, format_months

__all__ = [
    "SeasonCheck",
    "course_straddles_summer",
    "in_summer",
    "is_in_season",
    "next_season_opening",
    "next_summer_start_after",
    "season_cutoff",
    "season_window",
    "summer_end",
    "summer_start_after",
]


class SeasonCheck(BaseModel):
    """Whether a date is in the treatment season.

    Attributes:
        in_season: False if the date is in a summer month.
        reason: ``rule="in_summer"`` with the summer's months and the next opening when not in
            season; None when in season.
    """

    model_config = ConfigDict(frozen=True)

    in_season: bool
    reason: Reason | None = None


def in_summer(d: date, clinic: ClinicSettings) -> bool:
    """True if ``d`` falls in one of the clinic's summer months."""
    return d.month in clinic.effective_summer_months()


def summer_start_after(d: date, clinic: ClinicSettings) -> date:
    """The first day of the summer that ``d`` is before or inside.

    If ``d`` is outside summer: the first day of the next summer (always after ``d``). If ``d``
    is inside summer: the first day of *that* summer (on or before ``d``; in the south,
    15 January 2027 gives 1 December 2026).
    """
    months = clinic.effective_summer_months()
    first_of_month = d.replace(day=1)
    if d.month in months:
        return add_months(first_of_month, -months.index(d.month))
    return add_months(first_of_month, (months[0] - d.month) % 12)


def summer_end(summer_start: date, clinic: ClinicSettings) -> date:
    """The last day of the summer starting on ``summer_start`` (e.g. 31 August)."""
    months = clinic.effective_summer_months()
    return add_months(summer_start, len(months)) - timedelta(days=1)


def next_summer_start_after(d: date, clinic: ClinicSettings) -> date:
    """The first day of the first summer that begins strictly after ``d``."""
    start = summer_start_after(d, clinic)
    if start <= d:  # d is inside that summer: take the next one
        start = summer_start_after(summer_end(start, clinic) + timedelta(days=1), clinic)
    return start


def course_straddles_summer(session_dates: Sequence[date], clinic: ClinicSettings) -> bool:
    """Whether a summer splits the course: the staff's "course split" flag.

    True exactly when a summer (the clinic's months) begins after the first session date and
    on or before the last one. False for fewer than two dates, for a course inside one season
    (even when a trip made it wait weeks between sessions), and for a course that only starts
    inside a summer. The dates may come in any order (done and planned sessions together).
    """
    if len(session_dates) < 2:
        return False
    first, last = min(session_dates), max(session_dates)
    return next_summer_start_after(first, clinic) <= last


def next_season_opening(d: date, clinic: ClinicSettings) -> date:
    """``d`` itself if it is outside summer, else the first day after the current summer."""
    if not in_summer(d, clinic):
        return d
    return summer_end(summer_start_after(d, clinic), clinic) + timedelta(days=1)


def season_cutoff(d: date, clinic: ClinicSettings, protocol: Protocol) -> date:
    """The last allowed date of a course's last session in the season containing ``d``.

    ``= start of the next summer − protocol.summer_buffer_days``; that day itself is allowed
    (with a buffer of 0 the cutoff is the last day before summer).
    If ``d`` is in summer, the season is the one opening after that summer. Note that ``d``
    may itself be after the cutoff (e.g. 10 May in the north: the cutoff is 2 May).
    """
    opening = next_season_opening(d, clinic)
    summer_start = summer_start_after(opening, clinic)
    # With summer_buffer_days = 0 the cutoff is still the last day before summer.
    return min(
        summer_start - timedelta(days=protocol.summer_buffer_days),
        summer_start - timedelta(days=1),
    )


def season_window(d: date, clinic: ClinicSettings, protocol: Protocol) -> tuple[date, date]:
    """The ``(opens, cutoff)`` window a course starting on or after ``d`` can use.

    ``opens`` is the first usable day on/after ``d`` (``d`` itself if it is in season and not
    after the cutoff), ``cutoff`` the last day allowed for the last session; every day in
    ``opens..cutoff`` is outside summer and ``opens <= cutoff``. If ``d`` is in season but after
    its cutoff, the window is the next season's.

    Raises:
        ValueError: If the season is shorter than ``summer_buffer_days`` (impossible for a
            validated ClinicProtocol).
    """
    opens = next_season_opening(d, clinic)
    cutoff = season_cutoff(opens, clinic, protocol)
    if opens > cutoff:
        opens = next_season_opening(summer_start_after(opens, clinic), clinic)
        cutoff = season_cutoff(opens, clinic, protocol)
    if opens > cutoff:
        raise ValueError(
            "the season outside summer is shorter than summer_buffer_days; no course can fit"
        )
    return opens, cutoff


def is_in_season(d: date, clinic: ClinicSettings) -> SeasonCheck:
    """Check that ``d`` is outside summer.

    Returns:
        ``SeasonCheck(in_season=True)`` or, in summer, ``in_season=False`` with a reason
        ``in_summer`` naming the summer months and the day the season opens again.
    """
    if not in_summer(d, clinic):
        return SeasonCheck(in_season=True, reason=None)
    months = format_months(clinic.effective_summer_months())
    opening = next_season_opening(d, clinic)
    return SeasonCheck(
        in_season=False,
        reason=Reason(
            rule="in_summer",
            message=(
                f"{format_date(d)} is in summer ({months}) at this clinic, and treatment is "
                f"only given outside summer; the season opens again on {format_date(opening)}."
            ),
        ),
    )
