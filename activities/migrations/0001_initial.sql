-- The journey database: clinics, patients (the only PHI), the journeys read model, the
-- append-only timeline, appointments, the notification outbox, step bookkeeping, staff users
-- and API idempotency keys. See docs/database.md.

CREATE TABLE clinics (
    clinic_id        text PRIMARY KEY,
    name             text NOT NULL,
    timezone         text NOT NULL,
    hemisphere       text NOT NULL CHECK (hemisphere IN ('north', 'south')),
    summer_months    int[] NOT NULL,
    open_weekdays    int[] NOT NULL,
    protocol_version text NOT NULL,
    -- The whole ClinicProtocol (model_dump(mode="json")); the columns above are copies for SQL.
    protocol         jsonb NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- The only table with personal data. Everything else refers to patients by patient_id.
CREATE TABLE patients (
    patient_id        text PRIMARY KEY CHECK (patient_id ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    full_name         text NOT NULL CHECK (length(full_name) BETWEEN 1 AND 200),
    email             text,
    phone             text,
    preferred_channel text NOT NULL DEFAULT 'email' CHECK (preferred_channel IN ('email', 'sms')),
    clinic_id         text NOT NULL REFERENCES clinics (clinic_id),
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT patients_contact_for_channel CHECK (
        (preferred_channel = 'email' AND email IS NOT NULL)
        OR (preferred_channel = 'sms' AND phone IS NOT NULL)
    )
);
CREATE INDEX patients_clinic_idx ON patients (clinic_id);
CREATE INDEX patients_name_idx ON patients (lower(full_name) text_pattern_ops);

-- The read model: one row per journey, replaced only by a higher version (the step number).
-- No foreign keys: the projection must never block a journey's progress.
CREATE TABLE journeys (
    workflow_id      text PRIMARY KEY,
    patient_id       text NOT NULL UNIQUE,
    clinic_id        text NOT NULL,
    version          bigint NOT NULL,
    stage            text NOT NULL,
    course_number    int NOT NULL,
    sessions_planned int NOT NULL,
    sessions_done    int NOT NULL,
    next_action      text,
    next_action_at   timestamptz,
    spf_until        date,
    review_on        date,
    flags            text[] NOT NULL DEFAULT '{}',
    protocol_version text NOT NULL,
    status           jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX journeys_stage_idx ON journeys (stage);
CREATE INDEX journeys_clinic_idx ON journeys (clinic_id, stage);
CREATE INDEX journeys_next_action_idx ON journeys (next_action_at);
CREATE INDEX journeys_flags_idx ON journeys USING gin (flags);

-- The timeline and audit trail: append-only, one row per (workflow, event key).
CREATE TABLE journey_events (
    id          bigserial PRIMARY KEY,
    workflow_id text NOT NULL,
    event_key   text NOT NULL,
    step        bigint NOT NULL,
    kind        text NOT NULL,
    actor       text NOT NULL,
    occurred_at timestamptz NOT NULL,
    summary     text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT journey_events_key UNIQUE (workflow_id, event_key)
);
CREATE INDEX journey_events_timeline_idx ON journey_events (workflow_id, occurred_at, id);

CREATE FUNCTION journey_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'journey_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER journey_events_no_update_delete
    BEFORE UPDATE OR DELETE ON journey_events
    FOR EACH ROW EXECUTE FUNCTION journey_events_append_only();
CREATE TRIGGER journey_events_no_truncate
    BEFORE TRUNCATE ON journey_events
    FOR EACH STATEMENT EXECUTE FUNCTION journey_events_append_only();

-- The latest state of each appointment; replaced only by a later step (version).
CREATE TABLE appointments (
    workflow_id      text NOT NULL,
    course_number    int NOT NULL,
    session_number   int NOT NULL,
    starts_at        timestamptz NOT NULL,
    arrive_by        timestamptz,
    duration_minutes int NOT NULL,
    status           text NOT NULL
        CHECK (status IN ('planned', 'booked', 'done', 'no_show', 'deferred', 'cancelled')),
    version          bigint NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, course_number, session_number)
);
CREATE INDEX appointments_starts_idx ON appointments (starts_at);

-- Messages to send, written in the same transaction as the step that decided them.
CREATE TABLE notification_outbox (
    id               bigserial PRIMARY KEY,
    workflow_id      text NOT NULL,
    notification_key text NOT NULL,
    patient_id       text NOT NULL,
    kind             text NOT NULL,
    audience         text NOT NULL CHECK (audience IN ('patient', 'staff')),
    channel          text NOT NULL CHECK (channel IN ('email', 'sms', 'staff')),
    params           jsonb NOT NULL DEFAULT '{}',
    status           text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    attempts         int NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    leased_until     timestamptz,
    lease_token      uuid,
    provider_key     text NOT NULL,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    CONSTRAINT notification_outbox_key UNIQUE (workflow_id, notification_key)
);
-- What the dispatcher scans: only rows still to send.
CREATE INDEX notification_outbox_due_idx ON notification_outbox (next_attempt_at)
    WHERE status IN ('pending', 'sending');
CREATE INDEX notification_outbox_workflow_idx ON notification_outbox (workflow_id);

-- One row per applied step: the idempotency key of record_step.
CREATE TABLE journey_steps (
    workflow_id text NOT NULL,
    step        bigint NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, step)
);

-- Staff of the back office; the API stores only the sha256 of each token.
CREATE TABLE staff_users (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    role        text NOT NULL CHECK (role IN ('staff', 'clinician', 'admin')),
    token_hash  text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz
);

-- Responses of accepted API requests, by (scope, Idempotency-Key), replayed on a repeat.
CREATE TABLE idempotency_keys (
    scope        text NOT NULL,
    key          text NOT NULL,
    request_hash text NOT NULL,
    response     jsonb,
    status_code  int NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
