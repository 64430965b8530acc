"""Consent to be contacted and quiet hours (issue 18 item 3, docs/messaging.md).

The dispatcher (activities/dispatcher.py) asks two questions of every patient message before it
sends it:

* **Opted out?** A patient who answered STOP (or a localised word) on a channel gets no
  non-essential message on it. An *essential* kind (the clinic's list, default
  :data:`DEFAULT_ESSENTIAL_KINDS`: the clinical safety ones) goes to the remaining channel when
  the patient has a contact there and has not opted out of it too, else it becomes a staff alert
  (``opted_out_essential``). The answers to STOP and START themselves always go out (the one
  confirmation the patient expects).
* **Quiet hours?** A message due inside the clinic's quiet hours (default 20:00–08:00 in the
  clinic's zone) waits: its ``next_attempt_at`` moves to the window's end. Staff alerts are
  never held, and neither are the direct answers to a patient's own message
  (:data:`ANSWER_KINDS`), nor anything of a sandbox clinic (its journeys run on a simulation
  clock: the demo and the training sandbox).

Pure functions here; the SQL is in the dispatcher and in :mod:`activities.replies`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from activities.delivery import FALLBACK_MARK, UNDELIVERABLE_MARK

DEFAULT_QUIET_START = time(20, 0)
DEFAULT_QUIET_END = time(8, 0)

DEFAULT_ESSENTIAL_KINDS: frozenset[str] = frozenset(
    {
        "aftercare",  # what to do (and not do) after the laser, when to call the clinic
        "journey_paused",  # a prolonged reaction or an adverse event put the journey on hold
        "journey_withdrawn",  # the plan is closed: the patient must not come in
        "session_rebooked",  # the session moved: the patient must not come on the old date
    }
)
"""Patient message kinds sent despite an opt-out (to the remaining channel). Staff alerts are
not patient messages and are never subject to opt-out or quiet hours."""

CONFIRMATION_KINDS: frozenset[str] = frozenset({"contact_opt_out", "contact_opt_in"})
"""The answers to STOP and START: sent on the channel the word came from, whatever its state."""

ANSWER_KINDS: frozenset[str] = CONFIRMATION_KINDS | {"reply_reschedule_offer"}
"""Direct answers to a message the patient just sent: not held by quiet hours."""


def essential_kinds(configured: Sequence[str] | None) -> frozenset[str]:
    """The clinic's essential kinds (``clinics.essential_kinds``; NULL: the defaults)."""
    return DEFAULT_ESSENTIAL_KINDS if configured is None else frozenset(configured)


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def quiet_until(
    now: datetime, timezone: str | None, start: time | None, end: time | None
) -> datetime | None:
    """The end of the quiet window ``now`` falls in (aware), or None outside quiet hours.

    ``start``/``end`` are local times in ``timezone``; a window whose start is after its end
    spans midnight (20:00–08:00); equal times mean no quiet hours. The end is computed in local
    time, so a daylight-saving change inside the night still ends it at 08:00 local.
    """
    start = start or DEFAULT_QUIET_START
    end = end or DEFAULT_QUIET_END
    if start == end:
        return None
    zone = _zone(timezone)
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    today = local.date()
    if start < end:
        inside = start <= clock < end
        end_day = today
    else:
        inside = clock >= start or clock < end
        end_day = today + timedelta(days=1) if clock >= start else today
    if not inside:
        return None
    return datetime.combine(end_day, end, tzinfo=zone)


@dataclass(frozen=True)
class Rerouted:
    """Where an opted-out essential message goes instead."""

    notification_key: str
    kind: str
    audience: str
    channel: str
    params: dict[str, str]


def route_opted_out(
    *,
    notification_key: str,
    kind: str,
    channel: str,
    params: dict[str, str],
    opted_out: Sequence[str],
    essential: frozenset[str],
    email: str | None,
    phone: str | None,
) -> Rerouted | None:
    """What becomes of a patient message whose channel the patient opted out of.

    None: it is not sent at all (not essential). Otherwise the row to write instead: the same
    message on the other channel (``<key>~via-<channel>``) when the patient has a contact there
    and did not opt out of it, else a staff alert ``<key>~undeliverable`` (``opted_out_essential``).
    """
    if kind not in essential:
        return None
    other = "sms" if channel == "email" else "email"
    contact = phone if other == "sms" else email
    if FALLBACK_MARK not in notification_key and contact and other not in opted_out:
        return Rerouted(f"{notification_key}{FALLBACK_MARK}{other}", kind, "patient", other, params)
    original = notification_key.split(FALLBACK_MARK, 1)[0]
    return Rerouted(
        f"{original}{UNDELIVERABLE_MARK}",
        "staff_alert",
        "staff",
        "staff",
        {
            "alert": "opted_out_essential",
            "message_kind": kind,
            "session": params.get("session", "?"),
        },
    )
