"""The journey clock: real time, or a simulation clock running ``time_scale`` times faster.

Every wait of the journey goes through :class:`JourneyClock`, so a training sandbox or the load
benchmark can run a six-month journey in minutes on the real dev server while every date in the
journey is a simulated clinic date. With ``time_scale == 1`` the journey clock is
``workflow.now()`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class JourneyClock:
    """Maps real time to journey time: ``anchor_sim + (real - anchor_real) * scale``.

    The anchors are fixed when the journey starts and carried through continue-as-new, so the
    mapping never jumps.
    """

    scale: float
    anchor_real: datetime
    anchor_sim: datetime

    def now(self, real_now: datetime) -> datetime:
        """The journey time at the real instant ``real_now``."""
        if self.scale == 1:
            return real_now
        return self.anchor_sim + (real_now - self.anchor_real) * self.scale

    def real_delay(self, sim_deadline: datetime, real_now: datetime) -> timedelta:
        """How long to wait in real time until the journey clock reaches ``sim_deadline``.

        Never negative: a deadline already passed gives zero.
        """
        remaining = sim_deadline - self.now(real_now)
        if remaining <= timedelta(0):
            return timedelta(0)
        return remaining / self.scale
