"""Who arrives when: seeded patient profiles spread over the simulated months.

Everything here is a pure function of the seed: the same ``(seed, patients, start, months)``
gives the same arrivals, whatever the machine or the run's timing.

Arrivals follow a yearly pattern of demand (relative weights per month of the year, northern
hemisphere; shifted by six months in the south): most enquiries in autumn and January, few in
summer and December. Within the simulated period each patient's day is drawn from those weights
(at any time of that day: an enquiry online or by phone).

Profiles (rates per patient): pore grade 35 % small / 40 % moderate / 25 % large; numbing
cream 40 %; Fitzpatrick types I–VI 10/25/30/18/12/5 % (IV–VI get the conservative intervals);
a recent tan 4 % (screening defers 28 days, then the clinic re-screens); one trip with sun
exposure 15 % (7–21 days, starting 10–150 days after arrival).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Final, Literal

from workflows.calendar import add_months

__all__ = [
    "ARRIVAL_WEIGHTS_NORTH",
    "Arrival",
    "ProfileRates",
    "generate_arrivals",
    "period_end",
]

PoreGrade = Literal["small", "moderate", "large"]

# Relative demand by month of the year (1 = January), northern hemisphere.
ARRIVAL_WEIGHTS_NORTH: Final[dict[int, float]] = {
    1: 1.2,
    2: 1.0,
    3: 0.9,
    4: 0.7,
    5: 0.5,
    6: 0.4,
    7: 0.4,
    8: 0.6,
    9: 1.4,
    10: 1.4,
    11: 1.2,
    12: 0.6,
}


@dataclass(frozen=True)
class ProfileRates:
    """Rates of the patients' profiles (see the module docstring)."""

    grades: tuple[tuple[PoreGrade, float], ...] = (
        ("small", 0.35),
        ("moderate", 0.40),
        ("large", 0.25),
    )
    numbing_cream: float = 0.40
    fitzpatrick: tuple[float, ...] = (0.10, 0.25, 0.30, 0.18, 0.12, 0.05)
    recent_tan: float = 0.04
    trip: float = 0.15


@dataclass(frozen=True)
class Arrival:
    """One simulated patient: when they enrol (simulated) and what they bring."""

    index: int
    day_offset: float
    """Simulated days from the start of the period to the enrolment."""
    grade: PoreGrade
    numbing_cream: bool
    fitzpatrick_type: int
    recent_tan: bool
    trips: tuple[tuple[date, date], ...] = field(default=())

    @property
    def name(self) -> str:
        """A fictional name (the patients table only; never in Temporal)."""
        return f"Sim Patient {self.index + 1:05d}"

    def email(self, domain: str) -> str:
        """A fictional address at ``domain`` (an ``.invalid`` domain)."""
        return f"sim-{self.index + 1:05d}@{domain}"


def period_end(start: date, months: int) -> date:
    """The first day after the simulated period."""
    return add_months(start, months)


def _weights(start: date, days: int, hemisphere: str) -> list[float]:
    shift = 6 if hemisphere == "south" else 0
    out = []
    for i in range(days):
        month = (start + timedelta(days=i)).month
        out.append(ARRIVAL_WEIGHTS_NORTH[(month - 1 + shift) % 12 + 1])
    return out


def _pick(rng: random.Random, choices: tuple[tuple[PoreGrade, float], ...]) -> PoreGrade:
    x = rng.random() * sum(w for _, w in choices)
    for value, weight in choices:
        x -= weight
        if x < 0:
            return value
    return choices[-1][0]


def generate_arrivals(
    patients: int,
    start: date,
    months: int,
    seed: int,
    *,
    hemisphere: str = "north",
    rates: ProfileRates | None = None,
    arrival_share: float = 1.0,
) -> list[Arrival]:
    """``patients`` arrivals over ``months`` months from ``start``, sorted by time.

    Args:
        arrival_share: Arrivals fall in the first ``arrival_share`` of the period (1: all of
            it; a shorter share leaves the last patients time to be treated).

    Returns:
        The arrivals, ordered by ``day_offset``; indices follow that order.
    """
    rates = rates or ProfileRates()
    rng = random.Random(f"arrivals:{seed}")
    days = max(1, round((period_end(start, months) - start).days * arrival_share))
    weights = _weights(start, days, hemisphere)
    picked = sorted(d + rng.random() for d in rng.choices(range(days), weights=weights, k=patients))
    out: list[Arrival] = []
    for i, offset in enumerate(picked):
        # One generator per patient: a profile does not depend on how many came before.
        p = random.Random(f"profile:{seed}:{i}")
        fitz = p.choices(range(1, 7), weights=rates.fitzpatrick)[0]
        trips: tuple[tuple[date, date], ...] = ()
        if p.random() < rates.trip:
            arrival = start + timedelta(days=int(offset))
            trip_start = arrival + timedelta(days=p.randint(10, 150))
            trips = ((trip_start, trip_start + timedelta(days=p.randint(7, 21) - 1)),)
        out.append(
            Arrival(
                index=i,
                day_offset=offset,
                grade=_pick(p, rates.grades),
                numbing_cream=p.random() < rates.numbing_cream,
                fitzpatrick_type=fitz,
                recent_tan=p.random() < rates.recent_tan,
                trips=trips,
            )
        )
    return out
