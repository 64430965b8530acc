-- A clinic's own booking system (issue 17 item 2, docs/booking-systems.md): its registration,
-- the booking system's ids mapped to ours, and the log of every appointment event it sent.

-- One booking system per clinic. It signs its appointment events with a Standard Webhooks
-- secret: either stored here (``whsec_<base64>``, like webhook_subscribers.secret; several
-- space-separated during a rotation), or the name of an integration whose secret lives in
-- JOURNEY_INTEGRATION_SECRETS (api/inbound.py), never both. ``subscriber_id`` is the outbound
-- webhook subscription (migration 0002) that carries the session windows to it.
CREATE TABLE booking_systems (
    clinic_id      text PRIMARY KEY REFERENCES clinics (clinic_id),
    adapter        text NOT NULL DEFAULT 'generic' CHECK (adapter IN ('generic')),
    base_url       text NOT NULL CHECK (base_url ~ '^https?://' AND length(base_url) <= 2000),
    webhook_url    text NOT NULL CHECK (webhook_url ~ '^https?://' AND length(webhook_url) <= 2000),
    inbound_secret text CHECK (inbound_secret ~ '^whsec_[A-Za-z0-9+/=]{24,200}( whsec_[A-Za-z0-9+/=]{24,200})*$'),
    integration    text CHECK (integration ~ '^[A-Za-z0-9_.-]{1,64}$'),
    subscriber_id  bigint REFERENCES webhook_subscribers (id),
    description    text NOT NULL DEFAULT '' CHECK (length(description) <= 200),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    disabled_at    timestamptz,
    CONSTRAINT booking_systems_one_secret CHECK ((inbound_secret IS NULL) <> (integration IS NULL))
);

-- The booking system's patient ids ↔ ours, per clinic (one each way).
CREATE TABLE booking_patients (
    clinic_id           text NOT NULL REFERENCES clinics (clinic_id),
    external_patient_id text NOT NULL CHECK (length(external_patient_id) BETWEEN 1 AND 200),
    patient_id          text NOT NULL REFERENCES patients (patient_id),
    mapped_by           text NOT NULL CHECK (mapped_by IN ('staff', 'event')),
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (clinic_id, external_patient_id),
    CONSTRAINT booking_patients_one_each UNIQUE (clinic_id, patient_id)
);

-- The booking system's appointment ids ↔ one session of one course of one journey, recorded
-- by the first event that named the appointment with its session; ``status`` and
-- ``starts_at`` follow its later events, ``outcome`` is what the journey answered last.
CREATE TABLE booking_appointments (
    clinic_id               text NOT NULL REFERENCES clinics (clinic_id),
    external_appointment_id text NOT NULL CHECK (length(external_appointment_id) BETWEEN 1 AND 200),
    patient_id              text NOT NULL REFERENCES patients (patient_id),
    workflow_id             text NOT NULL,
    course_number           int NOT NULL CHECK (course_number BETWEEN 1 AND 100),
    session_number          int NOT NULL CHECK (session_number BETWEEN 1 AND 100),
    status                  text NOT NULL
        CHECK (status IN ('created', 'rescheduled', 'cancelled', 'no_show', 'completed')),
    starts_at               timestamptz,
    outcome                 text NOT NULL CHECK (outcome IN ('applied', 'duplicate', 'anomaly')),
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (clinic_id, external_appointment_id)
);
CREATE INDEX booking_appointments_session_idx
    ON booking_appointments (workflow_id, course_number, session_number);

-- Every signed appointment event, append-only (the audit trail), keyed on the Standard Webhooks
-- ``webhook-id``. An id answered ``applied`` once is answered ``duplicate`` afterwards without
-- reaching the journey again (the partial unique index); an ``anomaly`` or ``refused`` one may be
-- sent again (the journey keeps a fact's key free until it applies it). Unsigned requests are
-- not logged here (nobody to attribute them to); they are counted in the API's metrics.
CREATE TABLE booking_events (
    id                      bigserial PRIMARY KEY,
    clinic_id               text NOT NULL,
    webhook_id              text NOT NULL CHECK (length(webhook_id) BETWEEN 1 AND 200),
    event_type              text NOT NULL CHECK (length(event_type) BETWEEN 1 AND 64),
    external_patient_id     text CHECK (length(external_patient_id) <= 200),
    external_appointment_id text CHECK (length(external_appointment_id) <= 200),
    patient_id              text,
    course_number           int,
    session_number          int,
    starts_at               timestamptz,
    status                  text NOT NULL
        CHECK (status IN ('applied', 'duplicate', 'anomaly', 'refused')),
    http_status             int NOT NULL,
    reasons                 jsonb NOT NULL DEFAULT '[]',
    answer                  jsonb NOT NULL DEFAULT '{}',
    request_hash            text NOT NULL,
    received_at             timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX booking_events_applied_once
    ON booking_events (clinic_id, webhook_id) WHERE status = 'applied';
CREATE INDEX booking_events_webhook_idx ON booking_events (clinic_id, webhook_id, id);
CREATE INDEX booking_events_received_idx ON booking_events (clinic_id, received_at DESC);
