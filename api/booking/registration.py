"""Registering a clinic's booking system: one rule set for the API (``PUT /api/booking/{clinic_id}
/system``) and the CLI (``journey booking register``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from activities import repository, webhooks
from api.booking import store
from api.booking.generic import ADAPTERS
from api.service import InvalidRequest, JourneyService
from workflows.bounds import safe_text

__all__ = [
    "BookingSystemIn",
    "BookingSystemOut",
    "BookingSystemRegistered",
    "describe",
    "register_system",
]

URL_PATTERN = r"^https?://[\x21-\x7e]+$"
SECRET_PATTERN = r"^whsec_[A-Za-z0-9+/=]{24,200}$"
# The booking system's own secret: one, or two during a rotation ("whsec_NEW whsec_OLD").
INBOUND_SECRET_PATTERN = r"^whsec_[A-Za-z0-9+/=]{24,200}( whsec_[A-Za-z0-9+/=]{24,200})?$"
EventType = Annotated[str, Field(pattern=r"^journey\.[a-z_]{1,60}$")]


class BookingSystemIn(BaseModel):
    """Register the clinic's booking system (replaces an earlier registration).

    Its appointment events are signed with ``secret`` (a Standard Webhooks secret, generated
    when omitted) or with the secret of ``integration`` in ``JOURNEY_INTEGRATION_SECRETS``
    (rotation by configuration). Our session windows go to ``webhook_url`` (``base_url`` when
    omitted), signed with the subscription's own secret (``outbound_secret``, generated when
    omitted). ``event_types``: the journey events it hears (default: the adapter's list, the
    windows and what ends or holds them)."""

    model_config = ConfigDict(extra="forbid")

    adapter: Literal["generic"] = "generic"
    base_url: str = Field(min_length=8, max_length=2000, pattern=URL_PATTERN)
    webhook_url: str | None = Field(
        default=None, min_length=8, max_length=2000, pattern=URL_PATTERN
    )
    secret: str | None = Field(
        default=None,
        max_length=420,
        pattern=INBOUND_SECRET_PATTERN,
        description="Its events' secret; two space-separated during a rotation.",
    )
    integration: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$"
    )
    event_types: list[EventType] | None = Field(default=None, max_length=50)
    description: safe_text(200) = ""  # type: ignore[valid-type]
    outbound_secret: str | None = Field(default=None, pattern=SECRET_PATTERN)


class BookingSystemOut(BaseModel):
    """A registration as shown (no secrets)."""

    clinic_id: str
    adapter: str
    base_url: str
    webhook_url: str
    signed_with: Literal["secret", "integration"]
    integration: str | None
    subscriber_id: int | None
    event_types: list[str]
    description: str
    clinic_booking: str
    """The clinic's ``booking`` setting: ``external`` for its journeys to publish windows."""
    created_at: datetime
    updated_at: datetime
    disabled_at: datetime | None


class BookingSystemRegistered(BookingSystemOut):
    """The registration and its secrets, shown this once: ``inbound_secret`` signs the booking
    system's events (``None`` when an integration's secret is used), ``outbound_secret`` our
    window webhooks."""

    inbound_secret: str | None
    outbound_secret: str


async def _clinic_booking(service: JourneyService, clinic_id: str) -> str:
    found = await service.db(repository.get_clinic(service.pool, clinic_id))
    return "unknown" if found is None else str(found.clinic.booking)


async def describe(service: JourneyService, reg: store.Registration) -> dict[str, Any]:
    """The registration as :class:`BookingSystemOut` fields."""
    return {
        "clinic_id": reg.clinic_id,
        "adapter": reg.adapter,
        "base_url": reg.base_url,
        "webhook_url": reg.webhook_url,
        "signed_with": "secret" if reg.inbound_secret is not None else "integration",
        "integration": reg.integration,
        "subscriber_id": reg.subscriber_id,
        "event_types": list(reg.event_types),
        "description": reg.description,
        "clinic_booking": await _clinic_booking(service, reg.clinic_id),
        "created_at": reg.created_at,
        "updated_at": reg.updated_at,
        "disabled_at": reg.disabled_at,
    }


async def register_system(
    service: JourneyService, clinic_id: str, body: BookingSystemIn
) -> BookingSystemRegistered:
    """Register the booking system and subscribe its webhook URL; the secrets are in the
    answer, this once.

    Raises:
        InvalidRequest: both kinds of secret, an integration without a secret, no such clinic.
    """
    if body.secret is not None and body.integration is not None:
        raise InvalidRequest(
            "body.integration", "one_secret", "Give either secret or integration, not both."
        )
    if body.integration is not None and body.integration not in (
        service.settings.journey_integration_secrets
    ):
        raise InvalidRequest(
            "body.integration",
            "unknown_integration",
            f"No integration {body.integration!r} in JOURNEY_INTEGRATION_SECRETS.",
        )
    adapter = ADAPTERS[body.adapter]
    inbound = None if body.integration is not None else body.secret or webhooks.new_secret()
    try:
        reg, outbound = await service.db(
            store.register(
                service.pool,
                clinic_id=clinic_id,
                adapter=adapter.kind,
                base_url=body.base_url,
                webhook_url=body.webhook_url or body.base_url,
                inbound_secret=inbound,
                integration=body.integration,
                description=body.description,
                event_types=body.event_types or adapter.event_types(),
                outbound_secret=body.outbound_secret,
            )
        )
    except asyncpg.ForeignKeyViolationError:
        raise InvalidRequest(
            "path.clinic_id", "unknown_clinic", f"No clinic {clinic_id!r}."
        ) from None
    return BookingSystemRegistered(
        **await describe(service, reg), inbound_secret=inbound, outbound_secret=outbound
    )
