"""What goes wrong, and how often: the simulation's noise at stated, seeded rates.

Each decision is a pure function of ``(seed, patient, what, course, session)`` (a generator
seeded with that key), never of the order in which the run happens to ask: two runs with the
same seed inject the same no-shows, reschedules, reactions, adverse events and withdrawals into
the same patients' same sessions, however the machine's timing differs.

Rates (defaults in :class:`NoiseRates`), per booked session unless said otherwise:

* ``no_show`` 5 %: the patient does not come; nothing is reported and the journey records the
  no-show at the end of the day plus its grace, then rebooks within the rules;
* ``reschedule`` 8 %: once the session is booked (two days or more before it) the patient asks
  to move it 2–10 days later (the journey answers with the new plan, or refuses with its rules);
* ``prolonged_reaction`` 3 %: the recovery check-in reports a prolonged reaction (the journey
  pauses for a clinician); the clinician resumes it ``resume_after_days`` later;
* ``adverse_event`` 1 %: a clinician reports a mild or moderate adverse event during the
  recovery (the journey pauses and flags it); resumed ``resume_after_days`` later;
* ``withdrawal`` 3 % per patient: the patient withdraws, before the first session or after one
  of their sessions (equally likely).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["NoiseRates", "SeededNoise"]


@dataclass(frozen=True)
class NoiseRates:
    """The rates of :mod:`worker.simulation.noise` (probabilities, 0–1)."""

    no_show: float = 0.05
    reschedule: float = 0.08
    prolonged_reaction: float = 0.03
    adverse_event: float = 0.01
    withdrawal: float = 0.03
    resume_after_days: int = 10

    def __post_init__(self) -> None:
        for name in ("no_show", "reschedule", "prolonged_reaction", "adverse_event", "withdrawal"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value}")
        if self.resume_after_days < 0:
            raise ValueError("resume_after_days must not be negative")


@dataclass(frozen=True)
class SeededNoise:
    """The decisions of one run (``seed``) at ``rates``."""

    seed: int
    rates: NoiseRates = field(default_factory=NoiseRates)

    def _rng(self, *key: object) -> random.Random:
        return random.Random(":".join(str(k) for k in (self.seed, *key)))

    def _hit(self, rate: float, *key: object) -> bool:
        return rate > 0 and self._rng(*key).random() < rate

    def no_show(self, patient: int, course: int, session: int, attempt: int = 0) -> bool:
        """Whether the patient misses this booking (``attempt``: 0 for the first booking of
        the session, 1 for its rebooking after a no-show, …)."""
        return self._hit(self.rates.no_show, patient, "no_show", course, session, attempt)

    def reschedule_days(self, patient: int, course: int, session: int) -> int | None:
        """Days to move this session later (2–10), or None when the patient keeps it."""
        rng = self._rng(patient, "reschedule", course, session)
        if not (self.rates.reschedule > 0 and rng.random() < self.rates.reschedule):
            return None
        return rng.randint(2, 10)

    def prolonged_reaction(self, patient: int, course: int, session: int) -> bool:
        """Whether this session's check-in reports a prolonged reaction."""
        return self._hit(self.rates.prolonged_reaction, patient, "prolonged", course, session)

    def adverse_event(self, patient: int, course: int, session: int) -> str | None:
        """The severity of an adverse event after this session (``mild``/``moderate``), or
        None."""
        rng = self._rng(patient, "adverse", course, session)
        if not (self.rates.adverse_event > 0 and rng.random() < self.rates.adverse_event):
            return None
        return "mild" if rng.random() < 0.7 else "moderate"

    def withdraws_after(self, patient: int, sessions: int) -> int | None:
        """After how many completed sessions the patient withdraws (0: before the first), or
        None when they stay."""
        rng = self._rng(patient, "withdrawal")
        if not (self.rates.withdrawal > 0 and rng.random() < self.rates.withdrawal):
            return None
        return rng.randint(0, max(0, sessions - 1))
