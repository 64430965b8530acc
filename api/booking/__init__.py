"""A clinic with its own booking system (issue 17 item 2, docs/booking-systems.md).

The booking system owns the slots. For each session the journey publishes the allowed window
(a ``session_window`` journey event, delivered by the outbound webhooks to the booking system's
subscription); the booking system sends its appointment events back, signed with the Standard
Webhooks scheme, to ``POST /api/booking/{clinic_id}/events``.

* :mod:`api.booking.adapter`: the :class:`~api.booking.adapter.BookingSystemAdapter` protocol
  (read an appointment event, show a session window) and the parsed event;
* :mod:`api.booking.generic`: the one adapter so far, a generic REST/webhook booking system;
* :mod:`api.booking.store`: registrations, the id mappings and the event log in PostgreSQL
  (migration ``0027_booking_partner.sql``);
* :mod:`api.booking.inbox`: one inbound event from signature to the journey's answer.
"""
