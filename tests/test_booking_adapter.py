"""The generic booking-system adapter (api/booking/generic.py): every appointment event type
read and bounded, bad bodies refused with every problem, our session window as the booking
system reads it, and the journey's idempotency key kept within its bound."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from api.booking.adapter import BookingSystemAdapter, EventInvalid
from api.booking.generic import ADAPTERS, GenericAdapter, adapter_for
from api.booking.inbox import fact_key

ADAPTER = GenericAdapter()
START = "2027-03-08T10:30:00+01:00"


def event(kind: str, **data: Any) -> bytes:
    body = {"external_appointment_id": "A-1", **data}
    return json.dumps({"type": f"appointment.{kind}", "data": body}).encode()


def test_every_event_type_is_read() -> None:
    created = ADAPTER.parse_event(
        {},
        event(
            "created",
            external_patient_id="P-9",
            patient_id="p_abc",
            course=1,
            session=2,
            starts_at=START,
            unknown_field="ignored",
        ),
    )
    assert (created.kind, created.event_type) == ("created", "appointment.created")
    assert (created.external_patient_id, created.patient_id) == ("P-9", "p_abc")
    assert (created.course_number, created.session_number) == (1, 2)
    assert created.starts_at == datetime(2027, 3, 8, 9, 30, tzinfo=UTC)
    assert ADAPTER.parse_event({}, event("rescheduled", starts_at=START)).kind == "rescheduled"
    assert ADAPTER.parse_event({}, event("cancelled")).kind == "cancelled"
    assert ADAPTER.parse_event({}, event("no_show")).kind == "no_show"
    done = ADAPTER.parse_event({}, event("completed", completed_at=START))
    assert done.kind == "completed" and done.completed_at is not None
    # The hash covers the event, not the envelope's timestamp or unknown fields.
    assert created.canonical()["session_number"] == 2


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        (b"not json", "json_invalid"),
        (b"[]", "model_type"),
        (event("moved", starts_at=START), "literal_error"),
        (event("created"), "value_error"),  # a booking needs its start
        (event("completed"), "value_error"),  # a completion needs its time
        (event("created", starts_at="2027-03-08T10:30:00"), "timezone_aware"),
        (event("created", starts_at="9999-12-31T23:59:59-14:00"), "value_error"),
        (event("created", starts_at=START, session=0), "greater_than_equal"),
        (event("created", starts_at=START, session=101), "less_than_equal"),
        (event("created", starts_at=START, patient_id="../etc"), "string_pattern_mismatch"),
        (
            json.dumps({"type": "appointment.cancelled", "data": {"external_appointment_id": ""}}),
            "string_too_short",
        ),
        (
            json.dumps(
                {"type": "appointment.cancelled", "data": {"external_appointment_id": "a\x00b"}}
            ),
            "value_error",
        ),
        (
            json.dumps(
                {"type": "appointment.cancelled", "data": {"external_appointment_id": "x" * 201}}
            ),
            "string_too_long",
        ),
        (b"{" * 70_000, "too_large"),
    ],
)
def test_bad_bodies_are_refused_with_the_rule(body: bytes | str, rule: str) -> None:
    raw = body.encode() if isinstance(body, str) else body
    with pytest.raises(EventInvalid) as err:
        ADAPTER.parse_event({}, raw)
    assert rule in {e["rule"] for e in err.value.errors}, err.value.errors
    assert all(e["field"].startswith("body") for e in err.value.errors)


def test_a_refused_body_keeps_its_claimed_type_for_the_log() -> None:
    with pytest.raises(EventInvalid) as err:
        ADAPTER.parse_event({}, event("created"))
    assert err.value.event_type == "appointment.created"
    with pytest.raises(EventInvalid) as err:
        ADAPTER.parse_event({}, b'{"type": "\\u0000"}')
    assert err.value.event_type == "invalid"


def window_webhook(**details: Any) -> dict[str, Any]:
    return {
        "type": "journey.session_window",
        "timestamp": "2027-03-01T08:00:00+00:00",
        "data": {
            "event_id": "evt_41",
            "sequence": 41,
            "journey_id": "journey-p_abc",
            "patient_id": "p_abc",
            "clinic_id": "berlin",
            "kind": "session_window",
            "step": 3,
            "actor": "system",
            "occurred_at": "2027-03-01T08:00:00+00:00",
            "summary": "Session 1 may be booked from Monday 8 March to Friday 12 March.",
            "details": {
                "session": 1,
                "course": 1,
                "allowed_days": ["2027-03-09", "2027-03-08", "2027-03-12"],
                "earliest": "2027-03-08",
                "latest": "2027-03-12",
                "preferred_on": "2027-03-08",
                "duration_minutes": 45,
                **details,
            },
        },
    }


def test_the_window_as_the_booking_system_reads_it() -> None:
    assert ADAPTER.window_payload(window_webhook()) == {
        "window_id": "evt_41",
        "sequence": 41,
        "clinic_id": "berlin",
        "journey_id": "journey-p_abc",
        "patient_id": "p_abc",
        "course": 1,
        "session": 1,
        "allowed_days": ["2027-03-08", "2027-03-09", "2027-03-12"],
        "earliest": "2027-03-08",
        "latest": "2027-03-12",
        "preferred_on": "2027-03-08",
        "duration_minutes": 45,
    }
    with pytest.raises(ValueError, match=r"not a journey\.session_window"):
        ADAPTER.window_payload({**window_webhook(), "type": "journey.session_booked"})
    with pytest.raises(ValueError, match="not a session window"):
        ADAPTER.window_payload(window_webhook(allowed_days=["not a date"]))


def test_the_adapter_registry_and_its_subscription() -> None:
    adapter: BookingSystemAdapter = adapter_for("generic")
    assert adapter is ADAPTERS["generic"] and adapter.kind == "generic"
    assert "journey.session_window" in adapter.event_types()
    assert "journey.withdrawn" in adapter.event_types()
    with pytest.raises(KeyError):
        adapter_for("vendor-x")


def test_the_journeys_key_stays_within_its_bound() -> None:
    assert fact_key("msg_1") == "booking:msg_1"
    long = fact_key("x" * 200)
    assert len(long) <= 200 and long.startswith("booking:sha256:")
    assert fact_key("x" * 200) == long != fact_key("y" * 200)
